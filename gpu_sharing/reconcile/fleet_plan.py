"""Config + fleet file -> the fleet plan: the fleet's desired-state function.

The same demands the daemon plans with (``build_demands``: sizing per allowed tp from the
catalog, config.json or inline ``config_json``; nothing measured, since no node runs them
yet) and the same headroom, handed to the pure fleet planner. No backend is opened:
everything about the hardware comes from the catalog, so this runs on a laptop or in CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpu_sharing.config.fleet_schema import Fleet
from gpu_sharing.config.schema import Config
from gpu_sharing.planner.fleet import FleetPlan, FleetPolicy, FleetPool, plan_fleet
from gpu_sharing.planner.types import Unplaceable
from gpu_sharing.reconcile.demands import build_demands


@dataclass(frozen=True)
class FleetResult:
    plan: FleetPlan
    problems: tuple[Unplaceable, ...]
    """Models that could not be sized (their reason names the missing input)."""


def fleet_pools(fleet: Fleet) -> tuple[FleetPool, ...]:
    return tuple(FleetPool(p.name, p.gpu_model, tuple(p.node_list), p.gpus_per_node, p.pinned_profile(),
                           p.heterogeneous_profiles) for p in fleet.pools)


def plan_for_fleet(config: Config, fleet: Fleet, *, config_dir: Path | None = None) -> FleetResult:
    demands, _policy, problems = build_demands(config, config_dir=config_dir)
    policy = FleetPolicy(headroom_fraction=config.planner.headroom_fraction,
                         time_budget_s=fleet.planner.time_budget_s)
    return FleetResult(plan_fleet(fleet_pools(fleet), demands, policy), tuple(problems))
