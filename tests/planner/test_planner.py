"""Planner behaviour: operator scenarios (table-driven), least disruption, properties (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from builders import demand, gpu, node
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner import plan
from gpu_sharing.planner.types import GpuPolicy, PlannerPolicy, RunningInstance
from reference_optimum import check_plan, gpu_layouts

POLICY = PlannerPolicy()


def running_from(p, demands) -> list[RunningInstance]:
    fp = {d.name: d.fingerprint for d in demands}
    return [RunningInstance(x.instance_id, x.model, x.replica, fp[x.model], x.partitions, x.memory_bytes_per_rank)
            for x in p.placements]


def converged(inv: Inventory, p) -> Inventory:
    """The inventory after applying p's modes (no processes)."""
    return Inventory(tuple(gpu(t.gpu, inv.gpu(t.gpu).model, t.compute_mode.value, t.memory_mode.value)
                           for t in p.gpus))


def launcher_accepts(cus: int, tenants: dict) -> bool:
    """isolation/cu_masks.resolve_cu_counts (what the launcher runs) on one partition's tenants
    (instance id -> compute share or None)."""
    from gpu_sharing.errors import UserError
    from gpu_sharing.isolation.cu_masks import resolve_cu_counts

    try:
        resolve_cu_counts(cu_count=cus, requests=tenants)
    except UserError:
        return False
    return True


def check_invariants(inv: Inventory, p, policy=POLICY) -> None:
    targets = {t.gpu: t for t in p.gpus}
    used = defaultdict(int)
    shares = defaultdict(float)
    tenants = defaultdict(dict)
    for t in p.gpus:
        spec = get_spec(inv.gpu(t.gpu).model)
        assert spec.is_valid(t.compute_mode, t.memory_mode)
    for pl in p.placements:
        assert len(pl.partitions) == pl.tp == len(set(pl.partitions))
        assert len({inv.gpu(r.gpu).hive_id for r in pl.partitions}) == 1
        for r in pl.partitions:
            used[r] += pl.memory_bytes_per_rank
            shares[r] += pl.compute_share or 0
            tenants[r][pl.instance_id] = pl.compute_share
    for r, b in used.items():
        spec = get_spec(inv.gpu(r.gpu).model)
        cap = spec.vram_per_partition_bytes(targets[r.gpu].compute_mode)
        assert b <= cap * (1 - policy.headroom_fraction) + 1
        assert r.index < spec.partitions(targets[r.gpu].compute_mode)
        assert shares[r] <= 1 + 1e-9
        assert launcher_accepts(spec.cus_per_partition(targets[r.gpu].compute_mode), tenants[r]), tenants[r]
    for u in p.unplaceable:
        assert u.reason.strip()


CASES = {
    "70b-plus-sixteen-8b": (node(8), [demand("llama-70b", 141, 1, 10), demand("llama-8b", 16, 16, 5)], 17),
    "405b-fp8-spans-node": (node(8), [demand("llama-405b-fp8", 405, 1, 10, tps=(8,), heads=128)], 1),
    "mixed-mi300x-mi325x": (Inventory((gpu(0), gpu(1, "MI325X"))), [demand("big", 200, 1, 5), demand("s", 16, 6, 1)], 7),
    "pinned-cpx": (node(2), [demand("llama-8b", 16, 16, 5, tps=(1,)), demand("qwen-7b", 15, 4, 1, tps=(1,))], 16),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_operator_scenarios(case):
    inv, demands, expected_placed = CASES[case]
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(g.index, C.CPX) for g in inv.gpus)) if case == "pinned-cpx" else POLICY
    p = plan(inv, demands, [], policy)
    check_invariants(inv, p, policy)
    assert len(p.placements) == expected_placed
    if case == "405b-fp8-spans-node":
        assert p.placements[0].tp == 8 and len({r.gpu for r in p.placements[0].partitions}) == 8
    if case == "mixed-mi300x-mi325x":
        big = next(x for x in p.placements if x.model == "big")
        assert big.gpu == 1  # only the 256 GiB MI325X holds 200 GiB in one partition
    if case == "pinned-cpx":
        assert all(t.compute_mode == C.CPX for t in p.gpus)
        assert len(p.unplaceable) == 4 and all("higher-priority" in u.reason for u in p.unplaceable)


