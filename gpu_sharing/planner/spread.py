"""The compute-aware second objective: use empty GPUs before stacking co-tenants (pure, deterministic).

Placed priority is decided first and this step never changes it: it only moves instances that
are about to start (never one that runs) from a GPU they share to a GPU nobody uses. Why: the
exact solvers count bytes, not compute, so an optimal plan may stack a 70B, an 8B, a 7B and a
0.5B on GPU 0 while GPUs 4-7 stay empty (issue 19: the 70B got 51 of 304 CUs).

Which instance moves first: the one furthest below its fair CU share. Fair shares
(``fair_cus``) split the node's CUs in proportion to priority + 1 times the instance's bytes
(tp x bytes per rank), each capped at what it can use at best where it is (``cu_ceiling``: the
CUs of its partitions, or its explicit share's or CU count's CUs of them, never more than its
GPUs');
what a capped instance cannot use goes to the others (water filling). An empty GPU takes the
coarsest compute mode that holds the instance (fewest partitions, most CUs per rank), unless
its mode is pinned or a repartition would drain the node while instances run; the instance
may take another tp there (it has not started yet). The move repeats while an empty GPU and a
shared GPU remain and some instance fits.
Then the highest-priority instances (``_favour_the_top``): where one is below its fair share,
lower-priority one-rank co-tenants that have not started move off its partitions to other
partitions with room; on a full node, where no room is left, a one-rank top instance instead
trades places with a lower-priority instance on a partition with more CUs per tenant
(``_swap_a_top``). What is still short is out of reach without placing less priority, which
comes first (benchmarks/planner.py's top>=fair).
Before both, the last tie-break (``_fewer_ranks``): among plans of equal placed priority and
compute, fewer tensor-parallel ranks (the full-set searches pick any tp that fits).
"""

from __future__ import annotations

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.planner.assemble import compute_units, partition_cus
from gpu_sharing.planner.packing import Assignment, Packing, _occupy, _release, build_slots, occupy_all
from gpu_sharing.planner.problem import cu_cost, rank_fits
from gpu_sharing.planner.types import PlannerPolicy


def cu_ceiling(request: float | int | None, partition_cus) -> int:
    """The most CUs an instance with this CU request (ModelDemand.cu_request) can get with one
    rank on each of these partitions (their CUs): its share's or count's CUs on each
    (problem.cu_cost, whoever shares it), else the whole partition (alone there)."""
    return sum(cu_cost(request, c) if request else c for c in partition_cus)


def fair_cus(instances: dict[str, tuple], gpu_cus: dict[int, int]) -> dict[str, float]:
    """instance id -> its fair CU share of the node (see the module docstring), from
    instance id -> ((priority + 1) x tp x bytes per rank, the GPUs it occupies[, its
    cu_ceiling]): each is capped at the CUs of its GPUs and, when given, at its ceiling (an
    explicit share of a partition, or a CPX partition's 38 CUs, is all it can ever get there)."""
    demand = {iid: (v[0], min(sum(gpu_cus[g] for g in v[1]), *v[2:])) for iid, v in instances.items()}
    left, out, open_ = float(sum(gpu_cus.values())), {}, set(demand)
    while open_:
        total = sum(demand[i][0] for i in open_) or 1
        capped = {i for i in open_ if left * demand[i][0] / total >= demand[i][1]}
        if not capped:
            out.update({i: left * demand[i][0] / total for i in open_})
            break
        for i in sorted(capped):
            out[i] = float(demand[i][1])
            left -= demand[i][1]
        open_ -= capped
    return out


def _fair(assignments: dict[str, Assignment], gpu_cus: dict[int, int], part_cus: dict) -> dict[str, float]:
    """fair_cus of a packing: weights, GPUs and ceilings from its assignments (``part_cus``:
    assemble.partition_cus at the plan's modes)."""
    return fair_cus({iid: (a.item.weight * a.tp * a.bytes_per_rank, frozenset(r.gpu for r in a.refs),
                           cu_ceiling(a.item.demand.cu_request, [part_cus[r.gpu, r.index] for r in a.refs]))
                     for iid, a in assignments.items()}, gpu_cus)


