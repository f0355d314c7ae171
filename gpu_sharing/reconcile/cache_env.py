"""Cache directories for launched vLLMs: under the state dir, not the (read-only) home directory.

Why: under systemd (``ProtectHome=read-only``, a service user without a home) vLLM and the
libraries below it write compile caches and downloads under ``~/.cache``: Hugging Face
(``HF_HOME``, default ``$XDG_CACHE_HOME/huggingface``), vLLM's torch.compile cache
(``VLLM_CACHE_ROOT``, default ``$XDG_CACHE_HOME/vllm``, vllm/envs.py), Triton
(``TRITON_CACHE_DIR``, default ``~/.triton/cache``), MIOpen's kernel cache and user
perf db (``MIOPEN_CUSTOM_CACHE_DIR``, ``MIOPEN_USER_DB_PATH``, default ``~/.cache/miopen``
and ``~/.config/miopen``, MIOpen docs "Kernel cache" / "Setting up locations"), and
Comgr's code-object cache (``$XDG_CACHE_HOME/comgr`` unless ``AMD_COMGR_CACHE_DIR``).
Each gets a default under ``vllm.cache_dir`` (default ``<node.state_dir>/cache``; under --simulate
``node.state_dir`` is the simulation's state dir, ``desired.effective_config``) unless
the config's env or the daemon's own environment already sets it, so an operator's
``Environment=HF_HOME=/models/hf`` (shared with ``stage_weights``) is kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from gpu_sharing.config.schema import Config

CACHE_VARS: tuple[tuple[str, str], ...] = (
    ("HF_HOME", "huggingface"),
    ("VLLM_CACHE_ROOT", "vllm"),
    ("TRITON_CACHE_DIR", "triton"),
    ("XDG_CACHE_HOME", "xdg"),
    ("MIOPEN_CUSTOM_CACHE_DIR", "miopen/cache"),
    ("MIOPEN_USER_DB_PATH", "miopen/db"),
)


def cache_root(config: Config) -> Path:
    return Path(config.vllm.cache_dir) if config.vllm.cache_dir else Path(config.node.state_dir) / "cache"


def cache_env(config: Config, env: Mapping[str, str], inherited: Mapping[str, str] | None = None,
              *, create: bool = True) -> dict[str, str]:
    """``env`` plus a default for every cache variable neither it nor ``inherited`` (the daemon's
    environment) sets. ``create``: make the directories (best effort; vLLM makes them too)."""
    inherited = os.environ if inherited is None else inherited
    root = cache_root(config)
    out = dict(env)
    for var, sub in CACHE_VARS:
        if out.get(var) or inherited.get(var):
            continue
        out[var] = str(root / sub)
        if create:
            try:
                (root / sub).mkdir(parents=True, exist_ok=True, mode=0o750)
            except OSError:
                pass  # e.g. a simulated node without /var/lib access; vLLM reports a real problem itself
    return out
