"""What a solver returns, in the numbering of a Problem (shared by every solver and the decoder)."""

from __future__ import annotations

from dataclasses import dataclass

Scope = tuple[str, int]
"""("gpu", index) for instances on one GPU, ("hive", id) for instances spanning GPUs."""


@dataclass(frozen=True)
class Solution:
    """What a solve chose, in the Problem's numbering."""

    layout: dict[int, int]
    """gpu -> layout index."""
    ranks: dict[tuple[int, int, int], int]
    """(gpu, slot, class index) -> ranks."""
    instances: dict[tuple[int, Scope], int]
    """(class index, scope) -> instances."""
    kept: tuple[str, ...] = ()
    """Running instance ids kept where they are."""


@dataclass(frozen=True)
class SolveResult:
    status: str
    """OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN."""
    objective: int
    bound: int
    wall_time_s: float
    solution: Solution | None
    solver: str = "cp-sat"


def gap(objective: float, bound: float) -> float:
    """Relative gap of a plan's placed priority to its bound (0 when the bound is 0 or below it)."""
    return 0.0 if bound <= 0 else max(0.0, (bound - objective) / bound)
