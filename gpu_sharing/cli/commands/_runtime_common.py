"""Wiring shared by ``apply`` and ``stop``: backend, state dir and Reconciler from CLI flags.

Under --simulate: the simulated backend over --sim-state (or $GPU_SHARING_SIM_STATE,
or the default dir), the fake vLLM server as the command, and the state dir
<sim_state>/daemon unless --state-dir says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from gpu_sharing.backends.factory import make_backend_with_reason
from gpu_sharing.config.schema import BackendKind, Config
from gpu_sharing.reconcile.desired import DesiredPlan, desired_plan
from gpu_sharing.reconcile.observe import running_instances
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.controller_lock import ControllerLock, cli_hint
from gpu_sharing.sizing.measured_store import MeasuredSizes
from simulator.node import default_state_dir


def sim_state_dir(args: argparse.Namespace) -> Path:
    explicit = getattr(args, "sim_state", None) or os.environ.get("GPU_SHARING_SIM_STATE")
    return Path(explicit) if explicit else Path(default_state_dir())


def make_backend(args: argparse.Namespace, cfg: Config):
    if args.simulate:
        backend, _reason = make_backend_with_reason(BackendKind.SIMULATED, sim_state_dir=sim_state_dir(args),
                                                    simulator=cfg.node.simulator,
                                                    kfd_mode_switch=cfg.node.kfd_mode_switch)
    else:
        backend, _reason = make_backend_with_reason(cfg.node.backend,
                                                    reload_timeout_s=cfg.node.driver_reload_timeout_s)
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


def controller_lock(args: argparse.Namespace, cfg: Config, verb: str) -> ControllerLock:
    """The state dir's controller lock, taken for the length of a mutating command (``apply``, ``stop``):
    refused, naming the holder, while the daemon (or another ``apply``) controls the node."""
    return ControllerLock(state_dir(args, cfg), f"gpu-sharing {verb}").acquire(hint=cli_hint(verb))


def make_reconciler(args: argparse.Namespace, cfg: Config, config_path: str | None, **collaborators) -> Reconciler:
    """The production Reconciler for these flags; ``collaborators`` override its injected parts (tests)."""
    def progress(msg: str) -> None:
        if not getattr(args, "json", False):
            print(f"  {msg}", file=sys.stderr, flush=True)
    return Reconciler(cfg, make_backend(args, cfg), state_dir=state_dir(args, cfg), config_path=config_path,
                      simulate=bool(args.simulate), sim_state_dir=sim_state_dir(args) if args.simulate else None,
                      progress=progress, **collaborators)


def plan_from_flags(args: argparse.Namespace, cfg: Config, config_path: str, *,
                    simulated_command: bool = True) -> DesiredPlan:
    """What ``plan`` and ``kserve export`` show: the desired-state function over this node, now, with the
    instances recorded in the state dir and the measured sizes there. Changes nothing. ``simulated_command``:
    under --simulate, plan with the fake vLLM command the daemon launches there (``kserve export`` does not:
    its manifests carry the real ``vllm serve``)."""
    inventory = make_backend(args, cfg).inventory()
    sdir = state_dir(args, cfg)
    return desired_plan(cfg, inventory, running_instances(cfg, inventory, sdir), now=datetime.now().astimezone(),
                        config_dir=Path(config_path).resolve().parent,
                        measured=MeasuredSizes.load(sdir / "measured_sizes.json"),
                        sim_state_dir=sim_state_dir(args) if args.simulate and simulated_command else None,
                        state_dir=sdir)
