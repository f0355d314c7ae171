"""ONE contract suite for every backend: simulated, amdsmi (over the fake module), amdsmi over the REAL amdsmi
package from PyPI with a stand-in for libamd_smi.so (simulator/libamd_smi_standin.py, so the shapes are the
real wheel's), amd-smi CLI (over the fake CLI)."""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

import pytest

import simulator.fake_amdsmi as fake_amdsmi
from gpu_sharing.backends.amd_smi_cli_backend import AmdSmiCliBackend
from gpu_sharing.backends.amdsmi_backend import AmdSmiBackend
from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from simulator.libamd_smi_standin import load_real_amdsmi
from simulator.node import SimNode

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


def make(kind: str, state: Path):
    if kind == "simulated":
        return SimulatedBackend(SimNode.open(state), sleep=lambda s: None)
    if kind == "amdsmi":
        fake_amdsmi.configure(state)
        return AmdSmiBackend(fake_amdsmi)
    if kind == "amdsmi-real":
        return AmdSmiBackend(load_real_amdsmi(state))
    env = {**os.environ, "GPU_SHARING_SIM_STATE": str(state), "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "simulator.amd_smi_cli"]
    return AmdSmiCliBackend(cli, env=env, reload_argv=[[*cli, "reset", "-r"]])


@pytest.fixture(params=["simulated", "amdsmi", "amdsmi-real", "amd-smi-cli"])
def backend(request, tmp_path):
    node = SimNode.create(tmp_path, "MI300X", 2, reload_time_s=0)
    b = make(request.param, tmp_path)
    b.node = node  # test handle on the shared state
    return b


def test_inventory_shape(backend):
    inv = backend.inventory()
    assert [g.index for g in inv.gpus] == [0, 1]
    g = inv.gpus[0]
    assert (g.model, g.compute_mode, g.memory_mode) == ("MI300X", C.SPX, M.NPS1)
    assert [(p.hip_index, p.cu_count, p.vram_total_bytes) for p in g.partitions] == [(0, 304, 192 * GIB)]
    assert g.partitions[0].render_node == "renderD128"


def test_compute_mode_change_gives_new_layout_and_is_idempotent(backend):
    backend.set_compute_mode(1, C.CPX)
    inv = backend.inventory()
    parts = inv.gpu(1).partitions
    assert inv.gpu(1).compute_mode == C.CPX and len(parts) == 8
    assert [p.hip_index for p in parts] == list(range(1, 9)) and {p.cu_count for p in parts} == {38}
    assert {p.vram_total_bytes for p in parts} == {24 * GIB}
    generation = backend.node.state()["generation"]
    backend.set_compute_mode(1, C.CPX)  # already there: no change
    assert backend.node.state()["generation"] == generation


def test_busy_names_gpu_operation_and_process(backend):
    backend.node.claim_memory(0, 4411, "vllm", GIB, synthetic=True)
    with pytest.raises(BackendError) as e:
        backend.set_compute_mode(0, C.CPX)
    assert e.value.code == BackendErrorCode.BUSY and e.value.gpu == 0
    assert "setting compute partition CPX on GPU 0: BUSY: 1 process on partition 0.0 (pid 4411 vllm)" in str(e.value)
    assert backend.inventory().gpu(0).partitions[0].processes[0].pid == 4411


def test_invalid_pair_is_setting_unavailable(backend):
    with pytest.raises(BackendError) as e:
        backend.set_compute_mode(0, C.TPX)
    assert e.value.code == BackendErrorCode.SETTING_UNAVAILABLE


def test_no_perm_for_non_root(backend):
    backend.node.set_root(False)
    with pytest.raises(BackendError) as e:
        backend.set_compute_mode(0, C.CPX)
    assert e.value.code == BackendErrorCode.NO_PERM


def test_memory_mode_applies_hive_wide_only_after_reload(backend):
    backend.set_memory_mode(0, M.NPS4)
    assert {g.memory_mode for g in backend.inventory().gpus} == {M.NPS1}
    backend.reload_driver()
    inv = backend.inventory()
    assert {g.memory_mode for g in inv.gpus} == {M.NPS4}
    assert all(spec_ok(g) for g in inv.gpus)


def spec_ok(g) -> bool:
    from gpu_sharing.hardware.catalog import get_spec

    return get_spec(g.model).is_valid(g.compute_mode, g.memory_mode)


def test_memory_change_refused_while_any_gpu_process_exists(backend):
    backend.node.claim_memory(0, 4412, "vllm", GIB, synthetic=True)
    with pytest.raises(BackendError) as e:
        backend.set_memory_mode(1, M.NPS4)
    assert e.value.code == BackendErrorCode.BUSY


def _used_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and ((isinstance(n.value, ast.Attribute) and n.value.attr == "smi")
                 or (isinstance(n.value, ast.Name) and n.value.id == "smi"))}


def test_every_amdsmi_name_the_backend_uses_exists_in_the_real_package():
    spec = importlib.util.find_spec("amdsmi")
    if spec is None or not spec.origin:
        pytest.skip("the amdsmi package is not installed")
    pkg = Path(spec.origin).parent
    text = "\n".join((pkg / f).read_text() for f in ("amdsmi_interface.py", "amdsmi_exception.py", "__init__.py")
                     if (pkg / f).exists())
    tree = ast.parse(text)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    defined |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    used = _used_names(ROOT / "gpu_sharing" / "backends" / "amdsmi_backend.py")
    assert used, "the backend's smi.* names were not found"
    missing = sorted(u for u in used if u not in defined)
    assert not missing, f"not in amdsmi {pkg}: {missing}"
    enum_members = {"INIT_AMD_GPUS", "VRAM"}
    assert all(m in text for m in enum_members)
