"""The compute-aware second objective: empty GPUs are used before co-tenants stack, the
highest-priority model gets its fair CU share, and the plan says what compute each instance gets."""

from __future__ import annotations

from collections import Counter

from builders import GIB, demand, node
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_optimum import brute_force, check_plan, placed_priority
from test_planner import converged, running_from

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.isolation.cu_masks import resolve_cu_counts
from gpu_sharing.planner import plan
from gpu_sharing.planner.types import GpuPolicy, ModelDemand, PlannerPolicy

MI300X_CUS = 304


def _example_demands():
    """config/gpu-sharing.yaml's models with the bytes per rank gpu_sharing.sizing gives them
    (GiB, by tp): 70B at priority 100, 4 x 8B at 50, 2 x 7B at 40, 2 x 0.5B at 10 with a 0.5 compute share."""
    def d(name, replicas, prio, by_tp, share=None):
        return ModelDemand(name, replicas, prio, {tp: int(g * GIB) for tp, g in by_tp.items()}, "f1",
                           compute_share=share)
    return [d("llama-3.1-70b", 1, 100, {1: 139.7, 2: 69.8, 4: 34.9, 8: 17.5}),
            d("llama-3.1-8b", 4, 50, {1: 19.1, 2: 9.5, 4: 4.8, 8: 2.4}),
            d("qwen2.5-7b", 2, 40, {1: 17.2, 2: 8.6, 4: 4.3, 8: 2.2}),
            d("qwen2.5-0.5b", 2, 10, {1: 2.8, 2: 1.4, 4: 0.7, 8: 0.3}, share=0.5)]


def _fair_share(p, demands, instance_id, node_cus):
    """Water filling written here: node CUs in proportion to (priority + 1) x bytes, each capped
    at the CUs of the GPUs the instance occupies; what capped ones cannot use goes to the rest."""
    prio = {d.name: d.priority for d in demands}
    want = {x.instance_id: ((prio[x.model] + 1) * x.tp * x.memory_bytes_per_rank,
                            MI300X_CUS * len({r.gpu for r in x.partitions})) for x in p.placements}
    left, fair = float(node_cus), {}
    while want:
        total = sum(w for w, _c in want.values())
        capped = {i: c for i, (w, c) in want.items() if left * w / total >= c}
        if not capped:
            fair.update({i: left * w / total for i, (w, _c) in want.items()})
            break
        fair.update(capped)
        left -= sum(capped.values())
        want = {i: v for i, v in want.items() if i not in capped}
    return fair[instance_id]


def test_example_config_uses_every_gpu_and_gives_the_70b_its_fair_share():
    demands = _example_demands()
    p = plan(node(8), demands, [], PlannerPolicy())
    assert len(p.placements) == 9 and not p.unplaceable
    tenants = Counter(g for x in p.placements for g in {r.gpu for r in x.partitions})
    empty = [t.gpu for t in p.gpus if t.gpu not in tenants]
    assert not (empty and any(n > 1 for n in tenants.values())), (empty, tenants)
    big = next(x for x in p.placements if x.model == "llama-3.1-70b")
    assert big.compute_units >= _fair_share(p, demands, big.instance_id, 8 * MI300X_CUS) - 1
    assert big.compute_units == MI300X_CUS
    starts = [a for a in p.actions if a.kind.value == "start"]
    assert all("CUs" in a.detail for a in starts)


def test_compute_units_follow_the_cu_mask_rule():
    """On one partition: an explicit 0.5 share gets floor(0.5 x CUs); tenants without one split the rest."""
    demands = [ModelDemand("shared", 1, 5, {1: 4 * GIB}, "f1", compute_share=0.5),
               ModelDemand("plain", 2, 5, {1: 4 * GIB}, "f1")]
    p = plan(node(1), demands, [], PlannerPolicy())
    cus = {x.instance_id: x.compute_units for x in p.placements}
    assert cus == {"shared-0": 152, "plain-0": 76, "plain-1": 76}