def test_priority_eviction_stops_lower_priority_running_instance():
    inv = node(1)
    low = demand("low", 150, 1, 1)
    first = plan(inv, [low], [], POLICY)
    running = running_from(first, [low])
    high = demand("high", 150, 1, 9)
    second = plan(converged(inv, first), [low, high], running, POLICY)
    assert [x.model for x in second.placements] == ["high"]
    assert second.to_stop == ("low-0",)
    assert "displaced by higher-priority high-0" in second.unplaceable[0].reason


def test_converged_state_has_zero_actions_except_unchanged():
    inv = node(8)
    demands = [demand("llama-70b", 141, 1, 10), demand("llama-8b", 16, 16, 5)]
    first = plan(inv, demands, [], POLICY)
    again = plan(converged(inv, first), demands, running_from(first, demands), POLICY)
    assert not again.has_changes
    assert {a.kind.value for a in again.actions} == {"unchanged"}


def test_adding_a_model_never_moves_others_when_room_exists():
    inv = node(8)
    demands = [demand("a", 16, 4, 1), demand("b", 30, 2, 1)]
    first = plan(inv, demands, [], POLICY)
    running = running_from(first, demands)
    second = plan(converged(inv, first), demands + [demand("new", 10, 1, 0)], running, POLICY)
    assert second.to_stop == ()
    assert [x.model for x in second.to_start] == ["new"]
    assert set(second.unchanged) == {r.instance_id for r in running}


def test_changed_fingerprint_restarts_only_that_model():
    inv = node(2)
    demands = [demand("a", 16, 2, 1), demand("b", 16, 2, 1)]
    first = plan(inv, demands, [], POLICY)
    changed = [demands[0], demand("b", 16, 2, 1, fingerprint="f2")]
    second = plan(converged(inv, first), changed, running_from(first, demands), POLICY)
    assert set(second.to_stop) == {"b-0", "b-1"} and {x.model for x in second.to_start} == {"b"}
    was = {x.instance_id: x.partitions for x in first.placements}
    assert all(x.partitions == was[x.instance_id] for x in second.to_start)  # restarts where it ran


def test_unplaceable_reason_names_need_and_largest_partition():
    p = plan(node(1), [demand("huge", 600, 1, 1, tps=(1,))], [], POLICY)
    reason = p.unplaceable[0].reason
    assert "needs" in reason and "largest partition possible" in reason and "GiB" in reason


def test_deterministic():
    inv = node(4)
    demands = [demand(f"m{i}", 8 + 7 * i, 2, i % 3) for i in range(6)]
    assert plan(inv, demands, [], POLICY) == plan(inv, demands, [], POLICY)


def free_room(inv: Inventory, p, policy) -> dict:
    """(gpu, partition) -> (hive, total bytes, free bytes, free share, CUs, tenants) after ``p``,
    from the catalog (benchmarks/reference_optimum.py's layouts), not from the planner's slots."""
    layouts = gpu_layouts(inv, policy)
    room = {}
    for t in p.gpus:
        parts = next(ps for c, m, ps in layouts[t.gpu] if (c, m) == (t.compute_mode, t.memory_mode))
        for part in parts:
            room[part.gpu, part.index] = [part.hive, part.total_bytes, part.capacity_bytes, 1.0, part.cus, {}]
    for x in p.placements:
        for r in x.partitions:
            room[r.gpu, r.index][2] -= x.memory_bytes_per_rank
            room[r.gpu, r.index][3] -= x.compute_share or 0.0
            room[r.gpu, r.index][5][x.instance_id] = x.compute_share
    return room


def fits_somewhere(d, room) -> bool:
    """Whether one more instance of ``d`` fits the room left: some tp, tp distinct partitions of one hive."""
    for tp, need in d.bytes_per_rank_by_tp.items():
        per_hive = defaultdict(int)
        for (g, _k), (hive, total, free, share, cus, tenants) in room.items():
            if (need <= free and (d.compute_share or 0.0) <= share + 1e-9 and total >= d.min_partition_bytes
                    and (d.allowed_gpus is None or g in d.allowed_gpus)
                    and launcher_accepts(cus, {**tenants, "one-more": d.compute_share})):
                per_hive[hive] += 1
        if any(n >= tp for n in per_hive.values()):
            return True
    return False


