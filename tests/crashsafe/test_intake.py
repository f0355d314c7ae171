"""Config intake: bounded reads (/dev/zero), a YAML alias bomb under the alias cap, config.json numbers checked at
`validate` (exit 2 naming the key), and a model that fails to size is unplaceable while the others reconcile."""

from __future__ import annotations

import copy
import json

import pytest

from gpu_sharing.cli import main as cli
from gpu_sharing.config.loader import MAX_YAML_NODES, parse_config_text
from gpu_sharing.daemon.status import build_snapshot
from gpu_sharing.errors import ConfigError
from gpu_sharing.hardware.modes import ComputePartitionMode as C

from reconcile_fakes import RecordingBackend
from test_reconciler import QWEN, new_reconciler


def write(tmp_path, heads) -> str:
    bad = {**QWEN, "num_attention_heads": heads}
    p = tmp_path / "c.yaml"
    p.write_text("version: v1\nmodels:\n"
                 f"  - {{name: good, source: org/g, config_json: {json.dumps(QWEN)}, max_model_len: 1024}}\n"
                 f"  - {{name: bad, source: org/b, config_json: {json.dumps(bad).replace('NaN', '.nan')}, "
                 "max_model_len: 1024}\n")
    return str(p)


@pytest.mark.parametrize("heads", [0, -4, float("nan"), 1e308, 2.5, "14"])
def test_validate_names_the_bad_config_json_key(tmp_path, capsys, heads):
    code = cli.main(["validate", "-c", write(tmp_path, heads)])
    err = capsys.readouterr().err
    assert code == 2 and "models[1].config_json.num_attention_heads" in err and "Traceback" not in err


def test_config_json_file_with_nan_is_refused_without_echoing_it(tmp_path, capsys):
    cj = tmp_path / "config.json"
    cj.write_text(json.dumps({**QWEN, "num_attention_heads": float("nan"), "secret_line": "root:x:0:0"}))
    code = cli.main(["size", "--config-json", str(cj)])
    err = capsys.readouterr().err
    assert code == 2 and "num_attention_heads" in err and "root:x" not in err


@pytest.mark.parametrize("argv", [["validate", "-c", "/dev/zero"], ["size", "--config-json", "/dev/zero"]])
def test_dev_zero_is_refused_by_size_not_read_forever(capsys, argv):
    assert cli.main(argv) == 2
    assert "larger than" in capsys.readouterr().err


def test_alias_bomb_under_the_alias_cap_is_refused():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 8 levels x 9 aliases = 72 aliases (< 100), 9**9 nodes expanded
        levels.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    text = "version: v1\n" + "\n".join(f"x-{line}" for line in levels) + "\nmodels: []\n"
    with pytest.raises(ConfigError) as e:
        parse_config_text(text, "bomb.yaml")
    assert f"more than {MAX_YAML_NODES} nodes" in str(e.value)


def test_a_model_that_fails_to_size_is_unplaceable_and_the_others_still_run(tmp_path):
    from gpu_sharing.config.schema import Config
    from test_reconciler import config
    data = config().model_dump()
    bad = copy.deepcopy(data["models"][1])
    bad.update(name="bad", source="org/bad", config_json={**QWEN, "num_attention_heads": 0})
    data["models"].append(bad)
    rec = new_reconciler(tmp_path, RecordingBackend({0: C.CPX}), cfg=Config.model_validate(data))
    try:
        report = rec.reconcile_once()
        assert sorted(report.apply.started) == ["a-0", "a-1", "b-0"]  # the others reconcile
        reasons = {u.model: u.reason for u in report.unplaceable}
        assert "num_attention_heads" in reasons["bad"]
        snap = build_snapshot(rec, None, generation=1, last_reconcile_at=None, events=[])
        assert any(u["model"] == "bad" and "num_attention_heads" in u["reason"] for u in snap.unplaceable)
    finally:
        rec.stop_all(timeout_s=5)
