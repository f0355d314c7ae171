"""The supervisor's STAGING gate: with ``vllm.stage_weights`` an instance starts only on verified weights.

The first time an instance asks, staging of its model begins on a background thread
(StagingManager: download with retry and backoff, verification against the safetensors
index, disk budget); until it is READY the instance stays in STAGING. A FAILED staging keeps
it there too, with the reason in ``reason(model)``; the next reload retries.
"""

from __future__ import annotations

import threading
from typing import Callable

from gpu_sharing.config.schema import Config
from gpu_sharing.runtime.staging import StageState, StagingManager


class StagingGate:
    def __init__(self, config: Callable[[], Config], manager: StagingManager | None = None):
        self._config = config
        self._manager = manager
        self._started: set[str] = set()
        self._lock = threading.Lock()

    @property
    def manager(self) -> StagingManager:
        if self._manager is None:
            self._manager = StagingManager(budget_bytes=self._config().vllm.staging_budget_bytes)
        return self._manager

    def __call__(self, launch) -> bool:
        cfg = self._config()
        if not cfg.vllm.stage_weights:
            return True
        model = next((m for m in cfg.models if m.name == launch.model), None)
        if model is None:
            return True
        with self._lock:
            if model.name not in self._started:
                self._started.add(model.name)
                threading.Thread(target=self.manager.ensure, args=(model,), name=f"stage-{model.name}",
                                 daemon=True).start()
        return self.manager.may_start(model.name)

    def reason(self, model: str) -> str:
        return "" if self.manager.state(model) is not StageState.FAILED else f"staging {model} failed"

    def reset(self) -> None:
        with self._lock:
            self._started.clear()