def one_gpu_can_hold(inv: Inventory, d, policy) -> bool:
    """The first pass's rule 2 condition: some GPU, in some mode it may take, holds one instance alone."""
    pinned = {g.gpu: g.compute_mode for g in policy.gpus if g.compute_mode}
    for g in inv.gpus:
        spec = get_spec(g.model)
        modes = [pinned[g.index]] if g.index in pinned else [c for c in spec.compute_modes()
                                                             if spec.is_valid(c, g.memory_mode)]
        for c in modes:
            cap = spec.vram_per_partition_bytes(c) * (1 - policy.headroom_fraction)
            if any(b <= cap and tp <= spec.partitions(c) for tp, b in d.bytes_per_rank_by_tp.items()):
                return True
    return False


@settings(max_examples=30, deadline=None)
@given(kinds=st.lists(st.sampled_from(["MI300X", "MI325X"]), min_size=1, max_size=4),
       sizes=st.lists(st.tuples(st.integers(2, 250), st.integers(0, 4), st.integers(0, 5),
                                st.sampled_from([None, None, 0.25, 0.5])), min_size=1, max_size=8),
       pinned=st.sampled_from([None, "CPX", "QPX", "DPX"]), local=st.booleans())
def test_properties(kinds, sizes, pinned, local):
    """Every plan is feasible and maximal (no unplaced replica fits the room it leaves, with
    compute shares); under prefer_local_tp a model one GPU can hold never spans GPUs. Nodes
    mix MI300X (192 GiB) and MI325X (256 GiB): a model may fit one alone and not the other."""
    _check_properties(kinds, sizes, pinned, local)


MIXED_NODE_CASES = [
    # decode raised "solution counts do not split into tensor-parallel groups": the 244 GiB
    # model at tp=2 spans two MI300X but is local on the MI325X in DPX, and the configuration
    # model (mip.py) gave the whole class the first GPU's scope (hive), so an instance had
    # both ranks on the MI325X under a scope that the decoder reads per GPU
    pytest.param(["MI300X", "MI300X", "MI300X", "MI325X"], [(2, 5, 0, 0.5), (244, 2, 0, 0.25)], None, False,
                 id="one-class-two-scopes-full-set"),
    pytest.param(["MI300X", "MI300X", "MI300X", "MI325X"], [(2, 5, 0, 0.5), (244, 2, 0, 0.25)], None, True,
                 id="one-class-two-scopes-local-rules"),
    # the 185 GiB model fits the MI325X alone, so rule 2 keeps it on one GPU everywhere; its
    # second replica spanned the two MI300X at tp=2 (rule 2 was read per GPU)
    pytest.param(["MI300X", "MI300X", "MI325X"], [(185, 2, 0, None)], None, True, id="local-rule-spans-gpus"),
]


@pytest.mark.parametrize("kinds, sizes, pinned, local", MIXED_NODE_CASES)
def test_properties_on_mixed_nodes(kinds, sizes, pinned, local):
    """Issue 19's two mixed-node bugs (hypothesis found them; shrunk by hand to these)."""
    _check_properties(kinds, sizes, pinned, local)


def test_local_rule_on_a_mixed_node_names_the_rule():
    """Under prefer_local_tp the second 185 GiB replica stays out (no MI300X holds it alone),
    and the reason says the rule keeps it out, not priority or GPU count."""
    inv = Inventory((gpu(0), gpu(1), gpu(2, "MI325X")))
    p = plan(inv, [demand("m", 185, 2, 0)], [], PlannerPolicy(prefer_local_tp=True))
    assert [(x.replica, x.gpu) for x in p.placements] == [(0, 2)]
    reason = p.unplaceable[0].reason
    assert "planner.prefer_local_tp rules out" in reason and "tp=2 on 2 GPU(s)" in reason
    assert "add GPUs" not in reason and "priority" not in reason
    full = plan(inv, [demand("m", 185, 2, 0)], [], POLICY)  # the full set places both
    assert sorted(len({r.gpu for r in x.partitions}) for x in full.placements) == [1, 2]