def _target(inventory, policy: PlannerPolicy, a: Assignment, gpu: int, modes, memory, may_repartition: bool):
    """(mode, tp, bytes per rank) for ``a`` alone on empty ``gpu``, or None."""
    g = inventory.gpu(gpu)
    d = a.item.demand
    if d.allowed_gpus is not None and gpu not in d.allowed_gpus:
        return None
    spec = get_spec(g.model)
    pinned = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
    if may_repartition and gpu not in pinned:
        options = sorted((c for c in spec.compute_modes() if spec.is_valid(c, memory[gpu])), key=spec.partitions)
    else:
        options = [modes[gpu]]
    for c in options:
        total = spec.vram_per_partition_bytes(c)
        cap = int(total * (1.0 - policy.headroom_fraction))
        for tp in sorted(d.bytes_per_rank_by_tp):
            if tp <= spec.partitions(c) and rank_fits(d, tp, cap, total, free_tp=True):
                return c, tp, d.bytes_per_rank_by_tp[tp]
    return None


def _rebuild(inventory, modes, specs, policy, assignments) -> dict:
    return occupy_all(build_slots(inventory, modes, specs, policy), assignments)


def spread(inventory, policy: PlannerPolicy, modes: dict, memory: dict, packing: Packing, running: set[str],
           may_repartition: bool) -> tuple[dict, Packing]:
    """``modes`` and ``packing`` with instances that have not started moved to empty GPUs."""
    specs = {g.index: get_spec(g.model) for g in inventory.gpus}
    modes = dict(modes)
    assignments = dict(packing.assignments)
    moved_any = _fewer_ranks(inventory, policy, modes, specs, assignments, running)
    while True:
        tenants: dict[int, int] = {}
        for a in assignments.values():
            for gpu in {r.gpu for r in a.refs}:
                tenants[gpu] = tenants.get(gpu, 0) + 1
        empty = [g.index for g in sorted(inventory.gpus, key=lambda g: g.index) if g.index not in tenants]
        if not empty:
            break
        part_cus = partition_cus(inventory, modes)
        current = Packing(assignments, packing.unplaced, packing.evicted_by, {})
        got = compute_units(current, part_cus)
        gpu_cus = {g.index: specs[g.index].cu_count for g in inventory.gpus}
        fair = _fair(assignments, gpu_cus, part_cus)
        movable = sorted((a for iid, a in assignments.items() if iid not in running
                          and len({r.gpu for r in a.refs}) == 1 and tenants[a.refs[0].gpu] > 1),
                         key=lambda a: (got[a.item.instance_id] / max(fair[a.item.instance_id], 1e-9),
                                        -a.item.weight, a.item.instance_id))
        move = None
        for a in movable:
            for gpu in empty:
                found = _target(inventory, policy, a, gpu, modes, memory, may_repartition)
                if found:
                    move = (a, gpu, found)
                    break
            if move:
                break
        if move is None:
            break
        a, gpu, (mode, tp, per_rank) = move
        modes[gpu] = mode
        assignments[a.item.instance_id] = Assignment(a.item, tp, tuple(PartitionRef(gpu, k) for k in range(tp)),
                                                     per_rank)
        moved_any = True
    moved_any = _favour_the_top(inventory, policy, modes, specs, assignments, running) or moved_any
    if not moved_any:
        return modes, packing
    slots = _rebuild(inventory, modes, specs, policy, assignments)
    return modes, Packing(assignments, packing.unplaced, packing.evicted_by, slots)


