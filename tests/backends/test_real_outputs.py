"""Issue 14 item 6: outputs the real tools give. One failing reading ("N/A" in `amd-smi static`, an
amdsmi call raising) marks only that GPU unknown with the reason; ROCm 6.4's bare-array CLI framing;
amdsmi symbol skew (AttributeError at import) falls back; a hanging library call times out."""

from __future__ import annotations

import builtins
import threading

import pytest

from gpu_sharing.backends.amdsmi_backend import AmdSmiBackend
from gpu_sharing.backends.factory import make_backend_with_reason
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from simulator.node import SimNode

from test_contract import make


@pytest.mark.parametrize("kind", ["simulated", "amdsmi", "amdsmi-real", "amd-smi-cli"])
def test_one_failing_reading_marks_only_that_gpu_unknown(tmp_path, kind):
    node = SimNode.create(tmp_path, "MI300X", 2, reload_time_s=0)
    node.set_failing_reading(1)
    inv = make(kind, tmp_path).inventory()
    assert [g.index for g in inv.gpus] == [0] and inv.gpus[0].compute_mode == C.SPX
    (unknown,) = inv.unknown
    assert unknown.index == 1 and unknown.bdf.startswith("0000:22:00") and "fail" in unknown.reason


def test_rocm_6_4_bare_arrays_and_compute_partition_key(tmp_path):
    node = SimNode.create(tmp_path, "MI300X", 2, compute_mode="CPX", reload_time_s=0)
    node.set_cli_version("6.4")
    inv = make("amd-smi-cli", tmp_path).inventory()
    assert [(g.index, g.compute_mode, len(g.partitions)) for g in inv.gpus] == [(0, C.CPX, 8), (1, C.CPX, 8)]
    assert inv.unknown == ()


def test_amdsmi_symbol_skew_falls_back_to_the_cli_with_the_reason(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def skewed(name, *a, **kw):  # what amdsmi_wrapper does when libamd_smi.so lacks a symbol of the wheel
        if name == "amdsmi":
            raise AttributeError("/opt/rocm/lib/libamd_smi.so: undefined symbol: amdsmi_gpu_driver_reload")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", skewed)
    with pytest.raises(BackendError) as e:
        AmdSmiBackend()
    assert e.value.code == BackendErrorCode.UNAVAILABLE and "does not match the installed libamd_smi.so" in str(e.value)
    with pytest.raises(BackendError, match="does not match the installed libamd_smi.so"):
        make_backend_with_reason("auto", amd_smi_path=str(tmp_path / "no-amd-smi"))


def test_a_hanging_amdsmi_call_times_out(tmp_path):
    SimNode.create(tmp_path, "MI300X", 1, reload_time_s=0)
    backend = make("amdsmi", tmp_path)
    release = threading.Event()
    real = backend.smi

    class Hanging:
        def __getattr__(self, name):
            if name == "amdsmi_get_processor_handles":
                return lambda: release.wait(10) and []
            return getattr(real, name)

    backend.smi, backend.timeout_s = Hanging(), 0.2
    try:
        with pytest.raises(BackendError) as e:
            backend.inventory()
        assert e.value.code == BackendErrorCode.TIMEOUT and "0.2 s" in str(e.value)
    finally:
        release.set()
