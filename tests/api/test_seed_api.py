"""The seed-compatible API works as written and returns the lower layers' real objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gpu_sharing
from gpu_sharing import (ComputeLimits, ComputePartitionMode, MemoryPartition, ModelScheduler, ModelSizingConfig,
                         ROCmPartitioner, ResourceIsolator)
from gpu_sharing.config.sizing_catalog import SizingCatalog
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.modes import ComputePartitionMode as HwMode
from gpu_sharing.isolation import ComputeLimits as IsoLimits, ResourceIsolator as IsoIsolator

ROOT = Path(__file__).resolve().parents[2]


def test_initialize_chooses_a_mode_that_fits_and_says_when_sizes_are_not_exact(tmp_path):
    p = ROCmPartitioner(gpu_id=0, simulate=True, sim_state_dir=tmp_path)
    parts = p.initialize("MI300X", [40, 40, 40, 40])
    assert [x.cu_count for x in parts] == [76] * 4 and all(isinstance(x, MemoryPartition) for x in parts)
    assert parts[0].compute_mode == ComputePartitionMode.QPX
    assert any("cannot be met exactly" in n for n in p.notes)
    assert ROCmPartitioner(gpu_id=0, simulate=True, sim_state_dir=tmp_path).initialize("MI300X", [20] * 8)[0].size_gb < 26
    with pytest.raises(UserError, match="no partition mode"):
        p.initialize("MI300X", [100, 100, 100])


def test_schedule_model_uses_the_catalog_and_reports_failures(tmp_path):
    p = ROCmPartitioner(gpu_id=1, simulate=True, sim_state_dir=tmp_path)
    p.initialize("MI300X", [150])
    sizing = ModelSizingConfig(ROOT / "config" / "model_sizing_config.yaml")
    assert isinstance(sizing.catalog, SizingCatalog)
    sched = ModelScheduler(p, sizing)
    ok, pid, err = sched.schedule_model("meta-llama/Llama-3.1-70B-Instruct")
    assert ok and pid == "1.0" and err is None
    ok, pid, err = sched.schedule_model("meta-llama/Llama-3.1-70B-Instruct")
    assert not ok and pid is None and "needs 150.0 GB" in err
    assert sched.schedule_model("unknown/model") == (False, None, "no size for 'unknown/model': add it to the sizing catalog or pass memory_gb")


def test_facade_exports_are_the_real_classes():
    assert ComputeLimits is IsoLimits and ResourceIsolator is IsoIsolator and ComputePartitionMode is HwMode
    with pytest.raises(AttributeError):
        gpu_sharing.NoSuchThing  # noqa: B018


@pytest.mark.integration
def test_example_usage_runs_end_to_end():
    r = subprocess.run([sys.executable, str(ROOT / "example_usage.py")], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("READY") == 3 and "simulated VRAM in use: 0 bytes" in r.stdout
