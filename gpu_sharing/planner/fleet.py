"""The fleet planner (pure): node pools + sized demands -> a DCM profile per node and a node
for every replica.

Built on what the node planner knows: the hardware catalog gives each partition's size
and CUs, demands carry the bytes per rank for each tp (gpu_sharing.sizing, through the
same ModelDemand the node planner takes), the same headroom applies, and a replica takes
the smallest tp whose rank fits a partition (smaller tp needs fewer partitions of the
same type, so for placed priority it is never worse: the bound holds over every tp).
What differs from one node: on Kubernetes a pod gets whole partitions from the device
plugin, so partitions are not shared (compute shares and GPU pins do not apply, and are
reported as warnings), and a pod's ranks stay on one node.
fleet_model.py solves the counts with a proof; this module builds its input, turns counts
into nodes and replicas, and explains what is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.dcm import DcmProfile, PartitionType, candidate_profiles, partition_counts
from gpu_sharing.planner.fleet_model import Option, PoolInput, solve_fleet
from gpu_sharing.planner.types import ModelDemand, SolverInfo, Unplaceable

GIB = 1024**3


@dataclass(frozen=True)
class FleetPool:
    """One node pool, as the planner sees it."""

    name: str
    gpu_model: str
    nodes: tuple[str, ...]
    gpus_per_node: int
    pinned: DcmProfile | None = None
    """Every node keeps this profile; None lets the planner choose."""
    heterogeneous: bool = False


@dataclass(frozen=True)
class FleetPolicy:
    headroom_fraction: float = 0.03
    time_budget_s: float = 5.0


@dataclass(frozen=True)
class NodeProfile:
    pool: str
    node: str
    profile: DcmProfile


@dataclass(frozen=True)
class FleetPlacement:
    instance_id: str
    model: str
    replica: int
    pool: str
    node: str
    kind: PartitionType
    tp: int
    partition_bytes: int
    """Total VRAM of each partition."""
    memory_bytes_per_rank: int
    cus_per_partition: int


@dataclass(frozen=True)
class FleetPlan:
    nodes: tuple[NodeProfile, ...]
    placements: tuple[FleetPlacement, ...]
    unplaceable: tuple[Unplaceable, ...]
    solver: SolverInfo
    """objective/bound/gap: placed priority."""
    compute_objective: int
    """Sum over placed replicas of (priority + 1) x CUs."""
    distinct_profiles: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def profiles(self) -> tuple[DcmProfile, ...]:
        seen: dict[str, DcmProfile] = {}
        for n in self.nodes:
            seen.setdefault(n.profile.name, n.profile)
        return tuple(seen[k] for k in sorted(seen))


def smallest_tp(d: ModelDemand, capacity_bytes: int, total_bytes: int, most: int) -> int | None:
    """The tp a replica takes on partitions of this size, or None when none of at most
    ``most`` partitions holds a rank."""
    if total_bytes < d.min_partition_bytes:
        return None
    for tp in sorted(d.bytes_per_rank_by_tp):
        if tp <= most and d.bytes_per_rank_by_tp[tp] <= capacity_bytes:
            return tp
    return None


def _pool_inputs(pools: Sequence[FleetPool]) -> list[PoolInput]:
    out = []
    for p in pools:
        spec = get_spec(p.gpu_model)
        profiles = (p.pinned,) if p.pinned else candidate_profiles(spec, p.gpus_per_node, p.heterogeneous)
        counts = tuple(partition_counts(spec, prof) for prof in profiles)
        kinds = {k for c in counts for k in c}
        out.append(PoolInput(p.name, spec.name, len(p.nodes), profiles, counts,
                             {k: spec.cus_per_partition(k.compute) for k in kinds}))
    return out


def _options(pools: list[PoolInput], demands: Sequence[ModelDemand], policy: FleetPolicy) -> list[Option]:
    out = []
    for mi, d in enumerate(demands):
        if d.replicas <= 0:
            continue
        for pi, pool in enumerate(pools):
            spec = get_spec(pool.gpu_model)
            for kind in sorted({k for c in pool.counts for k in c}):
                total = spec.vram_per_partition_bytes(kind.compute)
                most = max(c.get(kind, 0) for c in pool.counts)
                tp = smallest_tp(d, int(total * (1 - policy.headroom_fraction)), total, most)
                if tp is not None:
                    out.append(Option(mi, pi, kind, tp))
    return out


def _warnings(demands: Sequence[ModelDemand]) -> list[str]:
    out = []
    for d in demands:
        if d.compute_share is not None:
            out.append(f"{d.name}: limits.compute_share does not apply on Kubernetes (a pod gets whole partitions)")
        if d.allowed_gpus is not None:
            out.append(f"{d.name}: gpus (a node-local GPU pin) does not apply to a fleet")
    return out


def plan_fleet(pools: Sequence[FleetPool], demands: Sequence[ModelDemand], policy: FleetPolicy = FleetPolicy()) -> FleetPlan:
    inputs = _pool_inputs(pools)
    options = _options(inputs, demands, policy)
    weights = [d.priority + 1 for d in demands]
    sol = solve_fleet(inputs, options, weights, [d.replicas for d in demands], policy.time_budget_s)
    nodes = _assign_profiles(pools, inputs, sol.profile_nodes)
    placements, leftover = _place(pools, inputs, demands, nodes, sol.replicas)
    placed_priority = sum(weights[i] for i in (_demand_index(demands, p.model) for p in placements))
    unplaceable = _unplaceable(demands, placements, inputs, options, policy, leftover)
    gap = 0.0 if sol.bound <= 0 else max(0.0, (sol.bound - placed_priority) / sol.bound)
    info = SolverInfo("fleet-cp-sat", float(placed_priority), float(sol.bound), gap, sol.wall_time_s,
                      f"placed priority {sol.status.lower()}; then compute, then fewest profiles")
    return FleetPlan(tuple(nodes), tuple(placements), tuple(unplaceable), info, sol.compute, sol.distinct_profiles,
                     tuple(_warnings(demands)))


def _demand_index(demands: Sequence[ModelDemand], name: str) -> int:
    return next(i for i, d in enumerate(demands) if d.name == name)


def _assign_profiles(pools: Sequence[FleetPool], inputs: list[PoolInput], counts: dict) -> list[NodeProfile]:
    """Profiles to nodes in the pool's node order, profiles sorted by name (deterministic)."""
    out = []
    for pi, (pool, inp) in enumerate(zip(pools, inputs)):
        names = iter(pool.nodes)
        for prof in sorted(inp.profiles, key=lambda p: p.name):
            for _ in range(counts.get((pi, prof.name), 0)):
                out.append(NodeProfile(pool.name, next(names), prof))
    return out


