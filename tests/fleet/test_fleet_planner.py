"""The fleet planner against an independent brute force, and its plans against the hardware.

The oracle below is written from the rules, not from the planner's model: it enumerates a
DCM profile for every node, a (GPU model, partition type) per model (one InferenceService,
one pod template), every tp that divides nothing special (1, 2, 4, 8: all of them, not only
the smallest that fits), and packs replicas onto explicit nodes by exhaustive search.
"""

from __future__ import annotations

import itertools
import random
import pytest

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.dcm import PartitionType
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from gpu_sharing.planner.fleet import FleetPolicy, FleetPool, plan_fleet
from gpu_sharing.planner.types import ModelDemand

GIB = 1024**3
HEADROOM = 0.03


def demand(name, gib_tp1, replicas, priority):
    by = {tp: int((gib_tp1 / tp + 1.0) * GIB) for tp in (1, 2, 4, 8)}
    return ModelDemand(name, replicas, priority, by, "fp")


def node_layouts(model: str, gpus: int, heterogeneous: bool):
    """Per DCM's rules (tests/data/dcm/README.md): {PartitionType: count} per allowed profile."""
    spec = get_spec(model)
    kinds = [k for k in (PartitionType(C.SPX, M.NPS1), PartitionType(C.CPX, M.NPS1), PartitionType(C.CPX, M.NPS4))
             if spec.is_valid(k.compute, k.memory)]
    out = [{k: gpus * spec.partitions(k.compute)} for k in kinds]
    if heterogeneous:
        for k in range(1, gpus):
            out.append({PartitionType(C.SPX, M.NPS1): k, PartitionType(C.CPX, M.NPS1): (gpus - k) * spec.xcd_count})
    return out


def oracle(pools: list[FleetPool], demands: list[ModelDemand]) -> int:
    nodes = [(p.gpu_model, layouts) for p in pools for _ in p.nodes
             for layouts in [node_layouts(p.gpu_model, p.gpus_per_node, p.heterogeneous)]]
    best, seen = 0, set()
    for choice in itertools.product(*[range(len(layouts)) for _m, layouts in nodes]):
        caps = tuple(tuple(sorted(nodes[i][1][c].items())) for i, c in enumerate(choice))
        models = tuple(nodes[i][0] for i in range(len(nodes)))
        if (models, tuple(sorted(zip(models, caps)))) in seen:
            continue  # identical nodes in another order
        seen.add((models, tuple(sorted(zip(models, caps)))))
        best = max(best, _best_for(models, caps, demands))
    return best


def _best_for(models, caps, demands) -> int:
    variants = sorted({(m, k) for m, cap in zip(models, caps) for k, _n in cap})
    best = 0
    for pick in itertools.product([None, *variants], repeat=len(demands)):
        items = []  # (weight, [(node, kind, tp) options])
        for d, v in zip(demands, pick):
            if v is None:
                continue
            gpu_model, kind = v
            total = get_spec(gpu_model).vram_per_partition_bytes(kind.compute)
            tps = [tp for tp, b in d.bytes_per_rank_by_tp.items() if b <= int(total * (1 - HEADROOM))]
            opts = [(i, kind, tp) for i, (m, cap) in enumerate(zip(models, caps)) if m == gpu_model
                    for tp in tps if tp <= dict(cap).get(kind, 0)]
            items += [(d.priority + 1, opts)] * d.replicas
        best = max(best, _pack([dict(c) for c in caps], sorted(items, key=lambda x: -x[0]), 0, {}))
    return best


def _pack(free, items, i, memo) -> int:
    """Most weight of items[i:] that fits ``free`` (exhaustive, memoised on the free room)."""
    if i == len(items):
        return 0
    key = (i, tuple(tuple(sorted(f.items())) for f in free))
    if key in memo:
        return memo[key]
    weight, opts = items[i]
    best = _pack(free, items, i + 1, memo)  # leave it out
    for node, kind, tp in opts:
        if free[node].get(kind, 0) >= tp:
            free[node][kind] -= tp
            best = max(best, weight + _pack(free, items, i + 1, memo))
            free[node][kind] += tp
    memo[key] = best
    return best


