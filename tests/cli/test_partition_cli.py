"""Issue 3 acceptance on the simulated node: partition shapes, refused pairs, assert-then-apply."""

from __future__ import annotations

import json

import pytest

from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.cli.main import main
from gpu_sharing.hardware.backend import MUTATING_METHODS
from simulator.node import SimNode

GIB = 1024**3


def _show(capsys, state) -> dict:
    capsys.readouterr()
    assert main(["partition", "show", "--simulate", "--sim-state", str(state), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("mode,count,cus", [("CPX", 8, 38), ("QPX", 4, 76), ("DPX", 2, 152), ("SPX", 1, 304)])
def test_mi300x_partition_shapes(tmp_path, capsys, mode, count, cus):
    SimNode.create(tmp_path, "MI300X", 2)
    assert main(["partition", "set", "--gpu", "0", "--compute", mode, "--simulate", "--sim-state", str(tmp_path)]) == 0
    gpu0 = _show(capsys, tmp_path)["gpus"][0]
    assert gpu0["compute_partition"] == mode
    assert [p["cu_count"] for p in gpu0["partitions"]] == [cus] * count
    assert all(p["vram_total_bytes"] == 192 * GIB // count for p in gpu0["partitions"])


@pytest.mark.parametrize("model,args", [("MI300X", ["--compute", "TPX"]), ("MI300X", ["--compute", "SPX", "--memory", "NPS4"]),
                                        ("MI350X", ["--compute", "CPX", "--memory", "NPS4"])])
def test_invalid_pairs_are_refused_with_the_allowed_list(tmp_path, capsys, model, args):
    SimNode.create(tmp_path, model, 1)
    rc = main(["partition", "set", "--gpu", "0", *args, "--simulate", "--sim-state", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "allowed pairs:" in err and "CPX+NPS1" in err
    assert "Traceback" not in err


def test_mi300a_tpx_has_three_partitions_of_76_cus(tmp_path, capsys):
    SimNode.create(tmp_path, "MI300A", 1)
    assert main(["partition", "set", "--gpu", "0", "--compute", "TPX", "--simulate", "--sim-state", str(tmp_path)]) == 0
    assert [p["cu_count"] for p in _show(capsys, tmp_path)["gpus"][0]["partitions"]] == [76, 76, 76]


class CountingBackend:
    """Wraps a backend and counts mutating calls (the applier must not make any when converged)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.name = inner.name

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name in MUTATING_METHODS:
            def wrapped(*a, **k):
                self.calls.append((name, a))
                return attr(*a, **k)
            return wrapped
        return attr


def test_second_set_is_already_at_desired_with_zero_mutating_calls(tmp_path, capsys, monkeypatch):
    SimNode.create(tmp_path, "MI300X", 2)
    counters: list[CountingBackend] = []

    def counting(args):
        b = CountingBackend(SimulatedBackend(SimNode.open(tmp_path)))
        counters.append(b)
        return b

    monkeypatch.setattr("gpu_sharing.cli.commands.partition.backend_for", counting)
    argv = ["partition", "set", "--gpu", "0", "--compute", "CPX", "--simulate", "--sim-state", str(tmp_path)]
    assert main(argv) == 0
    assert [name for name, _ in counters[0].calls] == ["set_compute_mode"]
    capsys.readouterr()
    assert main(argv) == 0
    assert "already at desired CPX+NPS1" in capsys.readouterr().out
    assert counters[1].calls == []


def test_memory_mode_is_pending_until_reload_and_hive_wide(tmp_path, capsys):
    node = SimNode.create(tmp_path, "MI300X", 2, reload_time_s=0)
    assert main(["partition", "set", "--gpu", "0", "--memory", "NPS4", "--compute", "CPX", "--simulate",
                 "--sim-state", str(tmp_path)]) == 0
    gpus = _show(capsys, tmp_path)["gpus"]
    assert [g["pending_memory_partition"] for g in gpus] == ["NPS4", "NPS4"]
    assert main(["partition", "set", "--gpu", "all", "--compute", "CPX", "--memory", "NPS4", "--reload-driver",
                 "--simulate", "--sim-state", str(tmp_path)]) == 0
    gpus = _show(capsys, tmp_path)["gpus"]
    assert [(g["compute_partition"], g["memory_partition"]) for g in gpus] == [("CPX", "NPS4")] * 2
    assert node.state()["generation"] >= 2


def test_busy_gpu_names_gpu_operation_and_process(tmp_path, capsys):
    node = SimNode.create(tmp_path, "MI300X", 1)
    node.claim_memory(0, 4411, "vllm", GIB, synthetic=True)
    rc = main(["partition", "set", "--gpu", "0", "--compute", "CPX", "--simulate", "--sim-state", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "setting compute partition CPX on GPU 0: BUSY: 1 process on partition 0.0 (pid 4411 vllm)" in err


def test_export_round_trips_through_validate(tmp_path, capsys):
    SimNode.create(tmp_path, "MI300X", 2, compute_mode="QPX", memory_mode="NPS4")
    capsys.readouterr()
    assert main(["export", "--simulate", "--sim-state", str(tmp_path)]) == 0
    out = tmp_path / "exported.yaml"
    out.write_text(capsys.readouterr().out)
    assert main(["validate", "-c", str(out)]) == 0
    assert "QPX" in out.read_text() and "NPS4" in out.read_text()
