"""Fleet planner quality and speed: 3 pools, 300 replicas of 40 models, against an independent bound.

    python benchmarks/fleet.py [--cases 5] [--seed 1] [--budget 8] [--reference-s 30]

Fleet: 16 x MI300X nodes, 8 x MI325X nodes, 4 x MI355X nodes, 8 GPUs each, every profile
chosen by the planner (SPX+NPS1, CPX+NPS1, CPX+NPS4 where the GPU offers it).
Families (seeded), 40 models sharing 300 replicas, priorities 0-9:
  fits     sizes 2-180 GiB at tp=1, a few 250-800 GiB ones: about 60% of the fleet's bytes.
  tight    sizes shifted up: more than the fleet holds, so priority decides.
  hetero   as tight, with heterogeneous profiles (SPX+NPS1 and CPX+NPS1 on one node) allowed.
Columns:
  placed      placed priority (sum of priority+1 over placed replicas) of the plan.
  bound       the planner's own proven bound (its counting model, fleet_model.py).
  gap         (bound - placed) / bound.
  ref bound   an upper bound from an independent model written here: one integer variable
              per (node, model, partition type, tp) and a profile choice per node (no
              counting argument, no smallest-tp rule, every tp 1/2/4/8), solved by CP-SAT
              for --reference-s; its best bound. placed/ref: placed over that bound.
  ms          plan_fleet wall time (all three phases), budget --budget seconds.
  valid       the plan checked node by node against the profile it gives each node.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ortools.sat.python import cp_model  # noqa: E402

from gpu_sharing.hardware.catalog import get_spec  # noqa: E402
from gpu_sharing.hardware.dcm import candidate_profiles, partition_counts  # noqa: E402
from gpu_sharing.planner.fleet import FleetPolicy, FleetPool, plan_fleet  # noqa: E402
from gpu_sharing.planner.types import ModelDemand  # noqa: E402

GIB = 1024**3
HEADROOM = 0.03
POOLS = (("mi300x", "MI300X", 16), ("mi325x", "MI325X", 8), ("mi355x", "MI355X", 4))


def pools(heterogeneous: bool) -> list[FleetPool]:
    return [FleetPool(name, model, tuple(f"{name}-{i:02d}" for i in range(n)), 8, heterogeneous=heterogeneous)
            for name, model, n in POOLS]


def demands(rng: random.Random, family: str, models: int = 40, replicas: int = 300) -> list[ModelDemand]:
    shift = 1.0 if family == "fits" else 3.5
    cuts = sorted(rng.sample(range(1, replicas), models - 1))
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, replicas])]
    out = []
    for i, count in enumerate(counts):
        r = rng.random()
        gib = (rng.uniform(2, 20) if r < 0.45 else rng.uniform(20, 70) if r < 0.75
               else rng.uniform(70, 180) if r < 0.95 else rng.uniform(250, 800)) * shift
        weights, kv = 0.8 * gib, 0.2 * gib
        by_tp = {tp: int((weights / tp + kv / tp + 2.5) * GIB) for tp in (1, 2, 4, 8)}
        out.append(ModelDemand(f"model-{i:02d}", count, rng.randint(0, 9), by_tp, "bench"))
    return out


def validate(plan, fleet: list[FleetPool], ds: list[ModelDemand]) -> bool:
    """Node by node: partitions used <= what its profile gives; ranks fit the partitions."""
    model_of = {n: p.gpu_model for p in fleet for n in p.nodes}
    profile_of = {n.node: n.profile for n in plan.nodes}
    used: dict = {}
    for p in plan.placements:
        spec = get_spec(model_of[p.node])
        have = partition_counts(spec, profile_of[p.node]).get(p.kind, 0)
        used[p.node, p.kind] = used.get((p.node, p.kind), 0) + p.tp
        if used[p.node, p.kind] > have:
            return False
        if p.memory_bytes_per_rank > spec.vram_per_partition_bytes(p.kind.compute) * (1 - HEADROOM):
            return False
    placed = {}
    for p in plan.placements:
        placed[p.model] = placed.get(p.model, 0) + 1
    return all(placed.get(d.name, 0) <= d.replicas for d in ds)


def reference_bound(fleet: list[FleetPool], ds: list[ModelDemand], seconds: float) -> tuple[float, float]:
    """Independent upper bound: explicit nodes, every tp, one (GPU model, type) per model; CP-SAT."""
    m = cp_model.CpModel()
    weight = {d.name: d.priority + 1 for d in ds}
    per_model: dict[str, list] = {d.name: [] for d in ds}
    variant_terms: dict[tuple, list] = {}
    for pool in fleet:
        spec = get_spec(pool.gpu_model)
        profiles = candidate_profiles(spec, pool.gpus_per_node, pool.heterogeneous)
        counts = [partition_counts(spec, p) for p in profiles]
        kinds = sorted({k for c in counts for k in c})
        for node in pool.nodes:
            pick = [m.NewBoolVar("") for _ in profiles]
            m.AddExactlyOne(pick)
            for kind in kinds:
                total = spec.vram_per_partition_bytes(kind.compute)
                use = []
                for d in ds:
                    for tp, b in d.bytes_per_rank_by_tp.items():
                        if b <= total * (1 - HEADROOM) and tp <= max(c.get(kind, 0) for c in counts):
                            x = m.NewIntVar(0, d.replicas, "")
                            use.append(tp * x)
                            per_model[d.name].append(x)
                            variant_terms.setdefault((d.name, pool.gpu_model, kind), []).append(x)
                m.Add(sum(use) <= sum(c.get(kind, 0) * p for c, p in zip(counts, pick)))
    for d in ds:
        chosen = []
        for (name, gm, kind), xs in variant_terms.items():
            if name == d.name:
                z = m.NewBoolVar("")
                m.Add(sum(xs) <= d.replicas * z)
                chosen.append(z)
        m.AddAtMostOne(chosen)
        m.Add(sum(per_model[d.name]) <= d.replicas)
    m.Maximize(sum(weight[name] * x for name, xs in per_model.items() for x in xs))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 2
    solver.Solve(m)
    return solver.BestObjectiveBound(), solver.ObjectiveValue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=5.0)
    ap.add_argument("--reference-s", type=float, default=30.0)
    args = ap.parse_args()
    print(f"{'family':<7} {'case':>4} {'placed':>7} {'bound':>7} {'gap':>7} {'ref bound':>9} {'placed/ref':>10} "
          f"{'profiles':>8} {'unplaced':>8} {'ms':>7} valid")
    for family in ("fits", "tight", "hetero"):
        for case in range(args.cases):
            rng = random.Random(args.seed * 1000 + case + (0 if family == "fits" else 500))
            fleet, ds = pools(family == "hetero"), demands(rng, "fits" if family == "fits" else "tight")
            start = time.perf_counter()
            plan = plan_fleet(fleet, ds, FleetPolicy(HEADROOM, args.budget))
            ms = (time.perf_counter() - start) * 1000
            ref, _found = reference_bound(fleet, ds, args.reference_s)
            s = plan.solver
            print(f"{family:<7} {case:>4} {s.objective:>7.0f} {s.bound:>7.0f} {s.gap:>7.2%} {ref:>9.0f} "
                  f"{s.objective / ref:>10.4f} {plan.distinct_profiles:>8} {len(plan.unplaceable):>8} {ms:>7.0f} "
                  f"{'yes' if validate(plan, fleet, ds) else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