def check_plan(plan, pools, demands):
    """Every replica on a node of its pool, within the partitions that node's profile gives."""
    by_node = {n.node: n for n in plan.nodes}
    assert sorted(by_node) == sorted(n for p in pools for n in p.nodes)
    used: dict[tuple[str, PartitionType], int] = {}
    for p in plan.placements:
        node = by_node[p.node]
        spec = get_spec(next(x.gpu_model for x in pools if x.name == node.pool))
        have = sum(e.gpus * spec.partitions(e.kind.compute) for e in node.profile.entries if e.kind == p.kind)
        used[p.node, p.kind] = used.get((p.node, p.kind), 0) + p.tp
        assert used[p.node, p.kind] <= have, (p, node.profile)
        assert p.memory_bytes_per_rank <= spec.vram_per_partition_bytes(p.kind.compute) * (1 - HEADROOM)
        d = next(x for x in demands if x.name == p.model)
        assert p.memory_bytes_per_rank == d.bytes_per_rank_by_tp[p.tp]
    for d in demands:
        mine = [p for p in plan.placements if p.model == d.name]
        assert len(mine) <= d.replicas
        assert len({(p.pool.split("-")[0], p.kind, p.tp) for p in mine}) <= 1  # one pod template per model
    assert plan.solver.objective == sum(d.priority + 1 for p in plan.placements for d in demands if d.name == p.model)
    assert plan.solver.bound >= plan.solver.objective


def _case(rng: random.Random):
    mixed = rng.random() < 0.3  # heterogeneous profiles on one node (keeps the brute force small)
    pools = [FleetPool("a", "MI300X", tuple(f"a{i}" for i in range(1 if mixed else rng.randint(1, 2))),
                       2 if mixed else rng.choice([1, 2]), heterogeneous=mixed),
             FleetPool("b", rng.choice(["MI325X", "MI355X"]), ("b0",), 1)]
    demands = [demand(f"m{i}", rng.choice([3, 10, 20, 30, 45, 60, 100, 150, 300]), rng.randint(1, 4), rng.randint(0, 9))
               for i in range(rng.randint(1, 3))]
    return pools, demands


@pytest.mark.parametrize("seed", range(16))
def test_placed_priority_equals_brute_force(seed):
    pools, demands = _case(random.Random(seed))
    plan = plan_fleet(pools, demands, FleetPolicy(HEADROOM, time_budget_s=5))
    check_plan(plan, pools, demands)
    assert plan.solver.objective == oracle(pools, demands), (pools, demands)
    assert plan.solver.gap == 0.0


def test_unplaceable_model_says_pods_cannot_span_nodes():
    pools = [FleetPool("a", "MI300X", ("a0", "a1"), 2)]
    demands = [demand("huge", 900, 1, 5), demand("small", 10, 2, 1)]
    plan = plan_fleet(pools, demands, FleetPolicy(HEADROOM, 5))
    check_plan(plan, pools, demands)
    assert [p.model for p in plan.placements] == ["small", "small"]
    (u,) = plan.unplaceable
    assert u.model == "huge" and "cannot span nodes" in u.reason and "MI300X SPX+NPS1" in u.reason


def test_priority_decides_when_room_is_short_and_the_reason_says_so():
    pools = [FleetPool("a", "MI300X", ("a0",), 1, heterogeneous=False)]
    demands = [demand("hi", 100, 1, 9), demand("lo", 100, 1, 0)]
    plan = plan_fleet(pools, demands, FleetPolicy(HEADROOM, 5))
    assert [p.model for p in plan.placements] == ["hi"]
    assert plan.unplaceable[0].model == "lo" and "higher-priority" in plan.unplaceable[0].reason


def test_pinned_pool_keeps_its_profile_and_fewer_profiles_win_ties():
    from gpu_sharing.hardware.dcm import DcmProfile, ProfileEntry, profile_name

    entries = (ProfileEntry(PartitionType(C.CPX, M.NPS4), 2),)
    pinned = DcmProfile(profile_name("MI300X", entries), entries)
    pools = [FleetPool("a", "MI300X", ("a0", "a1"), 2, pinned=pinned), FleetPool("b", "MI300X", ("b0",), 2)]
    demands = [demand("s", 5, 4, 1)]
    plan = plan_fleet(pools, demands, FleetPolicy(HEADROOM, 5))
    assert {n.profile.name for n in plan.nodes if n.pool == "a"} == {"mi300x-2-cpx-nps4"}
    check_plan(plan, pools, demands)
    assert plan.distinct_profiles == len({n.profile.name for n in plan.nodes})


def test_same_input_same_plan():
    pools, demands = _case(random.Random(3))
    a = plan_fleet(pools, demands, FleetPolicy(HEADROOM, 5))
    b = plan_fleet(pools, demands, FleetPolicy(HEADROOM, 5))
    assert a.nodes == b.nodes and a.placements == b.placements