def test_running_instances_are_not_moved_for_compute():
    """Spreading moves only instances about to start: a converged plan stays as it is, and a
    newcomer on a node with an empty GPU goes there."""
    demands = _example_demands()[1:3]
    inv = node(8)
    first = plan(inv, demands, [], PlannerPolicy())
    running = running_from(first, demands)
    again = plan(converged(inv, first), demands + [ModelDemand("new", 1, 0, {1: 4 * GIB}, "f1")], running,
                 PlannerPolicy())
    assert again.to_stop == () and set(again.unchanged) == {r.instance_id for r in running}
    new = next(x for x in again.placements if x.model == "new")
    assert not any(r.gpu == new.gpu for x in again.placements if x.model != "new" for r in x.partitions)


def test_top_priority_instance_gets_its_fair_share_when_a_co_tenant_can_move():
    """No GPU is empty, so spreading cannot help; the priority-9 model shares GPU 0 with a
    priority-0 one while GPU 1 has room for it: the co-tenant moves (placed priority unchanged)
    and the top instance gets the whole GPU, its fair share (independent water filling above)."""
    demands = [ModelDemand("top", 1, 9, {1: 101 * GIB}, "f1"), ModelDemand("big", 1, 0, {1: 101 * GIB}, "f1"),
               ModelDemand("small", 1, 0, {1: 51 * GIB}, "f1")]
    p = plan(node(2), demands, [], PlannerPolicy())
    assert len(p.placements) == 3
    top = next(x for x in p.placements if x.model == "top")
    assert top.compute_units >= _fair_share(p, demands, top.instance_id, 2 * MI300X_CUS) - 1
    assert [x.model for x in p.placements if x.gpu == top.gpu] == ["top"]


@settings(max_examples=25, deadline=None)
@given(models=st.lists(st.tuples(st.sampled_from([2, 6, 14, 40]), st.integers(1, 2), st.integers(0, 5),
                                 st.sampled_from([None, None, 0.25, 0.5, 0.75, 1.0, 0.02])), min_size=2, max_size=3),
       gpus=st.integers(1, 2), pinned=st.sampled_from([None, None, "CPX", "DPX"]))
def test_every_partition_gets_cu_masks_the_launcher_accepts(models, gpus, pinned):
    """Tenants with and without compute shares: every partition's set is one that
    isolation/cu_masks.resolve_cu_counts (what the launcher runs) accepts (shares of 1.0 beside
    a tenant without one, or 0.02 of a 38-CU CPX partition, are refused there), and the rule
    costs no placement an exhaustive search under the same rule finds (reference_optimum)."""
    inv = node(gpus)
    demands = [demand(f"m{i}", gb, reps, prio, share=share, tps=(1, 2))  # tp 4 and 8 make the brute force slow
               for i, (gb, reps, prio, share) in enumerate(models)]
    policy = PlannerPolicy(gpus=tuple(GpuPolicy(i, C(pinned)) for i in range(gpus)) if pinned else ())
    p = plan(inv, demands, [], policy)
    tenants: dict = {}
    for x in p.placements:
        for r in x.partitions:
            tenants.setdefault(r, {})[x.instance_id] = x.compute_share
    modes = {t.gpu: t.compute_mode for t in p.gpus}
    for ref, here in tenants.items():
        resolve_cu_counts(cu_count=get_spec("MI300X").cus_per_partition(modes[ref.gpu]), requests=here)
    assert check_plan(inv, demands, policy, p) == []
    assert placed_priority(p, demands) == brute_force(inv, demands, policy)


def test_a_tenant_without_a_share_is_not_stacked_on_shares_summing_to_one():
    """One MI300X pinned to SPX: two 0.5-share replicas (priority 1) take every CU of the
    partition, so the model without a share (priority 0) stays out although its bytes fit, and
    its reason says the compute, not the bytes, is taken."""
    p = plan(node(1), [demand("a", 4, 2, 1, share=0.5), demand("b", 4, 1, 0)], [],
             PlannerPolicy(gpus=(GpuPolicy(0, C.SPX),)))
    assert sorted(x.instance_id for x in p.placements) == ["a-0", "a-1"]
    reason = p.unplaceable[0].reason
    assert "the partition's compute is taken" in reason and "floor(share x CUs)" in reason


