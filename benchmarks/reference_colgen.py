"""The placed-priority optimum at 8 GPUs x 64 replicas: column generation, branch and price.

Written without the planner: partitions come from reference_optimum.gpu_layouts (the catalog and
the inventory), the formulation is different from the planner's (no per-GPU slots, no rules on
tp or locality), and every claim rests on an explicit bound. Why: a direct assignment model (a
boolean per replica, tp and partition) finds nothing in seconds at this size, and a knapsack
bound is weak where partitions fragment or compute shares bind.

Aggregation (reference_patterns.py). GPUs of one hive with the same layouts are one *kind*
(w[kind, layout] counts its GPUs in each layout); partitions of one hive with the same total and
usable bytes (and GPU, when a demand pins GPUs) are one *type*; the ranks one partition holds
form a *pattern* (ranks per class (model, tp): bytes within the usable bytes, compute shares
summing to at most 1, at most ``replicas`` ranks of one model). n[c, h] counts instances of
class c in hive h; a tp-t instance needs t ranks on t distinct partitions of its hive.

1. Linear relaxation (reference_master.py; patterns priced exactly, by dynamic programming over
   bytes and shares or by CP-SAT): max sum (priority + 1) n  s.t.  t n[c,h] <= ranks of c in
   hive h's patterns; patterns of type k <= partitions of type k the layouts give;
   sum_l w[kind, l] = GPUs of the kind; one memory mode per hive; sum over tp and hives of
   n <= replicas. Its Lagrangian bound is computed from the duals (valid whatever the LP's
   accuracy), and an integer surrogate bound from the same prices; the knapsack bound caps both.
2. A MIP over the generated patterns (SCIP; integer counts, one memory mode per hive, the
   distinct-partition rule: a partition holds at most n[c, h] ranks of class c, so ranks can be
   dealt to instances round-robin) looks for a plan better than the known value; every plan
   found is decoded and re-checked by reference_optimum.check_plan.
3. Branch and price on memory modes, layout counts and instance counts (patterns stay
   continuous, so pricing never changes): a node whose bound is <= the best value is closed.
   A node whose counts are all integral is closed by reduced-cost enumeration: every integer
   solution above the best uses only patterns whose reduced cost (plus that of the counts they
   imply) is >= best + 1 - bound; a MIP over those is exact there.
The optimum is proven when no node is left open; nothing is called proven when a limit
(columns, time) is hit: the result then gives the best value found and the largest open bound.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass

from reference_master import Master, enumerate_columns, integer_master, price, start_master, surrogate_bound
from reference_optimum import brute_force, check_plan, placed_priority, upper_bound
from reference_patterns import RefPlan, build, decode, plan_patterns

DEBUG = False


@dataclass(frozen=True)
class Reference:
    """What the reference knows: ``optimum`` when proven (else None), the best feasible value
    found (the planner's known value or better), the proven upper bound, and how."""

    optimum: int | None
    found: int
    bound: int
    how: str
    plan: RefPlan | None = None


def colgen_reference(inventory, demands, policy, known: int, time_limit_s: float = 60.0,
                     column_limit: int = 20000, cap: int | None = None, seed_plan=None) -> Reference:
    """The most placed priority, given ``known`` (a value a checked plan reaches): the LP bound,
    then branch and price on layouts, memory modes and instance counts (patterns stay
    continuous, so pricing never changes); a node whose counts are integral is closed by a MIP
    over its enumerated columns (module docstring, step 3). Every better solution is decoded
    and re-checked by reference_optimum.check_plan."""
    start = time.monotonic()
    deadline = start + time_limit_s
    m = build(inventory, [d for d in demands if d.replicas > 0 and d.bytes_per_rank_by_tp], policy)
    master = start_master(m)
    for k, pattern in plan_patterns(m, seed_plan) if seed_plan is not None else ():
        master.add(k, pattern)
    y, rc, bound, _conv = price(master, start + 0.3 * time_limit_s)
    root = int(math.floor(bound + 1e-6))
    if y is not None:
        root = min(root, surrogate_bound(master, y, rc))
    if cap is not None:  # an upper bound proven elsewhere (the knapsack)
        root = min(root, cap)
    best, best_plan = known, None

    def improve(columns, seconds, bounds=None):
        nonlocal best, best_plan
        status, value, sol = integer_master(m, columns, best + 1, seconds, bounds)
        if value is not None and value > best:
            rp = decode(m, sol)
            errors = check_plan(inventory, demands, policy, rp)
            if errors or placed_priority(rp, demands) != value:
                raise AssertionError(f"reference decoded an infeasible plan: {errors[:3]}")
            best, best_plan = value, rp
        return status

    def generated():
        return {k: sorted(c) for k, c in m.columns.items()}

    if DEBUG:
        print(f"  root {bound:.3f} surrogate {root} t {time.monotonic() - start:.1f}", flush=True)
    if root > best:
        improve(generated(), max(0.5, 0.2 * time_limit_s))
        if DEBUG:
            print(f"  restricted MIP {best} t {time.monotonic() - start:.1f}", flush=True)
    if root <= best:
        return Reference(best, best, root, "LP bound" + (", better plan found" if best_plan else ""), best_plan)
    defaults = {("n", key): (v.lb(), v.ub()) for key, v in master.n.items()}
    defaults.update({("w", key): (v.lb(), v.ub()) for key, v in master.w.items()})
    defaults.update({("v", key): (v.lb(), v.ub()) for key, v in master.v.items()})
    heap = [(-root, 0, {})]
    counter, nodes, open_leaves = 0, 0, []
    search_end = deadline - 0.15 * time_limit_s  # the rest: a last MIP over every column generated
    while heap and time.monotonic() < search_end:
        neg, _c, fix = heapq.heappop(heap)
        if -neg <= best or best >= root:
            continue
        nodes += 1
        for (kind, key), (lo, hi) in {**defaults, **fix}.items():
            {"n": master.n, "w": master.w, "v": master.v}[kind][key].SetBounds(lo, hi)
        y, _rc, b, conv = price(master, search_end)
        ub = min(root, int(math.floor(b + 1e-6)))
        if DEBUG:
            print(f"  node {nodes} fix {len(fix)} bound {b:.3f} conv {conv} cols {sum(map(len, m.columns.values()))} "
                  f"t {time.monotonic() - start:.1f}", flush=True)
        if ub <= best:
            continue
        if not conv:  # out of time mid-pricing: the node stays open
            open_leaves.append(ub)
            continue
        frac = _fractional(master)
        if frac is None:  # integral counts: realise them with integer patterns, or prove none exist
            improve(generated(), min(5.0, max(0.5, search_end - time.monotonic())), fix)
            if ub > best:
                cols = enumerate_columns(m, master, y, b, best + 1, column_limit, search_end)
                if cols is not None:
                    for k, c in m.columns.items():
                        cols.setdefault(k, set()).update(c)
                    status = improve({k: sorted(c) for k, c in cols.items()},
                                     max(0.5, search_end - time.monotonic()), fix)
                    if status in ("infeasible", "optimal"):
                        continue
            if ub > best:
                open_leaves.append(ub)
            continue
        key, value = frac
        lo, hi = {**defaults, **fix}[key]
        for child in ({**fix, key: (lo, math.floor(value))}, {**fix, key: (math.ceil(value), hi)}):
            counter += 1
            heapq.heappush(heap, (-ub, counter, child))
    left = [-neg for neg, _c, _f in heap if -neg > best] + [u for u in open_leaves if u > best]
    if left:
        improve(generated(), max(0.5, deadline - time.monotonic()))
        left = [u for u in left if u > best]
    if not left:
        return Reference(best, best, best, f"branch and price ({nodes} nodes)", best_plan)
    return Reference(None, best, max(left), f"gap {best}..{max(left)} after {nodes} nodes", best_plan)


def _fractional(master: Master):
    """The branching choice: a fractional instance count (the largest fraction x priority
    weight), else memory mode, else layout count; None when all are integral."""
    for kind, vars_ in (("n", master.n), ("v", master.v), ("w", master.w)):
        best = None
        for key, var in sorted(vars_.items(), key=lambda kv: str(kv[0])):
            x = var.solution_value()
            f = abs(x - round(x))
            score = min(f, 1 - f) * (master.m.classes[key[0]][4] if kind == "n" else 1)
            if f > 1e-6 and (best is None or score > best[0] + 1e-9):
                best = (score, (kind, key), x)
        if best:
            return best[1], best[2]
    return None


def reference_optimum(inventory, demands, policy, plan=None, time_limit_s: float = 60.0) -> Reference:
    """The optimum of placed priority for the benchmark: brute force on tiny cases; otherwise
    a checked plan that reaches the knapsack bound, else colgen_reference told the plan's value."""
    if len(inventory.gpus) <= 2 and sum(d.replicas for d in demands) <= 6:
        value = brute_force(inventory, demands, policy)
        return Reference(value, value, value, "brute force")
    knapsack = upper_bound(inventory, demands, policy)
    known = 0
    if plan is not None and not check_plan(inventory, demands, policy, plan):
        known = placed_priority(plan, demands)
        if known >= knapsack:
            return Reference(known, known, knapsack, "plan reaches the knapsack bound")
    return colgen_reference(inventory, demands, policy, known, time_limit_s, cap=knapsack,
                            seed_plan=plan if known else None)