def _favour_the_top(inventory, policy: PlannerPolicy, modes: dict, specs, assignments: dict[str, Assignment],
                    running: set[str]) -> bool:
    """Give the highest-priority instances their fair CU share where the room allows: a
    lower-priority one-rank co-tenant that has not started leaves a partition of a top instance
    below its fair share for another partition with room (bytes, share, its tp and model fit)
    that holds no top instance. Each move raises a top instance's CUs and lowers no other
    top instance's; placed priority does not change. A top instance with an explicit compute
    share is skipped: its CUs are its share of the partition, whoever shares it. Changes
    ``assignments`` in place; True when something moved."""
    if not assignments:
        return False
    gpu_cus = {g.index: specs[g.index].cu_count for g in inventory.gpus}
    part_cus = partition_cus(inventory, modes)
    top_weight = max(a.item.weight for a in assignments.values())
    moved = False
    for _ in range(len(assignments)):  # every move takes one co-tenant off a top partition for good
        got = compute_units(Packing(assignments, [], {}, {}), part_cus)
        fair = _fair(assignments, gpu_cus, part_cus)
        tops = [a for a in assignments.values() if a.item.weight == top_weight]
        top_refs = {r for a in tops for r in a.refs}
        short = sorted((a for a in tops if not a.item.demand.cu_request
                        and got[a.item.instance_id] < fair[a.item.instance_id] - 1),
                       key=lambda a: (got[a.item.instance_id] / max(fair[a.item.instance_id], 1e-9), a.item.instance_id))
        move = None
        slots = _rebuild(inventory, modes, specs, policy, assignments) if short else {}  # unchanged until a move
        for t in short:
            guests = sorted((assignments[iid] for r in t.refs for iid in slots[r].occupants
                             if iid not in running and iid != t.item.instance_id
                             and assignments[iid].item.weight < top_weight and len(assignments[iid].refs) == 1),
                            key=lambda a: (-(a.item.demand.compute_share or 0), a.bytes_per_rank, a.item.instance_id))
            for guest in guests:
                d = guest.item.demand
                room = sorted((s for ref, s in slots.items() if ref not in top_refs
                               and (d.allowed_gpus is None or ref.gpu in d.allowed_gpus)
                               and rank_fits(d, guest.tp, s.capacity_bytes, s.total_bytes, free_tp=True)
                               and s.fits(guest.bytes_per_rank, d.cu_request)),
                              key=lambda s: (len(s.occupants), s.used_bytes - s.capacity_bytes, s.ref))
                if room:
                    move = (guest, room[0].ref)
                    break
            if move:
                break
        if move is None:
            swap = _swap_a_top(policy, short, assignments, slots, running, top_weight, part_cus) if short else None
            if swap is None:
                return moved
            for a in swap:
                assignments[a.item.instance_id] = a
            moved = True
            continue
        guest, ref = move
        assignments[guest.item.instance_id] = Assignment(guest.item, guest.tp, (ref,), guest.bytes_per_rank)
        moved = True
    return moved


