"""What an exact finish of the planner's pattern step would cost, measured on the benchmark's cases.

    python benchmarks/pattern_listing.py [--cases 5] [--families auto,cpx,shares,pinned-tp]
                                         [--max-nodes 1000000] [--mip]

The pattern step (gpu_sharing/planner/pattern_master.py) ends with a MIP over the columns its
column generation priced. The textbook exact finish: at LP duals feasible for every column (LP
value z), a plan placing at least P + 1 (P: the plan in hand) uses only patterns whose reduced
cost is at most the slack z - (P + 1); list every such pattern per partition type, solve the MIP
over them to optimality, and the plan is proven optimal. Per case where the step ran, this
prints P, z, the slack and how many maximal patterns (no rank of any admitted class fits in
what is left; any pattern grows into one that costs no more) lie within the slack, found by a
depth-first search over the classes (best value per byte first) with a fractional bound, and
whether the search completed within ``--max-nodes`` nodes (about 10 microseconds a node).

``--mip`` also solves the step's own MIP (the same columns, rows and bounds) with CP-SAT at the
step's deterministic limit and with HiGHS and SCIP (pywraplp, one thread, 100,000 nodes) to
optimality, and prints placed priority and wall ms of each (ratios within one run; run on an
otherwise idle machine or say the load).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner import converged_replan, make_case  # noqa: E402

import gpu_sharing.planner.full_search as search_module  # noqa: E402
import gpu_sharing.planner.pattern_master as master_module  # noqa: E402
from gpu_sharing.planner import plan  # noqa: E402
from gpu_sharing.planner.fill import placed_weight  # noqa: E402
from gpu_sharing.planner.patterns import build_space, most_ranks  # noqa: E402
from gpu_sharing.planner.problem import SHARE_UNITS, cu_cost  # noqa: E402


def near(space, t: int, value: dict, floor: float, max_nodes: int) -> tuple[list, int, bool]:
    """Every maximal pattern of type ``t`` worth at least ``floor`` at ``value`` per rank:
    (patterns as (value, ((class, ranks), ...)), nodes, complete)."""
    pt = space.types[t]
    items = []
    for ci in pt.admits:
        c = space.classes[ci]
        items.append((max(0.0, value.get(ci, 0.0)), c.bytes_per_rank, c.share_units,
                      max(1, cu_cost(c.demand.compute_share, pt.cus)), most_ranks(space, ci, t), ci))
    items.sort(key=lambda it: (-it[0] / it[1], it[5]))
    k = len(items)
    counts, found, state = [0] * k, [], {"nodes": 0, "stop": False}

    def bound(i: int, b: int) -> float:
        total = 0.0
        for v, size, _s, _u, most, _ci in items[i:]:
            if size * most <= b:
                total, b = total + v * most, b - size * most
            else:
                return total + v * b / size
        return total

    def dfs(i: int, val: float, b: int, s: int, u: int) -> None:
        state["nodes"] += 1
        if state["nodes"] > max_nodes:
            state["stop"] = True
            return
        if i == k:
            if val >= floor - 1e-9 and all(counts[j] >= items[j][4] or items[j][1] > b or items[j][2] > s
                                           or items[j][3] > u for j in range(k)):
                found.append((val, tuple(sorted((items[j][5], counts[j]) for j in range(k) if counts[j]))))
            return
        if val + bound(i, b) < floor - 1e-9:
            return
        v, size, share, cus, most, _ci = items[i]
        for n in range(min(most, b // size, s // share if share else most, u // cus), -1, -1):
            counts[i] = n
            dfs(i + 1, val + n * v, b - n * size, s - n * share, u - n * cus)
            if state["stop"]:
                break
        counts[i] = 0

    dfs(0, 0.0, pt.capacity_bytes, SHARE_UNITS, pt.cus)
    return found, state["nodes"], not state["stop"]


def listing(args, max_nodes: int) -> str:
    """The listing within the slack after the step's column generation, for one case."""
    inventory, demands, policy, specs, candidates, modes, packing, _bound = args
    space = build_space(inventory, demands, policy, specs, candidates)
    start = master_module._start(space, modes, packing)
    placed = placed_weight(packing)
    master, _value, _lp, _rounds = master_module.generate(space, sorted(start["x"]), placed)
    quick = master_module._decode(space, inventory, specs, policy, modes, *master.rounded())
    if quick is not None:
        placed = max(placed, placed_weight(quick[1]))
    z, pi, mu = master.solve()
    slack = z - (placed + 1)
    listed, nodes, complete = 0, 0, True
    for t, pt in enumerate(space.types):
        if slack < 0 or nodes >= max_nodes:
            complete = complete and slack < 0
            break
        found, used, done = near(space, t, {ci: mu.get((ci, pt.hive), 0.0) for ci in pt.admits},
                                 pi[t] - slack, max_nodes - nodes)
        listed, nodes, complete = listed + len(found), nodes + used, complete and done
    return (f"P {placed} z {z:.3f} slack {slack:.3f} listed {listed} nodes {nodes} "
            f"{'complete' if complete else 'INCOMPLETE'}")