def test_every_solver_answer_decodes_on_a_mixed_node():
    """What decode.py assumes of a counts solution (a tp-t class with n instances: t*n ranks
    of one scope, at most n on a partition, at most n on a GPU when spanning one per GPU) holds
    for the configuration model and CP-SAT on the mixed node where it once did not."""
    from gpu_sharing.planner.decode import to_packing
    from gpu_sharing.planner.dominance import restrict
    from gpu_sharing.planner.exact import solve_placed_priority
    from gpu_sharing.planner.mip import solve_by_configurations
    from gpu_sharing.planner.problem import build_problem

    inv = Inventory(tuple(gpu(i, k) for i, k in enumerate(["MI300X", "MI300X", "MI300X", "MI325X"])))
    demands = [demand("s", 2, 5, 0, share=0.5), demand("big", 244, 2, 0, share=0.25)]
    for full in (False, True):
        prob = build_problem(inv, demands, POLICY, full=full)
        if not full:
            prob = restrict(prob)[0]
        answers = [solve_placed_priority(prob, None, 1.0)]
        if not full:  # told what the greedy reached, as plan() does: SCIP then found the broken answer
            answers += [solve_by_configurations(prob, 1.0, at_least) for at_least in (0, 6)]
        for res in answers:
            assert res is not None and res.solution is not None
            packing = to_packing(prob, res.solution, demands, [])
            assert sum(a.item.weight for a in packing.assignments.values()) == res.objective


def _check_properties(kinds, sizes, pinned, local):
    inv = Inventory(tuple(gpu(i, k) for i, k in enumerate(kinds)))
    demands = [demand(f"m{i}", gb, reps, prio, share=share) for i, (gb, reps, prio, share) in enumerate(sizes)]
    gpus = tuple(GpuPolicy(i, C(pinned)) for i in range(len(kinds))) if pinned else ()
    policy = PlannerPolicy(gpus=gpus, prefer_local_tp=local, time_budget_s=0.5)  # the properties hold at any budget
    p = plan(inv, demands, [], policy)
    check_invariants(inv, p, policy)
    assert check_plan(inv, demands, policy, p) == []
    assert len(p.placements) + len(p.unplaceable) == sum(d.replicas for d in demands)
    assert 0 <= p.solver.gap <= 1 and p.solver.objective <= p.solver.bound
    by_name = {d.name: d for d in demands}
    if not local:
        assert [u.model for u in p.unplaceable if fits_somewhere(by_name[u.model], free_room(inv, p, policy))] == []
    for x in p.placements:
        if local and len({r.gpu for r in x.partitions}) > 1:
            assert not one_gpu_can_hold(inv, by_name[x.model], policy), f"{x.instance_id} spans GPUs"
    room = free_room(inv, p, policy)  # "add GPUs" never where the room left holds it over the full set
    assert [u.model for u in p.unplaceable if "add GPUs" in u.reason and fits_somewhere(by_name[u.model], room)] == []


def test_reason_names_a_cpx_pin_not_priority():
    """Issue 19: a 300 GB model on 2 x MI300X with GPU 1 pinned to CPX: the pin binds (its
    ranks need at least 39 GiB, CPX partitions hold 23 GiB), not priority and not GPU count."""
    p = plan(node(2), [demand("huge", 300, 1, 5)], [], PlannerPolicy(gpus=(GpuPolicy(1, C.CPX),)))
    reason = p.unplaceable[0].reason
    assert "GPUs [1] are pinned to ['CPX']" in reason and "hold no rank" in reason
    assert "add GPUs" not in reason and "priority" not in reason


def _reason(inv, demands, policy) -> str:
    p = plan(inv, demands, [], policy)
    check_invariants(inv, p, policy)
    assert len(p.unplaceable) == 1
    return p.unplaceable[0].reason


def test_reason_names_the_reload_setting():
    """GPU 0 is in CPX+NPS4 (NPS4 allows only CPX: 23 GiB partitions) and its config pins NPS1,
    which needs a driver reload; allow_driver_reload is false, so that setting binds."""
    from gpu_sharing.hardware.modes import MemoryPartitionMode as M

    inv = Inventory((gpu(0, compute="CPX", memory="NPS4"),))
    policy = PlannerPolicy(gpus=(GpuPolicy(0, None, M.NPS1),), allow_driver_reload=False)
    reason = _reason(inv, [demand("big", 100, 1, 5, tps=(1,))], policy)
    assert "node.allow_driver_reload is false" in reason and "gpu 0 NPS4 (pinned NPS1)" in reason
    assert "add GPUs" not in reason and "priority" not in reason and "pinned to" not in reason
    assert plan(inv, [demand("big", 100, 1, 5, tps=(1,))], [], replace(policy, allow_driver_reload=True)).placements


