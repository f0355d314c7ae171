"""Pick a backend: simulated, amdsmi (Python library), amd-smi CLI, or auto.

auto tries the amdsmi library first (richest API, no process per call), then the
amd-smi executable on PATH, and says which one it picked and why, because "which
amd-smi did the daemon use" is the first question when a node misbehaves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpu_sharing.config.schema import BackendKind, KfdModeSwitch, SimulatorSettings
from gpu_sharing.hardware.backend import BackendError, BackendErrorCode, PartitionBackend


def make_backend_with_reason(kind: BackendKind | str, *, sim_state_dir: Path | str | None = None,
                             amd_smi_path: str = "amd-smi", reload_timeout_s: float = 600.0,
                             simulator: SimulatorSettings | None = None,
                             kfd_mode_switch: KfdModeSwitch = KfdModeSwitch.STRICT) -> tuple[PartitionBackend, str]:
    """``reload_timeout_s`` is node.driver_reload_timeout_s: how long the CLI backend lets a driver reload run.
    ``simulator`` and ``kfd_mode_switch`` (node.simulator, node.kfd_mode_switch) describe a simulated node
    created now."""
    kind = BackendKind(kind)
    if kind == BackendKind.SIMULATED:
        from gpu_sharing.backends.simulated import SimulatedBackend

        backend = SimulatedBackend.open(sim_state_dir, simulator, kfd_mode_switch=kfd_mode_switch)
        return backend, f"simulated node in {backend.node.state_dir}"
    if kind in (BackendKind.AMDSMI, BackendKind.AUTO):
        try:
            from gpu_sharing.backends.amdsmi_backend import AmdSmiBackend

            backend = AmdSmiBackend(reload_timeout_s=reload_timeout_s)
            backend.inventory()
            return backend, "amdsmi Python library"
        except (BackendError, ImportError, OSError, KeyError, AttributeError) as e:
            if kind == BackendKind.AMDSMI:
                raise BackendError("opening the amdsmi library", BackendErrorCode.UNAVAILABLE, str(e)) from None
            lib_reason = f"amdsmi library unavailable ({e})"
    if kind in (BackendKind.AMD_SMI_CLI, BackendKind.AUTO):
        exe = shutil.which(amd_smi_path)
        if exe:
            try:
                from gpu_sharing.backends.amd_smi_cli_backend import AmdSmiCliBackend

                return AmdSmiCliBackend(exe, reload_timeout_s=reload_timeout_s), f"amd-smi CLI at {exe}" + (
                    f" ({lib_reason})" if kind == BackendKind.AUTO else "")
            except ImportError as e:
                cli_reason = f"amd-smi CLI backend unavailable ({e})"
        else:
            cli_reason = f"no {amd_smi_path!r} on PATH"
        if kind == BackendKind.AMD_SMI_CLI:
            raise BackendError("opening the amd-smi CLI", BackendErrorCode.UNAVAILABLE, cli_reason)
        raise BackendError("choosing a backend", BackendErrorCode.UNAVAILABLE,
                           f"{lib_reason}; {cli_reason}. Install ROCm's amd-smi, or use --simulate")
    raise BackendError("choosing a backend", BackendErrorCode.UNAVAILABLE, f"unknown backend {kind}")


def make_backend(kind: BackendKind | str, **kwargs) -> PartitionBackend:
    return make_backend_with_reason(kind, **kwargs)[0]
