"""The surrogate knapsack: a bound on placed priority, and a fast way to reach it (pure).

Every plan's instances fit in the sum of all partitions, and an instance takes at least its
smallest tp x bytes-per-rank, so the best 0-1 knapsack over the node's total capacity bounds
the optimum (dynamic programming over placed priority, at most 64 replicas x 10, minimising
bytes). It is often tight. When it is, the replicas it picks (the fewest bytes for that
priority) usually pack into the GPUs first-fit decreasing, and that plan is proven optimal
in milliseconds (the MULKNAP idea: bound by the surrogate relaxation, then try to split its
answer into bins; when first-fit fails, a short CP-SAT assignment of exactly those replicas).
"""

from __future__ import annotations

from gpu_sharing.planner.solution import Solution, SolveResult
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ortools.sat.python import cp_model

from gpu_sharing.planner.problem import SHARE_UNITS, Problem, cu_cost, cus_fit


def _items(prob: Problem) -> dict[int, int]:
    """demand index -> the fewest bytes one of its instances can take anywhere. A class no
    smaller than the demand's smallest so far is not asked about (Problem.admits is most of
    this bound's time)."""
    smallest: dict[int, int] = {}
    for c in prob.classes:
        size = c.tp * c.bytes_per_rank
        known = smallest.get(c.demand_index)
        if known is not None and size >= known:
            continue
        if any(prob.admits(g, k, c) for g in prob.gpus for k in range(g.slots)):
            smallest[c.demand_index] = size
    return smallest


@dataclass(frozen=True)
class Surrogate:
    bound: int
    """Best placed priority within the node's total capacity: an upper bound on the optimum."""
    chosen: dict[int, int]
    """demand index -> replicas that reach it with the fewest bytes."""


def surrogate(prob: Problem) -> Surrogate:
    """The knapsack over the node's total capacity (computed once per plan: it is the one
    bound every solver below shares)."""
    capacity = sum(max(sum(lay.capacity_bytes) for lay in g.layouts) for g in prob.gpus)
    smallest = _items(prob)
    copies = [i for i, _s in sorted(smallest.items()) for _ in range(prob.demands[i].replicas)]
    weights = [prob.demands[i].priority + 1 for i in copies]
    sizes = [smallest[i] for i in copies]
    top = _fractional_bound(weights, sizes, capacity)  # no total above it fits: those cells stay out
    # least[t]: the fewest bytes that weigh exactly t (capacity + 1: none within the capacity);
    # numpy rows, int64 (a node's bytes are below 2^43)
    least = np.full(top + 1, capacity + 1, dtype=np.int64)
    least[0] = 0
    took: list[np.ndarray] = []
    reach = 0  # the most the copies so far can add up to: totals above it are unreachable
    for w, size in zip(weights, sizes):  # 0-1 knapsack: each total reads the values from before this copy
        reach += w
        hi = min(reach, top)
        row = np.zeros(top + 1, dtype=bool)
        if hi >= w:
            with_it = least[: hi + 1 - w] + size  # a new array: the values from before this copy
            better = with_it < least[w: hi + 1]
            least[w: hi + 1][better] = with_it[better]
            row[w: hi + 1] = better
        took.append(row)
    best = int(np.flatnonzero(least <= capacity).max())
    chosen: dict[int, int] = {}
    total = best
    for n in range(len(copies) - 1, -1, -1):  # walk the choices back
        if total and took[n][total]:
            chosen[copies[n]] = chosen.get(copies[n], 0) + 1
            total -= prob.demands[copies[n]].priority + 1
    return Surrogate(best, chosen)


def _fractional_bound(weights: list[int], sizes: list[int], capacity: int) -> int:
    """The fractional knapsack's value, rounded down (exact integers): no set of copies within
    ``capacity`` weighs more, so the knapsack's table needs no larger total. The plain sum of
    weights when a size is not positive."""
    if any(size <= 0 for size in sizes):
        return sum(weights)
    total, left = 0, capacity
    for w, size in sorted(zip(weights, sizes), key=lambda ws: Fraction(ws[0], ws[1]), reverse=True):
        if size <= left:
            total, left = total + w, left - size
        else:
            return total + left * w // size
    return total


