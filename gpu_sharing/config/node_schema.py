"""The ``node`` and ``gpus`` sections of the daemon config: which backend and launcher, what the kernel allows
(driver reloads, KFD mode switches), the simulated node, and the partition modes asked per GPU.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, Union

from pydantic import Field, field_validator

from gpu_sharing.config.strict import Strict, known_gpu_model
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.hardware.node_facts import KfdModeSwitch  # one enum for the config key and doctor's node facts


class BackendKind(str, Enum):
    AUTO = "auto"
    SIMULATED = "simulated"
    AMDSMI = "amdsmi"
    AMD_SMI_CLI = "amd-smi-cli"


class LauncherKind(str, Enum):
    DIRECT = "direct"
    SYSTEMD_RUN = "systemd-run"


class SimulatorSettings(Strict):
    gpu_model: str = "MI300X"
    """GPU model of the simulated node (MI300X, MI325X, MI350X, MI355X, MI300A)."""
    gpus: int = Field(8, ge=1, le=64)
    """Number of physical GPUs in the simulated node (one XGMI hive)."""
    startup_time_s: float = Field(1.0, ge=0, le=3600)
    """The fake vLLM's fixed engine start (before it is healthy), besides loading weights and graphs."""
    disk_bandwidth_bytes_per_s: float = Field(0, ge=0, le=1e12)
    """Weights load at this rate in the fake vLLM (0: instantly). A real cold start reads every byte."""
    graph_capture_s: float = Field(0, ge=0, le=3600)
    """Graph capture time of the fake vLLM, skipped with --enforce-eager (0: none)."""
    driver_reload_time_s: float = Field(2.0, ge=0, le=3600)
    """How long a simulated amdgpu reload takes."""

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return known_gpu_model(v)


class NodeSettings(Strict):
    backend: BackendKind = BackendKind.AUTO
    """How to talk to the GPUs: amdsmi (Python library), amd-smi-cli, simulated, or auto
    (amdsmi, then the amd-smi CLI). --simulate forces simulated."""
    gpu_model: str | None = None
    """Expected GPU model; when set, mode pairs in `gpus` are checked against it at load time."""
    allow_driver_reload: bool = False
    """Allow memory (NPS) mode changes, which reload amdgpu and stop every GPU process on the hive."""
    driver_reload_timeout_s: float = Field(600.0, gt=0, le=7200)
    state_dir: str = "/var/lib/gpu-sharing"
    """Daemon state (instances, measured sizes). systemd's StateDirectory= sets it."""
    launcher: LauncherKind = LauncherKind.DIRECT
    """direct (own process group, NUMA CPU affinity) or systemd-run (transient unit per instance)."""
    kfd_mode_switch: KfdModeSwitch = KfdModeSwitch.STRICT
    """When this kernel refuses a compute-partition change as BUSY. strict (kernels without the May-2025
    KFD change "allow compute partition mode switch with cgroup exclusions"): any GPU process on the node
    blocks every change, so a compute-mode change drains the whole node. cgroup_exclusion (kernels with
    it): only processes whose device cgroup allows that GPU block it; with launcher: systemd-run (each
    instance's unit allows only its own render nodes) the other GPUs keep serving."""
    simulator: SimulatorSettings = SimulatorSettings()

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        return v if v is None else known_gpu_model(v)


class GpuSettings(Strict):
    devices: Union[Literal["all"], list[int]] = "all"
    """Physical GPU indices this entry covers, or all."""
    compute_partition: Union[Literal["auto"], ComputePartitionMode] = "auto"
    """SPX, DPX, TPX, QPX, CPX, or auto (the planner chooses)."""
    memory_partition: Union[Literal["auto"], MemoryPartitionMode] = "auto"
    """NPS1, NPS2, NPS4, or auto (changes only if node.allow_driver_reload)."""

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("devices must list at least one GPU index, or be 'all'")
            if any(i < 0 or i > 63 for i in v):
                raise ValueError("GPU indices must be between 0 and 63")
            if len(set(v)) != len(v):
                raise ValueError("GPU indices must not repeat")
        return v
