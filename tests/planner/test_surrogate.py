"""The surrogate knapsack: its bound is the best placed priority within the node's total capacity,
and its choice reaches that bound with the fewest bytes (checked by enumerating every choice)."""

from __future__ import annotations

import itertools
import random

from builders import demand, node

from gpu_sharing.planner.problem import build_problem
from gpu_sharing.planner.surrogate import surrogate
from gpu_sharing.planner.types import PlannerPolicy


def test_bound_and_choice_equal_an_enumeration_of_every_choice():
    rng = random.Random(19)
    for _case in range(40):
        demands = [demand(f"m{i}", rng.choice([4, 20, 45, 90, 150, 230]), rng.randint(1, 3), rng.randint(0, 9))
                   for i in range(rng.randint(1, 4))]
        prob = build_problem(node(rng.randint(1, 2)), demands, PlannerPolicy(), full=True)
        capacity = sum(max(sum(lay.capacity_bytes) for lay in g.layouts) for g in prob.gpus)
        size = {i: min(c.tp * c.bytes_per_rank for c in prob.classes if c.demand_index == i)
                for i in range(len(demands))}
        best = (0, 0)  # (placed priority, -bytes)
        for counts in itertools.product(*(range(d.replicas + 1) for d in demands)):
            used = sum(n * size[i] for i, n in enumerate(counts))
            if used <= capacity:
                best = max(best, (sum(n * (demands[i].priority + 1) for i, n in enumerate(counts)), -used))
        sur = surrogate(prob)
        assert sur.bound == best[0]
        assert sum(n * (demands[i].priority + 1) for i, n in sur.chosen.items()) == sur.bound
        assert sum(n * size[i] for i, n in sur.chosen.items()) == -best[1]  # the fewest bytes for it
