"""What every doctor check gets: the config, the probe, the backend (opened once, lazily) and flags.

Why lazy and cached: on a node without ROCm the backend cannot open; the version checks must still
run and say what to install, and the hardware checks must report the one reason instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpu_sharing.config.schema import Config, VllmSettings
from gpu_sharing.doctor.probe import NodeProbe
from gpu_sharing.hardware.backend import BackendError, PartitionBackend
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.runtime.simulation import simulated_vllm_settings


@dataclass
class DoctorContext:
    config: Config
    probe: NodeProbe
    open_backend: Callable[[], PartitionBackend]
    state_dir: Path
    simulate: bool = False
    deep: bool = False
    config_dir: Path | None = None
    """Directory of the config file (relative config_json / catalog paths)."""
    sim_state_dir: Path | None = None
    backend_note: str = ""
    """Where the backend's answers come from beyond the backend itself (the simulator's rules)."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Results later checks and the daemon use (e.g. ``kfd_mode_switch``); saved by ``--deep``."""
    _backend: PartitionBackend | None = None
    _backend_error: str | None = None
    _inventory: Inventory | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def cached(self, key: str, read: Callable[[], Any]) -> Any:
        """Read a probe fact once per run (some reads start a process)."""
        if key not in self._cache:
            self._cache[key] = read()
        return self._cache[key]

    def backend(self) -> PartitionBackend | None:
        if self._backend is None and self._backend_error is None:
            try:
                self._backend = self.open_backend()
            except (BackendError, OSError, ImportError, KeyError) as e:
                self._backend_error = str(e)
        return self._backend

    def inventory(self, fresh: bool = False) -> Inventory | None:
        """The GPUs as the backend reads them, or None (then ``inventory_error`` says why)."""
        if self._inventory is None or fresh:
            backend = self.backend()
            if backend is None:
                return None
            try:
                self._inventory = backend.inventory()
            except (BackendError, ValueError, KeyError) as e:  # ValueError: a mode string we do not know
                self._backend_error = str(e)
                return None
        return self._inventory

    def vllm_settings(self) -> VllmSettings:
        """vllm settings instances get: under --simulate the fake vLLM, as runtime.simulation arranges."""
        if not self.simulate or self.sim_state_dir is None:
            return self.config.vllm
        return simulated_vllm_settings(self.config.vllm, sim_state_dir=self.sim_state_dir,
                                       startup_time_s=min(self.config.node.simulator.startup_time_s, 0.2))

    @property
    def inventory_error(self) -> str:
        return self._backend_error or ""

    @property
    def backend_source(self) -> str:
        b = self._backend
        return (f"{b.name} backend inventory()" if b is not None else "backend") + \
            (f"; {self.backend_note}" if self.backend_note else "")
