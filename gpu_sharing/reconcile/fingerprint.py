"""A model's restart fingerprint: what, when changed, needs its running instances restarted.

Why a hash of the settings and not a diff: the planner compares a running
instance's recorded fingerprint with the desired one; the state file keeps it
across daemon restarts, so a restarted daemon still knows which instances are stale.
"""

from __future__ import annotations

import hashlib
import json

from gpu_sharing.config.schema import Config, ModelSettings

RESTART_RELEVANT_VLLM_KEYS = {"command", "host", "memory_flag", "vllm_args", "env"}
"""vLLM settings that reach an instance's command line or environment (timeouts and backoff do not)."""

NOT_RESTART_RELEVANT_MODEL_KEYS = {"replicas", "priority", "enabled", "schedule", "gpus", "scaling"}
"""Changing these moves or adds replicas; it never restarts the ones that keep running."""


def model_fingerprint(model: ModelSettings, config: Config) -> str:
    """Everything that needs a restart when changed: the model's settings and the vLLM settings that reach
    its command line or environment."""
    blob = json.dumps({"model": model.model_dump(mode="json", exclude=NOT_RESTART_RELEVANT_MODEL_KEYS),
                       "vllm": config.vllm.model_dump(mode="json", include=RESTART_RELEVANT_VLLM_KEYS)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
