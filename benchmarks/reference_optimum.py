"""An optimum for placed priority written without the planner: the reference its claims are checked against.

Nothing here imports gpu_sharing.planner's solvers or problem builder: the partitions come from
the GPU catalog and the inventory, the rules from the hardware (issue 19, "the real feasible
set"), and the search is a different formulation. Used by tests/planner (brute force on tiny
cases) and by benchmarks/planner.py (the reference optimum column); the benchmark does not
import tests, and the tests import this module, not the other way round.

The real feasible set:
- every GPU takes one valid (compute, memory) pair: a pinned compute mode is kept; the memory
  mode changes only with ``allow_driver_reload`` (a pinned one wins) and is one per XGMI hive;
- an instance of a model takes one tp its demand allows (the demand's keys: the caller already
  kept the degrees that divide the attention heads) and puts one rank on each of tp distinct
  partitions of one hive, on one GPU or several;
- a partition holds ranks whose bytes fit its VRAM less the headroom, whose total VRAM is at
  least the demand's min_partition_bytes, on GPUs the demand allows, whose compute shares
  sum to at most 1, and whose CUs go round: the launcher gives a share floor(share x CUs) CUs
  (at least one) and every tenant without a share at least one of the CUs the shares leave
  (gpu_sharing/isolation/cu_masks.resolve_cu_counts, read from its code, not from the planner:
  ``cu_need`` here). check_plan asks resolve_cu_counts itself.
Placed priority is the sum of priority + 1 over placed replicas.

Tools:
- ``brute_force``: exact by exhaustive search over every mode combination and placement,
  with memoisation on the multiset of partition states (tiny cases: 1-2 GPUs, a few replicas);
- ``upper_bound`` and ``check_plan``: a knapsack bound over the node's capacity and an
  independent check that a plan is feasible; a feasible plan that reaches the bound is optimal;
- ``gpu_layouts``: every GPU's allowed layouts, straight from the catalog.
For 8 GPUs x 64 replicas, benchmarks/reference_colgen.py proves optima by column generation
and branch and price over these layouts, and re-checks every plan it finds with check_plan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from gpu_sharing.errors import UserError
from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.isolation.cu_masks import resolve_cu_counts

TOL = 1e-9


@dataclass(frozen=True)
class Part:
    gpu: int
    index: int
    hive: int
    total_bytes: int
    capacity_bytes: int
    cus: int


def cu_need(share: float | None, cus: int) -> int:
    """CUs the launcher hands one tenant on a partition of ``cus`` CUs, at least: floor(share x
    cus) for a share (0: refused), one for a tenant without a share (it splits what is left)."""
    return int(share * cus + TOL) if share else 1


def gpu_layouts(inventory, policy) -> dict[int, list[tuple[object, object, tuple[Part, ...]]]]:
    """gpu -> [(compute, memory, partitions)] it may take, straight from the catalog."""
    pinned_c = {p.gpu: p.compute_mode for p in policy.gpus if p.compute_mode is not None}
    pinned_m = {p.gpu: p.memory_mode for p in policy.gpus if p.memory_mode is not None}
    out = {}
    for g in inventory.gpus:
        spec = get_spec(g.model)
        computes = [pinned_c[g.index]] if g.index in pinned_c else list(spec.compute_modes())
        if not policy.allow_driver_reload or spec.memory_mode_fixed:
            memories = [g.memory_mode]
        else:
            memories = [pinned_m[g.index]] if g.index in pinned_m else list(spec.memory_modes())
            if g.memory_caps:  # what the firmware offers (amd-smi's memory caps) narrows the catalog
                memories = [m for m in memories if m in g.memory_caps or m == g.memory_mode]
        layouts = []
        for c in computes:
            for m in memories:
                if not spec.is_valid(c, m):
                    continue
                if (c, m) == (g.compute_mode, g.memory_mode) and g.partitions:
                    totals = [p.vram_total_bytes for p in sorted(g.partitions, key=lambda p: p.index)]
                else:
                    totals = [spec.vram_per_partition_bytes(c)] * spec.partitions(c)
                if c == g.compute_mode and g.partitions:  # what the launcher reads: the partition's own count
                    cus = [p.cu_count or spec.cus_per_partition(c) for p in sorted(g.partitions, key=lambda p: p.index)]
                else:
                    cus = [spec.cus_per_partition(c)] * spec.partitions(c)
                parts = tuple(Part(g.index, k, g.hive_id, t, int(t * (1.0 - policy.headroom_fraction)), cu)
                              for k, (t, cu) in enumerate(zip(totals, cus)))
                layouts.append((c, m, parts))
        if not layouts:
            raise ValueError(f"GPU {g.index}: no valid layout under the policy")
        out[g.index] = layouts
    return out


def mode_combinations(inventory, policy):
    """Every assignment of one layout per GPU with one memory mode per hive."""
    layouts = gpu_layouts(inventory, policy)
    order = sorted(layouts)
    hive = {g.index: g.hive_id for g in inventory.gpus}
    for combo in itertools.product(*[layouts[i] for i in order]):
        mem: dict[int, object] = {}
        if all(mem.setdefault(hive[i], lay[1]) == lay[1] for i, lay in zip(order, combo)):
            yield dict(zip(order, combo))


def _admissible(d, tp: int, p: Part) -> bool:
    return (d.bytes_per_rank_by_tp[tp] <= p.capacity_bytes and p.total_bytes >= d.min_partition_bytes
            and (d.allowed_gpus is None or p.gpu in d.allowed_gpus) and (d.compute_share or 0.0) <= 1.0 + TOL
            and cu_need(d.compute_share, p.cus) >= 1)


def _multisets(counts: list[tuple[tuple, int]], size: int):
    """Every way to take ``size`` items from distinct values with multiplicities."""
    if size == 0:
        yield ()
        return
    if not counts:
        return
    (value, have), rest = counts[0], counts[1:]
    for k in range(min(have, size), -1, -1):
        for tail in _multisets(rest, size - k):
            yield (value,) * k + tail


def brute_force(inventory, demands, policy) -> int:
    """The most placed priority over the real feasible set, by exhaustive search."""
    demands = [d for d in demands if d.replicas > 0 and d.bytes_per_rank_by_tp]
    gpu_matters = any(d.allowed_gpus is not None for d in demands)
    rest = [sum((d.priority + 1) * d.replicas for d in demands[m:]) for m in range(len(demands) + 1)]
    best = 0
    for combo in mode_combinations(inventory, policy):
        parts = [p for _c, _m, ps in combo.values() for p in ps]
        kinds = sorted({(p.hive, p.total_bytes, p.capacity_bytes, p.gpu if gpu_matters else -1, p.cus) for p in parts})

        @lru_cache(maxsize=None)
        def search(m: int, left: int, state: tuple) -> int:
            """Best priority from demand m on (``left`` of its replicas still to decide; replicas
            are alike, so placing k of them means placing the first k); state: sorted
            (kind, used bytes, used share, used CUs) per partition, so equal states are searched once."""
            if m == len(demands):
                return 0
            d = demands[m]
            top = (d.priority + 1) * left + rest[m + 1]
            result = 0
            if left:
                share = d.compute_share or 0.0
                for tp in sorted(d.bytes_per_rank_by_tp):
                    need = d.bytes_per_rank_by_tp[tp]
                    fits: dict[int, dict[tuple, int]] = {}
                    for st in state:
                        k = kinds[st[0]]
                        if (st[1] + need <= k[2] and st[2] + share <= 1.0 + TOL
                                and st[3] + cu_need(d.compute_share, k[4]) <= k[4]
                                and _admissible(d, tp, Part(k[3], 0, k[0], k[1], k[2], k[4]))):
                            fits.setdefault(k[0], {}).setdefault(st, 0)
                            fits[k[0]][st] += 1
                    for _hive, values in sorted(fits.items()):  # one hive per instance
                        for pick in _multisets(sorted(values.items()), tp):
                            nxt = list(state)
                            for st in pick:
                                nxt.remove(st)
                                nxt.append((st[0], st[1] + need, round(st[2] + share, 9),
                                            st[3] + cu_need(d.compute_share, kinds[st[0]][4])))
                            result = max(result, d.priority + 1 + search(m, left - 1, tuple(sorted(nxt))))
                            if result >= top:
                                return result
            nxt_left = demands[m + 1].replicas if m + 1 < len(demands) else 0
            return max(result, search(m + 1, nxt_left, state))

        start = tuple(sorted((kinds.index((p.hive, p.total_bytes, p.capacity_bytes, p.gpu if gpu_matters else -1,
                                           p.cus)), 0, 0.0, 0) for p in parts))
        best = max(best, search(0, demands[0].replicas if demands else 0, start))
        search.cache_clear()
        if best >= rest[0]:
            break  # everything placed: no mode combination can do better
    return best


def upper_bound(inventory, demands, policy) -> int:
    """Knapsack over the node's capacity (the largest layout of each GPU): an instance takes at
    least tp x bytes-per-rank for some tp whose rank fits some partition."""
    layouts = gpu_layouts(inventory, policy)
    capacity = sum(max(sum(p.capacity_bytes for p in ps) for _c, _m, ps in lays) for lays in layouts.values())
    parts = [p for lays in layouts.values() for _c, _m, ps in lays for p in ps]
    best_bytes = {0: 0}  # placed priority -> fewest bytes
    for d in demands:
        sizes = [tp * b for tp, b in d.bytes_per_rank_by_tp.items()
                 if sum(1 for p in parts if _admissible(d, tp, p)) >= 1]
        if not sizes:
            continue
        size = min(sizes)
        for _ in range(d.replicas):
            nxt = dict(best_bytes)
            for w, b in best_bytes.items():
                if b + size <= capacity and nxt.get(w + d.priority + 1, capacity + 1) > b + size:
                    nxt[w + d.priority + 1] = b + size
            best_bytes = nxt
    return max(best_bytes)


def check_plan(inventory, demands, policy, plan) -> list[str]:
    """Everything in ``plan`` that breaks the real feasible set (empty when it is feasible)."""
    errors = []
    by_name = {d.name: d for d in demands}
    layouts = gpu_layouts(inventory, policy)
    chosen = {}
    for t in plan.gpus:
        match = [ps for c, m, ps in layouts[t.gpu] if (c, m) == (t.compute_mode, t.memory_mode)]
        if not match:
            errors.append(f"gpu {t.gpu}: {t.compute_mode.value}+{t.memory_mode.value} not allowed")
            continue
        chosen[t.gpu] = {p.index: p for p in match[0]}
    hive_memory: dict[int, object] = {}
    for t in plan.gpus:
        if hive_memory.setdefault(inventory.gpu(t.gpu).hive_id, t.memory_mode) != t.memory_mode:
            errors.append(f"hive of gpu {t.gpu}: two memory modes")
    used: dict[tuple[int, int], int] = {}
    shares: dict[tuple[int, int], float] = {}
    tenants: dict[tuple[int, int], dict[str, float | None]] = {}
    count: dict[str, int] = {}
    ids = [x.instance_id for x in plan.placements]
    errors += [f"{i}: placed twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for x in plan.placements:
        d = by_name.get(x.model)
        if d is None or x.tp not in d.bytes_per_rank_by_tp or len(x.partitions) != x.tp:
            errors.append(f"{x.instance_id}: tp {x.tp} not allowed")
            continue
        if x.memory_bytes_per_rank < d.bytes_per_rank_by_tp[x.tp]:
            errors.append(f"{x.instance_id}: {x.memory_bytes_per_rank} bytes per rank, the model needs "
                          f"{d.bytes_per_rank_by_tp[x.tp]} at tp {x.tp}")
        count[x.model] = count.get(x.model, 0) + 1
        keys = [(r.gpu, r.index) for r in x.partitions]
        if len(set(keys)) != len(keys):
            errors.append(f"{x.instance_id}: two ranks on one partition")
        parts = [chosen.get(g, {}).get(k) for g, k in keys]
        if any(p is None for p in parts):
            errors.append(f"{x.instance_id}: on a partition the target mode does not have")
            continue
        if len({p.hive for p in parts}) != 1:
            errors.append(f"{x.instance_id}: spans hives")
        for p in parts:
            if p.total_bytes < d.min_partition_bytes or (d.allowed_gpus is not None and p.gpu not in d.allowed_gpus):
                errors.append(f"{x.instance_id}: partition {p.gpu}.{p.index} not allowed")
            used[p.gpu, p.index] = used.get((p.gpu, p.index), 0) + x.memory_bytes_per_rank
            shares[p.gpu, p.index] = shares.get((p.gpu, p.index), 0.0) + (d.compute_share or 0.0)
            tenants.setdefault((p.gpu, p.index), {})[x.instance_id] = (float(d.compute_share) if d.compute_share
                                                                       else None)
    for (g, k), b in used.items():
        if b > chosen[g][k].capacity_bytes:
            errors.append(f"partition {g}.{k}: {b} bytes > {chosen[g][k].capacity_bytes}")
        if shares[g, k] > 1.0 + TOL:
            errors.append(f"partition {g}.{k}: compute shares sum to {shares[g, k]}")
        here = tenants[g, k]
        if len(here) > 1 or any(here.values()):  # what the launcher does with them (reconcile/cu_sharing.py)
            try:
                resolve_cu_counts(cu_count=chosen[g][k].cus, requests=here)
            except UserError as e:
                errors.append(f"partition {g}.{k}: the launcher refuses its CU masks: {e}")
    errors += [f"{m}: {n} replicas placed, {by_name[m].replicas} wanted" for m, n in count.items()
               if n > by_name[m].replicas]
    return errors


def placed_priority(plan, demands) -> int:
    prio = {d.name: d.priority for d in demands}
    return sum(prio[x.model] + 1 for x in plan.placements)
