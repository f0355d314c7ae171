"""Run ``gpu-sharing doctor --simulate --json`` in-process against a fresh 2-GPU simulated node."""

from __future__ import annotations

import json

import pytest

from gpu_sharing.cli.main import main
from simulator.node import SimNode


@pytest.fixture
def node(tmp_path):
    return SimNode.create(tmp_path / "sim", "MI300X", 2)


@pytest.fixture
def doctor(tmp_path, node, capsys):
    """doctor(*flags, config=YAML) -> (exit code, {check name: check dict}, whole JSON)."""

    def run(*flags: str, config: str = "version: v1\n"):
        cfg = tmp_path / "gpu-sharing.yaml"
        cfg.write_text(config)
        capsys.readouterr()
        rc = main(["doctor", "--simulate", "--sim-state", str(node.state_dir), "-c", str(cfg), "--json", *flags])
        out = json.loads(capsys.readouterr().out)
        return rc, {c["name"]: c for c in out["checks"]}, out

    return run
