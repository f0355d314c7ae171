"""`gpu-sharing stage` on local model directories: READY exit 0, truncated exit 1, unknown name exit 2."""

from __future__ import annotations

import json

import yaml

from gpu_sharing.cli.main import main

from test_staging import make_model


def _cfg(tmp_path, path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"version": "v1", "models": [{"name": "m", "source": str(path)}]}))
    return str(cfg)


def test_stage_local_ready_then_truncated(tmp_path, capsys):
    path = make_model(tmp_path / "m")
    cfg = _cfg(tmp_path, path)
    assert main(["stage", "-c", cfg, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "READY" and row["bytes_total"] > 8000
    shard = path / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])
    assert main(["stage", "m", "-c", cfg]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_stage_unknown_model_is_exit_2(tmp_path, capsys):
    assert main(["stage", "nope", "-c", _cfg(tmp_path, tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