def _swap_a_top(policy: PlannerPolicy, short: list[Assignment], assignments: dict[str, Assignment], slots: dict,
                running: set[str], top_weight: int, part_cus: dict) -> tuple[Assignment, Assignment] | None:
    """When no co-tenant can leave (a full node): a one-rank top instance below its fair share
    that has not started trades places with a lower-priority one-rank instance that has not
    started, on a partition with more CUs per tenant (bytes, share, CUs and partition size
    checked by Slot.fits and rank_fits both ways; no replica onto a GPU of a sibling). Tenant
    counts stay, so taken when that top instance gets more CUs and no top instance fewer.
    Returns the two new assignments, or None."""
    got = compute_units(Packing(assignments, [], {}, {}), part_cus)
    tops = [iid for iid, a in assignments.items() if a.item.weight == top_weight]
    for t in short:
        if t.item.instance_id in running or len(t.refs) != 1:
            continue
        d, p_ref = t.item.demand, t.refs[0]
        here = slots[p_ref]
        per_tenant = part_cus[p_ref.gpu, p_ref.index] / len(here.occupants)
        siblings = {r.gpu for a in assignments.values() if a.item.model == t.item.model and a is not t for r in a.refs}
        for q_ref, there in sorted(slots.items(), key=lambda kv: (len(kv[1].occupants), kv[0])):
            if (q_ref == p_ref or not there.occupants or part_cus[q_ref.gpu, q_ref.index] / len(there.occupants) <= per_tenant
                    or (policy.spread_replicas and q_ref.gpu in siblings)
                    or (d.allowed_gpus is not None and q_ref.gpu not in d.allowed_gpus)
                    or not rank_fits(d, t.tp, there.capacity_bytes, there.total_bytes, free_tp=True)):
                continue
            for gid in sorted(there.occupants):
                g = assignments[gid]
                gd = g.item.demand
                if (gid in running or g.item.weight >= top_weight or len(g.refs) != 1
                        or (gd.allowed_gpus is not None and p_ref.gpu not in gd.allowed_gpus)
                        or not rank_fits(gd, g.tp, here.capacity_bytes, here.total_bytes, free_tp=True)):
                    continue
                new_t = Assignment(t.item, t.tp, (q_ref,), t.bytes_per_rank)
                new_g = Assignment(g.item, g.tp, (p_ref,), g.bytes_per_rank)
                _release(slots, t)
                _release(slots, g)
                ok = there.fits(t.bytes_per_rank, d.cu_request)
                if ok:
                    _occupy(slots, new_t)
                    ok = here.fits(g.bytes_per_rank, gd.cu_request)
                    _release(slots, new_t)
                _occupy(slots, t)
                _occupy(slots, g)
                if not ok:
                    continue
                after = compute_units(Packing({**assignments, t.item.instance_id: new_t, gid: new_g}, [], {}, {}),
                                      part_cus)
                if after[t.item.instance_id] > got[t.item.instance_id] and all(after[x] >= got[x] for x in tops):
                    return new_t, new_g
    return None


def _fewer_ranks(inventory, policy: PlannerPolicy, modes: dict, specs, assignments: dict[str, Assignment],
                 running: set[str]) -> bool:
    """The tie-break after placed priority and compute: fewer tensor-parallel ranks (less
    all-reduce traffic, one runtime overhead less per rank). An instance that has not started,
    at tp > 1, moves to the smallest tp whose ranks fit on some of its own partitions (bytes,
    share, CUs: Slot.fits with it released), so no other instance loses room and placed priority
    is unchanged; taken when its CUs do not drop, or stay at its fair share or above (fair_cus,
    with the GPUs it then occupies). Runs before the empty-GPU moves, which may then use a GPU
    it leaves. Changes ``assignments`` in place; True when something moved."""
    wide = sorted(iid for iid, a in assignments.items() if a.tp > 1 and iid not in running
                  and any(t < a.tp for t in a.item.demand.bytes_per_rank_by_tp))
    if not wide:
        return False
    slots = _rebuild(inventory, modes, specs, policy, assignments)
    part_cus = partition_cus(inventory, modes)
    gpu_cus = {g.index: specs[g.index].cu_count for g in inventory.gpus}
    moved = False
    for iid in wide:
        a = assignments[iid]
        d = a.item.demand
        _release(slots, a)
        new = None
        for tp in sorted(t for t in d.bytes_per_rank_by_tp if t < a.tp):
            need = d.bytes_per_rank_by_tp[tp]
            fit = sorted((slots[r] for r in a.refs if rank_fits(d, tp, slots[r].capacity_bytes, slots[r].total_bytes,
                                                                 free_tp=True) and slots[r].fits(need, d.cu_request)),
                         key=lambda s: (s.cus_used - s.cus, s.used_bytes - s.capacity_bytes, s.ref))
            if len(fit) >= tp:
                new = Assignment(a.item, tp, tuple(sorted(s.ref for s in fit[:tp])), need)
                break
        if new is not None:
            trial = {**assignments, iid: new}
            before = compute_units(Packing(assignments, [], {}, {}), part_cus)[iid]
            after = compute_units(Packing(trial, [], {}, {}), part_cus)[iid]
            fair = _fair(trial, gpu_cus, part_cus)[iid]
            if after >= before or after >= fair - 1:
                assignments[iid] = a = new
                moved = True
        _occupy(slots, a)
    return moved
