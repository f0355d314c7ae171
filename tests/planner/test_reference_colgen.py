"""The benchmark's 8-GPU reference (benchmarks/reference_colgen.py) checked against the exhaustive
search (reference_optimum.brute_force) on cases small enough to enumerate: the two are written
independently of each other and of the planner, so agreement is evidence for both."""

from __future__ import annotations

import random

import pytest
from builders import GIB, demand, gpu
from reference_colgen import colgen_reference
from reference_optimum import brute_force, check_plan, placed_priority

from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner.types import GpuPolicy, ModelDemand, PlannerPolicy


def small_case(seed: int):
    """Like the benchmark's ``small`` family, and wider: 1-2 GPUs (sometimes on two hives),
    every mode, tp the heads allow, compute shares, GPU pins and NPS choices."""
    rng = random.Random(seed)
    count = rng.choice([1, 2, 2])
    hives = [1, rng.choice([1, 2])]
    inv = Inventory(tuple(gpu(i, rng.choice(["MI300X", "MI325X"]), rng.choice(["SPX", "CPX"]), hive=hives[i])
                          for i in range(count)))
    demands = [demand(f"m{i}", rng.choice([4, 10, 20, 40, 90, 150, 230]), rng.randint(1, 2), rng.randint(0, 9),
                      heads=rng.choice([64, 28, 14, 7]), share=rng.choice([None, None, 0.25, 0.5]),
                      gpus=rng.choice([None, None, None, (0,)]))
               for i in range(rng.randint(1, 3))]
    pinned = rng.choice([None, None, "CPX", "QPX"])
    gpus = tuple(GpuPolicy(g.index, C(pinned)) for g in inv.gpus) if pinned else ()
    return inv, demands, PlannerPolicy(gpus=gpus, allow_driver_reload=rng.random() < 0.5)


@pytest.mark.parametrize("seed", [*range(9), *range(11, 20)])
def test_colgen_reference_equals_brute_force(seed):
    inv, demands, policy = small_case(seed)
    exact = brute_force(inv, demands, policy)
    r = colgen_reference(inv, demands, policy, known=0, time_limit_s=20)
    assert (r.optimum, r.bound) == (exact, exact), r.how
    if exact:  # the reference's own plan, re-checked, reaches the optimum
        assert check_plan(inv, demands, policy, r.plan) == []
        assert placed_priority(r.plan, demands) == exact


@pytest.mark.parametrize("seed", [5, 7])
def test_a_known_value_is_neither_exceeded_nor_trusted_beyond_proof(seed):
    """Told the optimum, the reference proves nothing better exists; told less, it finds the
    optimum with a plan of its own."""
    inv, demands, policy = small_case(seed)
    exact = brute_force(inv, demands, policy)
    assert exact > 0
    assert colgen_reference(inv, demands, policy, known=exact, time_limit_s=20).optimum == exact
    below = colgen_reference(inv, demands, policy, known=exact - 1, time_limit_s=20)
    assert below.optimum == exact and placed_priority(below.plan, demands) == exact


def test_issue_counterexample_tp2_across_gpus():
    """Issue 19: b at tp=2, one rank per GPU beside a 121.5 GiB replica on each GPU: 21."""
    a = ModelDemand("a", 2, 9, {1: int(121.5 * GIB), 2: int(62 * GIB), 4: int(32 * GIB), 8: int(17 * GIB)}, "f")
    b = ModelDemand("b", 1, 0, {1: int(103 * GIB), 2: int(51.5 * GIB), 4: int(27 * GIB), 8: int(14 * GIB)}, "f")
    inv = Inventory((gpu(0), gpu(1)))
    r = colgen_reference(inv, [a, b], PlannerPolicy(), known=0, time_limit_s=20)
    assert r.optimum == 21 == brute_force(inv, [a, b], PlannerPolicy())


@pytest.mark.parametrize("pinned, demands, optimum", [
    # a's share of 1.0 takes all 304 CUs of the SPX partition: b's replicas (no share) get none beside it
    ("SPX", [demand("a", 4, 1, 3, share=1.0), demand("b", 4, 2, 0)], 4),
    # 0.02 of a 38-CU CPX partition rounds to 0 CUs, which the launcher refuses: c never fits
    ("CPX", [demand("c", 2, 2, 5, share=0.02), demand("d", 2, 1, 0)], 1),
])
def test_both_references_give_every_tenant_its_cus(pinned, demands, optimum):
    """The CU rule (isolation/cu_masks.resolve_cu_counts) binds: the brute force and the column
    generation, each with its own copy of it, agree on the optimum that rule leaves."""
    inv, policy = Inventory((gpu(0),)), PlannerPolicy(gpus=(GpuPolicy(0, C(pinned)),))
    assert brute_force(inv, demands, policy) == optimum
    r = colgen_reference(inv, demands, policy, known=0, time_limit_s=20)
    assert r.optimum == optimum and check_plan(inv, demands, policy, r.plan) == []
