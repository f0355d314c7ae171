"""Broken configs exit 2 naming the file and the key path, with no traceback (subprocess, the real entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpu_sharing.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests" / "data" / "bad_configs").glob("*.yaml"))
EXPECTED_KEY = {
    "01-unknown-key": "models[0].max_model_lenn", "02-wrong-type": "models[0].max_model_len",
    "03-invalid-pair": "gpus[0]", "04-duplicate-name": "models[1]", "05-negative-replicas": "models[0].replicas",
    "06-missing-version": "version", "07-wrong-version": "version", "08-flag-injection-name": "models[0].name",
    "09-tpx-on-mi300x": "gpus[0].compute_partition", "10-bad-tp": "models[0].tensor_parallel_size",
    "11-duplicate-yaml-key": "duplicate key 'version'", "12-invalid-yaml": "invalid YAML",
    "13-bad-port-range": "vllm.port_range", "14-bad-byte-size": "models[0].limits.memory_bytes",
}


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_broken_config_exits_2_with_key_path(path, capsys):
    assert main(["validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert EXPECTED_KEY[path.stem] in err
    assert "Traceback" not in err


def test_example_configs_are_valid():
    assert main(["validate", "-c", str(ROOT / "config" / "gpu-sharing.yaml")]) == 0


def test_real_executable_exit_codes():
    bad = subprocess.run([sys.executable, "-m", "gpu_sharing.cli.main", "validate", "-c", str(BAD[0])],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "max_model_lenn" in bad.stderr
    good = subprocess.run([sys.executable, "-m", "gpu_sharing.cli.main", "validate", "-c",
                           str(ROOT / "config" / "gpu-sharing.yaml")], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
