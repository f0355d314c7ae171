"""The pattern step (patterns.py, pattern_master.py) against independent references.

The step is what closes the layout search's gaps on fragmented partitions (CPX) and with pinned
tp or compute shares. Checked here: its pricing finds the best pattern that exhaustive
enumeration finds; from nothing placed it reaches the optimum the exhaustive search
(benchmarks/reference_optimum.brute_force, written without the planner) reports on small
pinned-CPX nodes, and its plans pass the independent check_plan; its LP bound is never below
that optimum; counts that do not split into instances lose instances, never validity."""

from __future__ import annotations

import itertools
import random

import pytest
from builders import GIB, demand, gpu
from reference_optimum import brute_force, check_plan, placed_priority
from test_planner import launcher_accepts

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner.assemble import to_plan
from gpu_sharing.planner.fill import placed_weight
from gpu_sharing.planner.packing import Packing, build_slots, items_for
from gpu_sharing.planner.pattern_master import improve
from gpu_sharing.planner.patterns import build_space, to_packing, valid
from gpu_sharing.planner.pricing import price
from gpu_sharing.planner.types import GpuPolicy, PlannerPolicy, SolverInfo


def _pinned_cpx(seed: int):
    """1-2 GPUs pinned to CPX (8 partitions of 24 or 32 GiB each) and more than fits: models
    that need several partitions or share them, tp free or pinned above 1, some with
    compute shares."""
    rng = random.Random(seed)
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), "CPX") for i in range(rng.choice([1, 2]))))
    demands = [demand(f"m{i}", rng.choice([10, 20, 30, 45, 60]), rng.randint(1, 2 * len(inv.gpus) + 1),
                      rng.randint(0, 9), tps=rng.choice([(1, 2, 4, 8), (2,), (4,)]),
                      share=rng.choice([None, None, 0.5]))
               for i in range(rng.randint(3, 4))]
    return inv, demands, PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C.CPX) for g in inv.gpus))


def _from_nothing(inv, demands, policy):
    """The step started from an empty plan (nothing placed): all it finds is its own."""
    specs = {g.index: get_spec(g.model) for g in inv.gpus}
    modes = {g.index: C.CPX for g in inv.gpus}
    empty = Packing({}, items_for(demands), {}, build_slots(inv, modes, specs, policy))
    everything = sum((d.priority + 1) * d.replicas for d in demands)
    return improve(inv, demands, policy, specs, {g: [C.CPX] for g in modes}, modes, empty, everything), modes


@pytest.mark.parametrize("seed", [1, 2, 3, 6, 8, 10])  # not everything fits; the brute force takes < 0.3 s
def test_from_nothing_the_step_reaches_the_brute_force_optimum(seed):
    inv, demands, policy = _pinned_cpx(seed)
    exact = brute_force(inv, demands, policy)
    assert exact < sum((d.priority + 1) * d.replicas for d in demands)  # a real choice
    better, modes = _from_nothing(inv, demands, policy)
    assert better.bound is not None and better.bound >= exact - 1e-6  # the LP bounds the optimum
    if exact == 0:
        assert better.packing is None
        return
    assert better.packing is not None
    memory = {g.index: g.memory_mode for g in inv.gpus}
    info = SolverInfo("pattern-lp", float(placed_weight(better.packing)), better.bound, 0.0)
    p = to_plan(inv, demands, [], policy, better.modes, memory, better.packing, info)
    assert check_plan(inv, demands, policy, p) == []
    assert placed_priority(p, demands) == exact


