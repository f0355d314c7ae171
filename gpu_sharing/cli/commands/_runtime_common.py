"""Wiring shared by ``apply`` and ``stop``: backend, state dir and Reconciler from CLI flags.

Under --simulate: the simulated backend over --sim-state (or $GPU_SHARING_SIM_STATE,
or the default dir), the fake vLLM server as the command, and the state dir
<sim_state>/daemon unless --state-dir says otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from gpu_sharing.config.schema import BackendKind, Config
from gpu_sharing.errors import OperationError
from gpu_sharing.reconcile.reconciler import Reconciler


def sim_state_dir(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "sim_state", None) or os.environ.get("GPU_SHARING_SIM_STATE")
    if explicit:
        return Path(explicit)
    try:
        return Path(importlib.import_module("simulator.node").default_state_dir())
    except (ImportError, AttributeError):
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "gpu-sharing" / "sim"


def make_backend(args: argparse.Namespace, cfg: Config):
    try:
        factory = importlib.import_module("gpu_sharing.backends.factory")
    except ImportError as e:
        raise OperationError(f"no hardware backend available ({e})") from None
    if args.simulate:
        backend, _reason = factory.make_backend_with_reason(BackendKind.SIMULATED, sim_state_dir=sim_state_dir(args))
    else:
        backend, _reason = factory.make_backend_with_reason(cfg.node.backend)
    return backend


def state_dir(args: argparse.Namespace, cfg: Config) -> Path:
    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    if args.simulate:
        return sim_state_dir(args) / "daemon"
    return Path(cfg.node.state_dir)


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR", help="runtime state (instances.json, logs, measured sizes); "
                   "default: node.state_dir, or <sim-state>/daemon with --simulate")


def make_reconciler(args: argparse.Namespace, cfg: Config, config_path: str | None) -> Reconciler:
    def progress(msg: str) -> None:
        if not getattr(args, "json", False):
            print(f"  {msg}", file=sys.stderr, flush=True)
    return Reconciler(cfg, make_backend(args, cfg), state_dir=state_dir(args, cfg), config_path=config_path,
                      simulate=bool(args.simulate), sim_state_dir=sim_state_dir(args) if args.simulate else None,
                      progress=progress)
