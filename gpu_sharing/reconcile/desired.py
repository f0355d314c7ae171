"""The one desired-state function: config + inventory + running + time + measured sizes -> plan.

Why one function: the daemon, ``plan``, ``apply`` and ``kserve export`` must agree
on what the node should run. Before, each built demands on its own and they
drifted (``plan`` ignored schedule windows). Everything that shapes the planner's
input lives here, in this order:

1. ``effective_config``: identical entries merged (dedupe), and under ``--simulate``
   the fake vLLM as the command (same argv, so fingerprints compare equal);
2. ``desired_state``: schedule windows at ``now`` (closed = 0 replicas), each model
   sized per allowed tp (measured > catalog > config.json), the planner policy;
3. ``plan_desired``: the planner over that input and the running instances, minus
   instances held stopped by the operator or a VRAM policy.

All three are pure given their inputs (the clock and the measured sizes are
passed in); the CLI and the daemon reach the planner only through this module
(import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

from gpu_sharing.config.schedule import active_models
from gpu_sharing.config.schema import Config
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.planner import plan as run_planner
from gpu_sharing.planner.types import ModelDemand, Plan, PlannerPolicy, RunningInstance, Unplaceable
from gpu_sharing.reconcile.dedupe import merged_config
from gpu_sharing.reconcile.demands import build_demands
from gpu_sharing.runtime.simulation import simulated_vllm_settings
from gpu_sharing.sizing.measured_store import MeasuredSizes

PlannerFn = Callable[[Inventory, Sequence[ModelDemand], Sequence[RunningInstance], PlannerPolicy], Plan]


@dataclass(frozen=True)
class DesiredState:
    """What the config asks of this node at one moment, ready for the planner."""

    config: Config
    """The effective config (deduped; simulated vLLM command under --simulate)."""
    demands: tuple[ModelDemand, ...]
    policy: PlannerPolicy
    problems: tuple[Unplaceable, ...]
    """Models that could not be sized, with the reason; the others are still planned."""
    windows: Mapping[str, bool]
    """Model name -> schedule window open at ``now``."""

    @property
    def fingerprints(self) -> dict[str, str]:
        return {d.name: d.fingerprint for d in self.demands}


@dataclass(frozen=True)
class DesiredPlan:
    desired: DesiredState
    plan: Plan

    @property
    def unplaceable(self) -> tuple[Unplaceable, ...]:
        return tuple(self.plan.unplaceable) + self.desired.problems


def effective_config(config: Config, *, sim_state_dir: Path | None = None, state_dir: Path | None = None) -> Config:
    """Dedupe, then (under --simulate, when ``sim_state_dir`` is given) the fake vLLM as the command, and
    ``node.state_dir`` the state dir the simulation runs in (``state_dir``, default ``<sim_state_dir>/daemon``),
    so what defaults under it (the launched vLLMs' caches, ``cache_env``) stays inside the simulation instead
    of going to /var/lib/gpu-sharing."""
    config = merged_config(config)
    if sim_state_dir is None:
        return config
    vllm = simulated_vllm_settings(config.vllm, sim_state_dir=Path(sim_state_dir),
                                   startup_time_s=config.node.simulator.startup_time_s,
                                   disk_bandwidth_bytes_per_s=config.node.simulator.disk_bandwidth_bytes_per_s,
                                   graph_capture_s=config.node.simulator.graph_capture_s)
    node = config.node.model_copy(update={"state_dir": str(state_dir or Path(sim_state_dir) / "daemon")})
    return config.model_copy(update={"vllm": vllm, "node": node})


def desired_state(config: Config, *, gpu_indices: Sequence[int], now: datetime, config_dir: Path | None = None,
                  measured: MeasuredSizes | None = None, replica_targets: Mapping[str, int] | None = None,
                  ) -> DesiredState:
    """``config`` is the effective config (see ``effective_config``); ``replica_targets``: the autoscaler's
    replica counts for models with ``scaling`` (``reconcile.autoscale``)."""
    windows = active_models(config, now)
    demands, policy, problems = build_demands(config, config_dir=config_dir, measured=measured,
                                              gpu_indices=gpu_indices, active=windows,
                                              replica_targets=replica_targets)
    return DesiredState(config=config, demands=demands, policy=policy, problems=problems, windows=windows)


def plan_desired(desired: DesiredState, inventory: Inventory, running: Sequence[RunningInstance], *,
                 held: Collection[str] = (), planner: PlannerFn = run_planner) -> Plan:
    """The planner's plan; instances in ``held`` (ids) are never started. Instances on a GPU whose readings
    failed (``inventory.unknown``) are invisible to the planner, so it never stops them."""
    unknown = {g.index for g in inventory.unknown}
    if unknown:
        running = [r for r in running if not any(ref.gpu in unknown for ref in r.partitions)]
    plan = planner(inventory, desired.demands, running, desired.policy)
    if held:
        plan = dataclasses.replace(plan, to_start=tuple(p for p in plan.to_start if p.instance_id not in held))
    return plan


def desired_plan(config: Config, inventory: Inventory, running: Sequence[RunningInstance], *, now: datetime,
                 config_dir: Path | None = None, measured: MeasuredSizes | None = None,
                 sim_state_dir: Path | None = None, state_dir: Path | None = None) -> DesiredPlan:
    """The whole pipeline from a config as loaded (what ``plan`` and ``kserve export`` print)."""
    desired = desired_state(effective_config(config, sim_state_dir=sim_state_dir, state_dir=state_dir),
                            gpu_indices=[g.index for g in inventory.gpus], now=now, config_dir=config_dir,
                            measured=measured)
    return DesiredPlan(desired, plan_desired(desired, inventory, running))