def _best_by_enumeration(space, t, value, cu_rule: bool = True):
    """Every pattern of type t (counts up to the model's replicas and the partition's bytes), the
    best total value the launcher accepts: within bytes, shares summing to at most 1, and
    CUs as cu_masks.resolve_cu_counts gives them (its own code, not the planner's)."""
    pt = space.types[t]
    cls = [ci for ci in pt.admits if value.get(ci, 0) > 0]
    ranges = [range(min(space.classes[ci].demand.replicas, pt.capacity_bytes // space.classes[ci].bytes_per_rank) + 1)
              for ci in cls]
    best = 0.0
    for counts in itertools.product(*ranges):
        used = sum(space.classes[ci].bytes_per_rank * n for ci, n in zip(cls, counts))
        tenants = {f"{ci}-{k}": space.classes[ci].demand.compute_share for ci, n in zip(cls, counts) for k in range(n)}
        if used <= pt.capacity_bytes and (launcher_accepts(pt.cus, tenants) if cu_rule else
                                          sum(v or 0.0 for v in tenants.values()) <= 1.0 + 1e-9):
            best = max(best, sum(value[ci] * n for ci, n in zip(cls, counts)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_pricing_finds_the_best_pattern_exhaustive_enumeration_finds(seed):
    rng = random.Random(seed)
    inv = Inventory((gpu(0, rng.choice(["MI300X", "MI325X"]), "SPX"),))
    demands = [demand(f"m{i}", rng.choice([6, 14, 30, 60, 90]), rng.randint(1, 4), rng.randint(0, 9),
                      tps=rng.choice([(1, 2), (1,), (2, 4)]), share=rng.choice([None, 0.2, 0.25, 0.5]))
               for i in range(3)]
    policy = PlannerPolicy()
    specs = {0: get_spec(inv.gpus[0].model)}
    space = build_space(inv, demands, policy, specs, {0: [C.SPX, C.QPX]})
    for t, pt in enumerate(space.types):
        value = {ci: rng.choice([0.0, rng.uniform(0.1, 10.0)]) for ci in pt.admits}
        found, pattern, exact, _cells = price(space, t, value)
        assert exact  # the benchmark-like sizes share a unit: no rounding
        assert found == pytest.approx(_best_by_enumeration(space, t, value))
        assert sum(value[ci] * n for ci, n in pattern) == pytest.approx(found)  # its pattern is worth that


def test_pricing_on_cpx_partitions_obeys_the_launchers_cu_rule():
    """CPX partitions (38 CUs) full of small ranks, with 0.1-0.5 shares and ranks without one,
    where both halves of the CU rule bind (eleven 0.1 shares take 33 CUs but sum to 1.1;
    0.5 + 0.25 + 0.25 leaves no CU for a rank without a share): the pricing finds what
    exhaustive enumeration under the launcher's own rule finds, and the CU half of the rule
    changed the best pattern in some of the cases."""
    binding = 0
    for seed in range(6):
        rng = random.Random(100 + seed)
        inv = Inventory((gpu(0, "MI300X", "CPX"),))
        demands = [demand(f"m{i}", rng.choice([0.5, 1.5, 3]), rng.randint(3, 12), rng.randint(0, 9), tps=(1,),
                          share=share) for i, share in enumerate(rng.sample([None, None, 0.1, 0.25, 0.5], 3))]
        policy = PlannerPolicy(gpus=(GpuPolicy(0, C.CPX),))
        space = build_space(inv, demands, policy, {0: get_spec("MI300X")}, {0: [C.CPX]})
        (t,) = range(len(space.types))
        for _ in range(4):
            value = {ci: rng.uniform(0.1, 10.0) for ci in space.types[t].admits}
            found, pattern, exact, _cells = price(space, t, value)
            assert exact
            assert found == pytest.approx(_best_by_enumeration(space, t, value))
            assert sum(value[ci] * n for ci, n in pattern) == pytest.approx(found)
            binding += found < _best_by_enumeration(space, t, value, cu_rule=False) - 1e-9
    assert binding > 0


def test_counts_that_do_not_split_lose_an_instance_not_validity():
    """Two ranks of a tp=2 class on one partition need two instances; told one, the decode
    forms that one on two distinct partitions and leaves the rest to the final fill."""
    inv = Inventory((gpu(0, "MI300X", "CPX"),))
    demands = [demand("a", 8, 2, 5, tps=(2,))]
    policy = PlannerPolicy(gpus=(GpuPolicy(0, C.CPX),))
    specs = {0: get_spec("MI300X")}
    space = build_space(inv, demands, policy, specs, {0: [C.CPX]})
    slots = build_slots(inv, {0: C.CPX}, specs, policy)
    (ci,) = [ci for ci, c in enumerate(space.classes) if c.tp == 2]
    packing = to_packing(space, slots, {(0, ((ci, 2),)): 1, (0, ((ci, 1),)): 1}, {(ci, 1): 1}, policy)
    assert packing is not None and valid(space, packing)
    refs = [a.refs for a in packing.assignments.values()]
    assert all(len(set(r)) == 2 for r in refs) and len(refs) == 2  # one decoded, one by the final fill
    assert demands[0].bytes_per_rank_by_tp[2] < 24 * GIB


@pytest.mark.parametrize("seed", range(0, 30, 2))
def test_every_mode_two_hives_pins_and_shares_from_nothing(seed):
    """The benchmark reference's own small cases (every mode, tp, share, GPU pin, NPS choice, two
    hives): from nothing placed, over the planner's candidate modes, the step's plan passes
    check_plan and places the brute-force optimum when its candidates are every layout (no
    more otherwise), and its bound is never below that optimum."""
    from test_reference_colgen import small_case

    from gpu_sharing.planner import planner as pipeline
    from gpu_sharing.planner.pattern_master import every_layout
    from gpu_sharing.planner.problem import build_problem

    inv, demands, policy = small_case(seed)
    specs = {g.index: get_spec(g.model) for g in inv.gpus}
    memory = pipeline.memory_targets(inv, policy, specs)
    candidates = pipeline.candidate_modes(inv, policy, specs, memory)
    modes = {g: c[0] for g, c in candidates.items()}
    empty = Packing({}, items_for(demands), {}, build_slots(inv, modes, specs, policy))
    better = improve(inv, demands, policy, specs, candidates, modes, empty, sum((d.priority + 1) * d.replicas
                                                                              for d in demands))
    exact = brute_force(inv, demands, policy)
    whole = every_layout(build_problem(inv, demands, policy, full=True), candidates)
    got = 0
    if better.packing is not None:
        info = SolverInfo("pattern-lp", 0.0, 0.0, 0.0)
        p = to_plan(inv, demands, [], policy, better.modes, memory, better.packing, info)
        assert check_plan(inv, demands, policy, p) == []
        got = placed_priority(p, demands)
    assert got == exact if whole else got <= exact
    if whole:
        assert better.bound is not None and better.bound >= exact - 1e-6


def test_on_a_pinned_cpx_node_the_step_places_more_whatever_the_wall_clock_guard(monkeypatch):
    """4 GPUs pinned to CPX where the layout search leaves a gap: the step places more than it
    (the status says how much), the plan passes check_plan, the reported bound is the LP's
    (tighter than the knapsack's, and the full-set search after it keeps it), and with the
    wall-clock guard 10x or 1000x the deterministic limits the plan is the same."""
    from dataclasses import replace

    from gpu_sharing.planner import exact, plan

    rng = random.Random(2)
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), "CPX") for i in range(4)))
    demands = [demand(f"m{i}", rng.choice([2, 6, 10, 14, 20, 30, 45, 60]), rng.randint(1, 6), rng.randint(0, 9))
               for i in range(8)]
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C.CPX) for g in inv.gpus))
    plans = []
    for factor in (exact.WALL_GUARD_FACTOR, 1000.0):
        monkeypatch.setattr(exact, "WALL_GUARD_FACTOR", factor)
        p = plan(inv, demands, [], policy)
        plans.append(replace(p, solver=replace(p.solver, wall_time_s=0.0)))
    p = plans[0]
    assert plans[0] == plans[1]
    assert check_plan(inv, demands, policy, p) == []
    status = p.solver.status.split("pattern LP")[1]
    step, search = (int(x) for x in status.split(" placed ")[1].split(")")[0].split(" (layout search "))
    assert step > search and placed_priority(p, demands) >= step
    lp_bound = int(status.split("LP bound ")[1].split(":")[0].split(";")[0])
    assert p.solver.bound == lp_bound >= placed_priority(p, demands)