def _place(pools, inputs, demands, nodes: list[NodeProfile], replicas: dict[Option, int]):
    """First fit by decreasing tp per (pool, partition type): exact for tp in {1, 2, 4, 8}
    (fleet_model.py). Replicas take the lowest free indices, higher priority first."""
    free: dict[tuple[str, PartitionType], dict[str, int]] = {}
    for n in nodes:
        spec = get_spec(next(p.gpu_model for p in pools if p.name == n.pool))
        for kind, count in partition_counts(spec, n.profile).items():
            free.setdefault((n.pool, kind), {})[n.node] = count
    next_replica = {d.name: 0 for d in demands}
    out, leftover = [], []
    order = sorted(replicas.items(), key=lambda kv: (-kv[0].tp, -demands[kv[0].model].priority, kv[0].model,
                                                     kv[0].pool, kv[0].kind))
    for o, count in order:
        d = demands[o.model]
        pool = inputs[o.pool]
        spec = get_spec(pool.gpu_model)
        room = free.get((pool.name, o.kind), {})
        for _ in range(count):
            node = next((name for name, f in room.items() if f >= o.tp), None)
            if node is None:
                leftover.append(d.name)
                continue
            room[node] -= o.tp
            r = next_replica[d.name]
            next_replica[d.name] += 1
            out.append(FleetPlacement(d.instance_id(r), d.name, r, pool.name, node, o.kind, o.tp,
                                      spec.vram_per_partition_bytes(o.kind.compute), d.bytes_per_rank_by_tp[o.tp],
                                      pool.cus[o.kind]))
    return sorted(out, key=lambda p: (p.model, p.replica)), leftover


def _unplaceable(demands, placements, inputs, options, policy, leftover) -> list[Unplaceable]:
    placed = {}
    for p in placements:
        placed[p.model] = placed.get(p.model, 0) + 1
    out = []
    for mi, d in enumerate(demands):
        missing = d.replicas - placed.get(d.name, 0)
        if missing <= 0:
            continue
        mine = [o for o in options if o.model == mi]
        if not mine:
            reason = _too_big(d, inputs, policy)
        elif d.name in leftover:
            reason = "the counted room did not pack onto nodes (a tp outside 1, 2, 4, 8?)"
        else:
            where = sorted({f"{inputs[o.pool].gpu_model} {o.kind} (tp={o.tp})" for o in mine})
            reason = (f"fits {', '.join(where)}, but that room went to higher-priority replicas or to the "
                      f"profiles they need; one InferenceService keeps all replicas on one GPU model and "
                      f"partition type; raise its priority or add nodes")
        out += [Unplaceable(d.name, r, reason) for r in range(placed.get(d.name, 0), d.replicas)]
    return out


def _too_big(d: ModelDemand, inputs: list[PoolInput], policy: FleetPolicy) -> str:
    tp = max(d.bytes_per_rank_by_tp)
    need = d.bytes_per_rank_by_tp[tp]
    best = []
    for pool in inputs:
        spec = get_spec(pool.gpu_model)
        for kind in sorted({k for c in pool.counts for k in c}):
            total = spec.vram_per_partition_bytes(kind.compute)
            most = max(c.get(kind, 0) for c in pool.counts)
            best.append((total, f"{pool.gpu_model} {kind}: {total * (1 - policy.headroom_fraction) / GIB:.1f} GiB "
                                f"usable, at most {most} per node"))
    largest = max(best)[1] if best else "no pools"
    return (f"needs {need / GIB:.1f} GiB per rank at tp={tp} (its largest allowed tp) and a pod cannot span nodes; "
            f"largest partition: {largest}")