def surrogate_bound(prob: Problem) -> int:
    return surrogate(prob).bound


def _assign(prob: Problem, counts: dict[int, int], time_budget_s: float) -> dict[tuple[int, int, int], int] | None:
    """The chosen replicas spread over one-partition GPUs by CP-SAT (a feasibility question,
    much easier than optimising), or None when it finds no way in its short time."""
    m = cp_model.CpModel()
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for g in prob.gpus:
        here = []
        for ci, n in counts.items():
            c = prob.classes[ci]
            if prob.admits(g, 0, c):
                x[g.gpu, ci] = v = m.NewIntVar(0, n, "")
                here.append((c, v))
        m.Add(sum(c.bytes_per_rank * v for c, v in here) <= g.layouts[0].capacity_bytes[0])
        if any(c.share_units for c, _v in here):
            m.Add(sum(c.share_units * v for c, v in here) <= SHARE_UNITS)
        cus = g.layouts[0].cus[0]
        m.Add(sum(cu_cost(c.demand.cu_request, cus) * v for c, v in here) <= cus)  # problem.cus_fit
    for ci, n in counts.items():
        m.Add(sum(v for (_g, cc), v in x.items() if cc == ci) == n)
    s = cp_model.CpSolver()
    s.parameters.num_workers = 1
    s.parameters.max_deterministic_time = time_budget_s
    s.parameters.random_seed = 0
    if s.Solve(m) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return {(g, 0, ci): s.Value(v) for (g, ci), v in x.items() if s.Value(v)}


def pack_surrogate(prob: Problem, sur: Surrogate, time_budget_s: float = 0.05) -> SolveResult | None:
    """A proven-optimal solution when the surrogate's choice fits one-partition GPUs (tp=1
    instances only): first-fit decreasing, else a short CP-SAT assignment. None otherwise."""
    if any(len(g.layouts) != 1 or g.layouts[0].partitions != 1 for g in prob.gpus):
        return None
    bound, chosen = sur.bound, sur.chosen
    tp1 = {c.demand_index: ci for ci, c in enumerate(prob.classes) if c.tp == 1}
    if any(i not in tp1 for i in chosen):
        return None
    free = {g.gpu: g.layouts[0].capacity_bytes[0] for g in prob.gpus}
    shares = {g.gpu: 0 for g in prob.gpus}
    cus_used = {g.gpu: 0 for g in prob.gpus}
    by_gpu = {g.gpu: g for g in prob.gpus}
    ranks: dict[tuple[int, int, int], int] = {}
    order = sorted(((prob.classes[tp1[i]].bytes_per_rank, i) for i, n in chosen.items() for _ in range(n)), reverse=True)
    for size, i in order:
        c = prob.classes[tp1[i]]
        fits = [gpu for gpu in sorted(free) if free[gpu] >= size and shares[gpu] + c.share_units <= SHARE_UNITS
                and cus_fit(by_gpu[gpu].layouts[0].cus[0], cus_used[gpu], c.demand.cu_request)
                and prob.admits(by_gpu[gpu], 0, c)]
        if not fits:
            ranks = _assign(prob, {tp1[i]: n for i, n in chosen.items()}, time_budget_s)
            if ranks is None:
                return None
            break
        gpu = min(fits, key=lambda gpu: (free[gpu], gpu))  # best fit
        free[gpu] -= size
        shares[gpu] += c.share_units
        cus_used[gpu] += cu_cost(c.demand.cu_request, by_gpu[gpu].layouts[0].cus[0])
        ranks[gpu, 0, tp1[i]] = ranks.get((gpu, 0, tp1[i]), 0) + 1
    solution = Solution({g.gpu: 0 for g in prob.gpus}, ranks,
                        {(ci, ("gpu", gpu)): n for (gpu, _k, ci), n in ranks.items()})
    return SolveResult("OPTIMAL", bound, bound, 0.0, solution, "surrogate-knapsack")
