"""Why the placed-priority search may fix most GPUs to their coarsest layout, and where it may not.

Claim. Let GPU g allow a single-partition layout A (SPX) whose usable bytes and CUs are at least
the sums over the partitions of every other allowed layout, with the same memory mode, and let
every model that one GPU can hold (a "local" model on g, problem.py rule 2):
  - ask for no compute share,
  - allow tp=1, fit A with tp=1, and need no fewer bytes in all at a larger tp
    (b_1 <= t * b_t for the tp t it takes in any layout of g).
Then any feasible plan can be changed into one with g in A that places the same replicas.
Proof. If g is in A, nothing changes. Otherwise g holds only local instances (rule 3: ranks of
spanning models sit only on a GPU's coarsest layout). Replace each by a tp=1 instance of the
same model on A's partition: its bytes drop from t * b_t to b_1, so the total stays within
the old layout's partitions, which fit in A; no share constraint applies, and A's CUs (at
least the sum over the other layout's partitions) still give every tenant one; A's partition is
at least as large, so min_partition_bytes and the smallest-fitting-tp rule hold (b_1 fits A).
Other GPUs are untouched. Hence the best placed priority with such GPUs restricted to A is
the best placed priority overall, and a proof found on the restricted problem is a proof for
the full one. The restricted problem is much smaller (one partition instead of up to 8 per
layout, and one layout instead of four), which is what makes proofs take milliseconds.
GPUs that fail a condition (compute shares, tp pinned above 1, NPS other than A's, pinned
modes) keep every layout they allow.
"""

from __future__ import annotations

from dataclasses import replace

from gpu_sharing.planner.solution import Solution
from gpu_sharing.planner.problem import GpuChoices, Problem, coarsest, narrow


def _dominates(prob: Problem, g: GpuChoices) -> bool:
    a = g.layouts[coarsest(g)]
    if len(g.layouts) < 2 or a.partitions != 1:
        return False
    for lay in g.layouts:
        if (sum(lay.capacity_bytes) > a.capacity_bytes[0] or max(lay.total_bytes) > a.total_bytes[0]
                or lay.memory != a.memory or sum(lay.cus) > a.cus[0]):
            return False
    for di, d in enumerate(prob.demands):
        local = prob.local_layouts.get((g.gpu, di))
        if not local:
            continue
        b1 = d.bytes_per_rank_by_tp.get(1)
        if d.cu_request or b1 is None or local.get(coarsest(g)) != 1:
            return False
        if any(b1 > tp * d.bytes_per_rank_by_tp[tp] for tp in local.values()):
            return False
    return True


def restrict(prob: Problem) -> tuple[Problem, dict[int, tuple[int, ...]]]:
    """The problem with dominated GPUs fixed to their coarsest layout, and gpu -> the layout
    indices of ``prob`` it keeps (for every GPU)."""
    allowed = {g.gpu: ((coarsest(g),) if _dominates(prob, g) else tuple(range(len(g.layouts)))) for g in prob.gpus}
    return narrow(prob, allowed), allowed


def to_restricted(prob: Problem, allowed: dict[int, tuple[int, ...]], sol: Solution) -> Solution:
    """A full-problem solution (the greedy hint) moved onto the restricted problem: on a GPU
    fixed to its coarsest layout, every local instance becomes tp=1 (the proof's step)."""
    fixed = {g: keep[0] for g, keep in allowed.items() if len(keep) == 1}
    tp1 = {c.demand_index: ci for ci, c in enumerate(prob.classes) if c.tp == 1}
    layout = {g: allowed[g].index(o) if o in allowed[g] else 0 for g, o in sol.layout.items()}
    ranks: dict[tuple[int, int, int], int] = {}
    inst: dict = {}
    moved = {g for g in fixed if sol.layout.get(g) != fixed[g]}
    for (g, k, ci), v in sol.ranks.items():
        if g in moved and prob.classes[ci].tp != 1:
            continue
        key = (g, 0 if g in moved else k, ci)
        ranks[key] = ranks.get(key, 0) + v
    for (ci, scope), v in sol.instances.items():
        c = prob.classes[ci]
        if scope[0] == "gpu" and scope[1] in moved and c.tp != 1:
            one = tp1.get(c.demand_index)
            if one is None:
                continue
            ranks[scope[1], 0, one] = ranks.get((scope[1], 0, one), 0) + v
            ci = one
        inst[ci, scope] = inst.get((ci, scope), 0) + v
    return Solution(layout, ranks, inst)


def to_full(allowed: dict[int, tuple[int, ...]], sol: Solution) -> Solution:
    """A solution of a narrowed problem in the full problem's layout numbering."""
    return replace(sol, layout={g: allowed[g][o] for g, o in sol.layout.items()})


def from_full(allowed: dict[int, tuple[int, ...]], sol: Solution) -> Solution:
    """A full-problem solution in a narrowed problem's numbering (its layouts must be allowed)."""
    return replace(sol, layout={g: allowed[g].index(o) for g, o in sol.layout.items()})