@pytest.mark.parametrize("seed", range(4))
def test_the_listing_behind_the_exact_finish_finds_every_maximal_pattern_enumeration_finds(seed):
    """benchmarks/pattern_listing.py measures how many patterns an exact finish of the step would
    have to list (every maximal pattern worth at least a floor); its search must miss none:
    against every count vector, within bytes and the launcher's own CU rule, that no further
    rank of any class can join."""
    from pattern_listing import near

    rng = random.Random(50 + seed)
    inv = Inventory((gpu(0, rng.choice(["MI300X", "MI325X"]), "SPX"),))
    demands = [demand(f"m{i}", rng.choice([6, 14, 30, 60]), rng.randint(1, 3), rng.randint(0, 9),
                      tps=rng.choice([(1, 2), (1,), (2, 4)]), share=rng.choice([None, 0.2, 0.25, 0.5]))
               for i in range(3)]
    specs = {0: get_spec(inv.gpus[0].model)}
    space = build_space(inv, demands, PlannerPolicy(), specs, {0: [C.SPX, C.QPX]})
    listed = 0
    for t, pt in enumerate(space.types):
        value = {ci: rng.choice([0.0, rng.uniform(0.1, 10.0)]) for ci in pt.admits}
        cls = list(pt.admits)
        caps = [min(space.classes[ci].demand.replicas, pt.capacity_bytes // space.classes[ci].bytes_per_rank)
                for ci in cls]

        def fits(counts) -> bool:
            used = sum(space.classes[ci].bytes_per_rank * n for ci, n in zip(cls, counts))
            tenants = {f"{ci}-{k}": space.classes[ci].demand.compute_share for ci, n in zip(cls, counts)
                       for k in range(n)}
            return used <= pt.capacity_bytes and launcher_accepts(pt.cus, tenants)
        feasible = [c for c in itertools.product(*(range(m + 1) for m in caps)) if fits(c)]
        best = max(sum(value[ci] * n for ci, n in zip(cls, c)) for c in feasible)
        floor = 0.7 * best
        expected = set()
        for c in feasible:
            grown = [tuple(n + (j == i) for j, n in enumerate(c)) for i in range(len(cls)) if c[i] < caps[i]]
            if sum(value[ci] * n for ci, n in zip(cls, c)) >= floor - 1e-9 and not any(fits(g) for g in grown):
                expected.add(tuple(sorted((ci, n) for ci, n in zip(cls, c) if n)))
        found, _nodes, complete = near(space, t, value, floor, 10**6)
        assert complete
        assert {p for _v, p in found} == expected
        listed += len(expected)
    assert listed >= 3  # a real listing, not an empty one


def _layout_search(inv, demands, policy):
    from gpu_sharing.planner.layout_search import search_layouts
    from gpu_sharing.planner.problem import build_problem
    from gpu_sharing.planner.surrogate import surrogate
    specs = {g.index: get_spec(g.model) for g in inv.gpus}
    full = build_problem(inv, demands, policy, full=True)
    sur = surrogate(full)
    chosen = {full.demands[di].name: k for di, k in sur.chosen.items()}
    return specs, search_layouts(inv, demands, policy, specs, {g.index: [C.CPX] for g in inv.gpus}, chosen,
                                 sur.bound + 1)  # above the bound: the search does all its work


@pytest.mark.parametrize("seed", [8, 14, 17])  # cases where the search made several whole packings
def test_the_layout_search_hands_on_its_other_whole_plans_that_place_almost_as_much(seed, monkeypatch):
    import gpu_sharing.planner.layout_search as layout_search
    inv, demands, policy = _pinned_cpx(seed)
    near_best = layout_search.NEAR_BEST
    specs, found = _layout_search(inv, demands, policy)
    space = build_space(inv, demands, policy, specs, {g.index: [C.CPX] for g in inv.gpus})
    assert all(p is not found.packing and placed_weight(p) >= near_best * found.placed
               and valid(space, p) and not set(p.assignments) & {i.instance_id for i in p.unplaced}
               for p in found.near)
    monkeypatch.setattr(layout_search, "NEAR_BEST", 0.0)
    _specs, every = _layout_search(inv, demands, policy)
    assert every.near and all(placed_weight(p) <= found.placed for p in every.near)  # the best is handed on as such
    assert len(every.near) >= len(found.near)  # the same search, fewer left out
    assert any(placed_weight(p) < near_best * found.placed for p in every.near)  # some were left out
    monkeypatch.setattr(layout_search, "NEAR_BEST", 2.0)
    assert _layout_search(inv, demands, policy)[1].near == ()


def test_the_pattern_step_offers_the_near_plans_patterns_to_its_mip():
    """After the column generation, every partition pattern of the near plans is a column,
    and the LP (solved again) can only have gained from them."""
    from gpu_sharing.planner.pattern_master import _offer, generate
    from gpu_sharing.planner.patterns import patterns_of, type_index
    inv, demands, policy = _pinned_cpx(1)
    specs, found = _layout_search(inv, demands, policy)
    near = list(found.near) or [found.packing]
    space = build_space(inv, demands, policy, specs, {g.index: [C.CPX] for g in inv.gpus})
    master, value, _bound, _rounds = generate(space, [], 0, max_rounds=2)
    wanted = {(type_index(space, p.slots[ref]), pattern) for p in near
              for ref, pattern in patterns_of(space, p).items()}
    assert not wanted <= set(master.x)  # two rounds from nothing do not hold them all
    _offer(master, near)
    assert wanted <= set(master.x)
    solved = master.solve()
    assert solved is not None and solved[0] >= value - 1e-6