def mip_backends(space, columns, hint, at_least, at_most, barred) -> str:
    """The step's MIP by HiGHS and SCIP (pywraplp) to optimality: placed and wall ms each."""
    from ortools.linear_solver import pywraplp
    out = []
    for backend, params in (("HIGHS", "mip_max_nodes=100000\nmip_rel_gap=0\noutput_flag=false\nrandom_seed=0\n"),
                            ("SCIP", "limits/totalnodes = 100000\n")):
        t0 = time.perf_counter()
        s = pywraplp.Solver.CreateSolver(backend)
        inf = s.infinity()
        cap = {t: s.Constraint(-inf, 0) for t in range(len(space.types))}
        for q, kind in enumerate(space.kinds):
            row = s.Constraint(len(kind.gpus), len(kind.gpus))
            for li, parts in enumerate(kind.parts):
                v = s.IntVar(0, 0 if (q, li) in barred else len(kind.gpus), "")
                row.SetCoefficient(v, 1)
                for t, count in parts:
                    cap[t].SetCoefficient(v, -count)
        x = {(t, p): s.IntVar(0, space.most(t), "") for t, p in columns}
        link, n = {}, {}
        for (t, p), v in x.items():
            cap[t].SetCoefficient(v, 1)
            for ci, a in p:
                key = (ci, space.types[t].hive)
                if key not in link:
                    c = space.classes[ci]
                    link[key] = s.Constraint(-inf, 0)
                    n[key] = s.IntVar(0, space.demands[c.demand_index].replicas, "")
                    link[key].SetCoefficient(n[key], c.tp)
                link[key].SetCoefficient(v, -a)
        for (t, p), v in x.items():
            spread = [(ci, a) for ci, a in p if a >= 2 and space.classes[ci].tp >= 2]
            if spread:
                used = s.BoolVar("")
                row = s.Constraint(-inf, 0)
                row.SetCoefficient(v, 1)
                row.SetCoefficient(used, -space.most(t))
                for ci, a in spread:
                    row = s.Constraint(0, inf)
                    row.SetCoefficient(n[ci, space.types[t].hive], 1)
                    row.SetCoefficient(used, -a)
        for i, d in enumerate(space.demands):
            row = s.Constraint(-inf, d.replicas)
            for (ci, _h), v in n.items():
                if space.classes[ci].demand_index == i:
                    row.SetCoefficient(v, 1)
        goal, row = s.Objective(), s.Constraint(at_least, at_most)
        for (ci, _h), v in n.items():
            goal.SetCoefficient(v, space.classes[ci].weight)
            row.SetCoefficient(v, space.classes[ci].weight)
        goal.SetMaximization()
        s.SetNumThreads(1)
        s.SetSolverSpecificParametersAsString(params)
        status = s.Solve()
        placed = round(goal.Value()) if status in (s.OPTIMAL, s.FEASIBLE) else None
        out.append(f"{backend} {placed}{'' if status == s.OPTIMAL else ' (not proven)'} "
                   f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    return ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--families", default="auto,cpx,shares,pinned-tp")
    ap.add_argument("--max-nodes", type=int, default=1_000_000)
    ap.add_argument("--mip", action="store_true", help="also compare MIP solvers on the step's own MIP")
    args = ap.parse_args()
    steps, mips = [], []
    step, solve = search_module.improve, master_module.solve_integer

    def caught_step(*a, **k):
        steps.append(a)
        return step(*a, **k)

    def caught_mip(space, columns, hint, at_least, at_most, det_s, guard_s, barred=frozenset()):
        t0 = time.perf_counter()
        got = solve(space, columns, hint, at_least, at_most, det_s, guard_s, barred)
        took = (time.perf_counter() - t0) * 1000
        placed = got.placed if got else None
        mips.append(f"{len(columns)} columns: CP-SAT {placed} {took:.0f} ms"
                    + (", " + mip_backends(space, columns, hint, at_least, at_most, barred) if args.mip else ""))
        return got
    search_module.improve, master_module.solve_integer = caught_step, caught_mip
    for family in args.families.split(","):
        rng = random.Random(f"{args.seed}-{family}")  # the same cases as benchmarks/planner.py
        for case in range(args.cases):
            inv, demands, policy = make_case(rng, family)
            steps.clear()
            mips.clear()
            p = plan(inv, demands, [], policy)
            if steps:
                print(f"{family} case {case}: {listing(steps[0], args.max_nodes)}"
                      + (f"; MIP {mips[0]}" if mips else ""), flush=True)
            converged_replan(rng, inv, demands, p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