def test_reason_names_the_hive():
    """A 405 GiB model needs 4 MI300X (tp=4) or 8 DPX partitions (tp=8); the node has 4 GPUs,
    but in two hives of 2, and ranks of one instance must share a hive."""
    inv = Inventory(tuple(gpu(i, hive=1 + i // 2) for i in range(4)))
    reason = _reason(inv, [demand("huge", 405, 1, 5)], POLICY)
    assert "one XGMI hive" in reason and "hive 1: GPUs [0, 1]" in reason and "hive 2: GPUs [2, 3]" in reason
    assert "priority" not in reason and "largest partition possible" not in reason
    assert plan(Inventory(tuple(gpu(i) for i in range(4))), [demand("huge", 405, 1, 5)], [], POLICY).placements


@pytest.mark.parametrize("other_priority, says", [(9, "higher-priority models took the room (high)"),
                                                  (0, "replicas of equal or lower priority")])
def test_reason_names_priority_only_when_it_binds(other_priority, says):
    """Two 150 GiB models, one MI300X: one fits alone, both do not; the one left out is told
    the truth about the other's priority (and more GPUs would place it)."""
    reason = _reason(node(1), [demand("high", 150, 1, other_priority), demand("low", 150, 1, 0)], POLICY)
    assert says in reason and "add GPUs" in reason and "pinned" not in reason


def test_reason_names_prefer_local_tp_when_the_full_set_places_more():
    """The 244 GiB model fits the MI325X alone, so the rule keeps its second replica off the
    MI300X; over the full set the planner places it (by moving the small model's replicas),
    so the reason names the rule, not priority, and does not suggest more GPUs."""
    inv = Inventory(tuple(gpu(i, k) for i, k in enumerate(["MI300X", "MI300X", "MI300X", "MI325X"])))
    demands = [demand("s", 2, 5, 0, share=0.5), demand("big", 244, 2, 0, share=0.25)]
    reason = _reason(inv, demands, PlannerPolicy(prefer_local_tp=True))
    assert "planner.prefer_local_tp rules out" in reason and "places 2 of its replicas" in reason
    assert "add GPUs" not in reason and "priority of" not in reason and "lower priority" not in reason
    assert len(plan(inv, demands, [], POLICY).placements) == 7


def test_pinned_nps_without_driver_reload_is_a_warning():
    from gpu_sharing.hardware.modes import MemoryPartitionMode as M

    policy = PlannerPolicy(gpus=(GpuPolicy(0, C.CPX, M.NPS4),), allow_driver_reload=False)
    p = plan(node(1), [demand("a", 10, 1, 1)], [], policy)
    assert any("memory_partition NPS4 pinned" in w and "allow_driver_reload is false" in w for w in p.warnings)
    assert p.gpus[0].memory_mode.value == "NPS1"
    assert plan(node(1), [demand("a", 10, 1, 1)], [], PlannerPolicy()).warnings == ()


def test_reported_memory_caps_narrow_the_catalogs_modes():
    """amdsmi's memory-partition caps (the firmware's offer) are used together with the catalog (issue 14)."""
    from dataclasses import replace

    from gpu_sharing.planner.problem import layouts_for
    from gpu_sharing.hardware.modes import MemoryPartitionMode as M
    from gpu_sharing.planner.types import PlannerPolicy

    inv = node(1)
    full = {(lay.compute, lay.memory) for lay in layouts_for(inv, PlannerPolicy(allow_driver_reload=True))[0].layouts}
    assert (C.CPX, M.NPS4) in full
    only_nps1 = replace(inv, gpus=(replace(inv.gpus[0], memory_caps=(M.NPS1,)),))
    narrowed = layouts_for(only_nps1, PlannerPolicy(allow_driver_reload=True))[0].layouts
    assert {lay.memory for lay in narrowed} == {M.NPS1}


def test_tenants_without_a_share_keep_cus_on_a_partition_with_shares():
    """Two 0.5-share replicas and a priority-5 model without a share on one MI300X: stacking all
    three on the SPX partition would leave the model without a share 0 CUs, which
    isolation/cu_masks.resolve_cu_counts (what the launcher uses) refuses; the plan must not."""
    from gpu_sharing.isolation.cu_masks import resolve_cu_counts

    p = plan(node(1), [demand("a", 4, 2, 1, share=0.5), demand("b", 4, 1, 5)], [], POLICY)
    by_partition = defaultdict(dict)
    for x in p.placements:
        for r in x.partitions:
            by_partition[r][x.instance_id] = x.compute_share
    cus = {t.gpu: get_spec(node(1).gpu(t.gpu).model).cus_per_partition(t.compute_mode) for t in p.gpus}
    for ref, requests in by_partition.items():
        resolve_cu_counts(cu_count=cus[ref.gpu], requests=requests)  # raised UserError before the CU rule