def _example_with_cu_count(cus: int):
    """config/gpu-sharing.yaml with the 0.5B model's limits.compute_share replaced by
    limits.cu_count: ``cus``, through the config loader and build_demands (sizing included)."""
    from pathlib import Path

    from gpu_sharing.config.loader import parse_config_text
    from gpu_sharing.reconcile.demands import build_demands

    path = Path(__file__).resolve().parents[2] / "config" / "gpu-sharing.yaml"
    text = path.read_text()
    assert "compute_share: 0.5" in text
    config = parse_config_text(text.replace("compute_share: 0.5", f"cu_count: {cus}"), str(path))
    demands, _policy, problems = build_demands(config, config_dir=path.parent)
    assert problems == ()
    return next(d for d in demands if d.name == "qwen2.5-0.5b")


def test_limits_cu_count_reaches_the_planner_and_its_cu_rule():
    """Two 0.5B replicas with limits.cu_count 200 cannot share one 304-CU SPX partition (the
    launcher refuses 400 CUs), nor use a 152-CU DPX partition at all; on two GPUs each gets
    its 200 CUs. A tenant without a limit beside a count gets what the count leaves."""
    small = _example_with_cu_count(200)
    assert small.cu_count == 200 and small.compute_share is None and small.cu_request == 200
    spx = plan(node(1), [small], [], PlannerPolicy(gpus=(GpuPolicy(0, C.SPX),)))
    assert [x.instance_id for x in spx.placements] == ["qwen2.5-0.5b-0"]
    assert "compute is taken" in spx.unplaceable[0].reason
    dpx = plan(node(1), [small], [], PlannerPolicy(gpus=(GpuPolicy(0, C.DPX),)))
    assert dpx.placements == () and len(dpx.unplaceable) == 2
    two = plan(node(2), [small], [], PlannerPolicy(gpus=(GpuPolicy(0, C.SPX), GpuPolicy(1, C.SPX))))
    assert sorted(x.compute_units for x in two.placements) == [200, 200]
    beside = plan(node(1), [_example_with_cu_count(300), demand("plain", 4, 1, 0)], [],
                  PlannerPolicy(gpus=(GpuPolicy(0, C.SPX),)))
    got = {x.model: x.compute_units for x in beside.placements}
    assert got == {"qwen2.5-0.5b": 300, "plain": 4}
    for p in (spx, two, beside):
        tenants: dict = {}
        for x in p.placements:
            for r in x.partitions:
                tenants.setdefault(r, {})[x.instance_id] = 300 if x.model == "qwen2.5-0.5b" and p is beside else (
                    200 if x.model == "qwen2.5-0.5b" else None)
        for here in tenants.values():
            resolve_cu_counts(cu_count=MI300X_CUS, requests=here)


def test_fewer_ranks_break_ties_after_priority_and_compute():
    """spread.py's tie-break: an instance about to start at tp=2 on two GPUs whose rank at tp=1
    fits one of its own partitions moves to tp=1 (placed priority unchanged, it keeps a whole
    GPU's CUs, its fair share here); a running one, or one whose tp=1 rank does not fit,
    stays as it is."""
    from gpu_sharing.hardware.inventory import PartitionRef
    from gpu_sharing.planner.packing import Assignment, Item, Packing
    from gpu_sharing.planner.spread import spread

    inv = node(2)
    modes = {0: C.SPX, 1: C.SPX}
    memory = {g.index: g.memory_mode for g in inv.gpus}

    def at_tp2(d):
        a = Assignment(Item(d.instance_id(0), d.name, 0, d.priority + 1, d), 2,
                       (PartitionRef(0, 0), PartitionRef(1, 0)), d.bytes_per_rank_by_tp[2])
        return Packing({a.item.instance_id: a}, [], {}, {})

    small, huge = demand("m", 30, 1, 3, tps=(1, 2)), demand("h", 200, 1, 3, tps=(1, 2))
    _modes, p = spread(inv, PlannerPolicy(), modes, memory, at_tp2(small), set(), may_repartition=False)
    (a,) = p.assignments.values()
    assert a.tp == 1 and len(a.refs) == 1 and a.bytes_per_rank == small.bytes_per_rank_by_tp[1]
    _modes, p = spread(inv, PlannerPolicy(), modes, memory, at_tp2(small), {"m-0"}, may_repartition=False)
    assert next(iter(p.assignments.values())).tp == 2
    _modes, p = spread(inv, PlannerPolicy(), modes, memory, at_tp2(huge), set(), may_repartition=False)
    assert next(iter(p.assignments.values())).tp == 2


