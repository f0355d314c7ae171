"""The narrow protocol every hardware backend implements (amdsmi, amd-smi CLI, simulated).

Why narrow: the applier only needs to observe, set a mode and reload the driver.
One contract test suite (tests/backends/test_contract.py) runs against every
implementation, so the simulator cannot drift from the real code paths.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Protocol, runtime_checkable

from gpu_sharing.errors import OperationError
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

ProgressFn = Callable[[str, float], None]
"""progress(message, fraction_done 0..1) for long work such as a driver reload."""


class BackendErrorCode(str, Enum):
    """amdsmi status names we act on; anything else is OTHER."""

    BUSY = "BUSY"
    NO_PERM = "NO_PERM"
    SETTING_UNAVAILABLE = "SETTING_UNAVAILABLE"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    INVAL = "INVAL"
    TIMEOUT = "TIMEOUT"
    RESTART_FAILED = "AMDGPU_RESTART_ERR"
    UNAVAILABLE = "UNAVAILABLE"
    """The backend itself is missing (no libamd_smi.so, no amd-smi on PATH)."""
    OTHER = "OTHER"

    @property
    def retryable(self) -> bool:
        return self in (BackendErrorCode.BUSY, BackendErrorCode.TIMEOUT, BackendErrorCode.OTHER)


class BackendError(OperationError):
    """A failed backend call, naming the GPU and the operation.

    str(): ``setting compute partition CPX on GPU 3: BUSY: 2 processes on partition 3.1 (pid 4411 vllm)``
    """

    def __init__(self, operation: str, code: BackendErrorCode, detail: str = "", gpu: int | None = None):
        # An OperationError (exit code 1): the CLI and the daemon handle it like every other failed operation.
        self.operation = operation
        self.code = code
        self.detail = detail
        self.gpu = gpu
        where = f" on GPU {gpu}" if gpu is not None else ""
        tail = f": {detail}" if detail else ""
        super().__init__(f"{operation}{where}: {code.value}{tail}")


@runtime_checkable
class PartitionBackend(Protocol):
    """Observe and change partition modes on one node."""

    name: str
    """``simulated``, ``amdsmi`` or ``amd-smi-cli``."""

    def inventory(self) -> Inventory:
        """A fresh observation: GPUs, modes, partitions, VRAM, processes."""
        ...

    def set_compute_mode(self, gpu: int, mode: ComputePartitionMode) -> None:
        """Set one GPU's compute mode. No-op if already there. Raises BackendError."""
        ...

    def set_memory_mode(self, gpu: int, mode: MemoryPartitionMode) -> None:
        """Request a memory mode for the GPU's whole hive; pending until reload_driver()."""
        ...

    def reload_driver(self, progress: ProgressFn | None = None) -> None:
        """Reload amdgpu so a pending memory mode applies. All GPU processes must be stopped."""
        ...


MUTATING_METHODS = ("set_compute_mode", "set_memory_mode", "reload_driver")