def test_fair_share_is_capped_at_what_an_instance_can_get_where_it_is():
    """The fair CU share counts an explicit share and small partitions: a priority-9 model with
    a 0.25 share can never get more than 76 of an SPX partition's 304 CUs, and a tp=1 model on
    a pinned CPX node no more than 38 CUs; the plans give both that (benchmarks' top>=fair held
    in 13 of 35 plans when the cap was the GPUs' CUs)."""
    from gpu_sharing.planner.spread import cu_ceiling, fair_cus

    assert cu_ceiling(0.25, [304]) == 76 and cu_ceiling(None, [38, 38]) == 76 and cu_ceiling(100, [304]) == 100
    shared = [demand("top", 20, 1, 9, share=0.25, tps=(1,)), demand("low", 20, 3, 0, tps=(1,))]
    cpx = [demand("top", 10, 1, 9, tps=(1,)), demand("low", 2, 2, 0, tps=(1,))]
    for demands, policy, part_cus, ceiling in ((shared, PlannerPolicy(gpus=(GpuPolicy(0, C.SPX),)), MI300X_CUS, 76),
                                               (cpx, PlannerPolicy(gpus=(GpuPolicy(0, C.CPX),)), 38, 38)):
        p = plan(node(1), demands, [], policy)
        prio = {d.name: d.priority for d in demands}
        fair = fair_cus({x.instance_id: ((prio[x.model] + 1) * x.tp * x.memory_bytes_per_rank,
                                         frozenset(r.gpu for r in x.partitions),
                                         cu_ceiling(x.compute_share, [part_cus] * x.tp))
                         for x in p.placements}, {0: MI300X_CUS})
        top = next(x for x in p.placements if x.model == "top")
        assert fair["top-0"] <= ceiling and top.compute_units == ceiling >= fair["top-0"] - 1


def test_a_top_instance_trades_places_on_a_full_node():
    """Two full MI300X: the priority-9 instance splits GPU 0 with two others while GPU 1 holds
    two; no co-tenant fits elsewhere, so the top instance trades places with the same-sized
    priority-0 instance on GPU 1: 152 CUs instead of 101, placed priority unchanged; a running
    top instance stays."""
    from gpu_sharing.hardware.inventory import PartitionRef
    from gpu_sharing.planner.packing import Assignment, Item, Packing
    from gpu_sharing.planner.spread import spread

    inv = node(2)
    where = {"top": 0, "a": 0, "b": 0, "c": 1, "d": 1}
    demands = {n: demand(n, 120 if n == "c" else 60, 1, 9 if n == "top" else 0, tps=(1,)) for n in where}
    packing = Packing({f"{n}-0": Assignment(Item(f"{n}-0", n, 0, d.priority + 1, d), 1, (PartitionRef(where[n], 0),),
                                            d.bytes_per_rank_by_tp[1]) for n, d in demands.items()}, [], {}, {})
    modes, memory = {0: C.SPX, 1: C.SPX}, {g.index: g.memory_mode for g in inv.gpus}
    _m, p = spread(inv, PlannerPolicy(), modes, memory, packing, set(), may_repartition=False)
    assert p.assignments["top-0"].refs[0].gpu == 1 and p.assignments["d-0"].refs[0].gpu == 0
    assert all(s.within_limits() for s in p.slots.values())
    _m, p = spread(inv, PlannerPolicy(), modes, memory, packing, {"top-0"}, may_repartition=False)
    assert p.assignments["top-0"].refs[0].gpu == 0
