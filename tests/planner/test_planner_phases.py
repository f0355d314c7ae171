"""benchmarks/planner_phases.py: each step's time is inside its plan's, and the pipeline's
functions are its own again afterwards."""

from __future__ import annotations

import planner_phases as phases

import gpu_sharing.planner.full_search as full_search
import gpu_sharing.planner.pattern_master as pattern_master


def test_step_times_lie_within_the_plan_and_the_wrappers_are_removed():
    before = {(m, a): getattr(m, a) for _n, m, a in phases.STEPS}
    rows = phases.measure([1], 1, ["cpx"])  # cpx case 0 runs every step: the layout search leaves a gap
    (row,) = rows.values()
    steps = [name for name, _m, _a in phases.STEPS]
    assert set(row) == set(steps) | {"total"}
    assert row["layout"] > 0 and row["colgen"] > 0 and row["mip"] > 0
    assert sum(row[name] for name in steps) <= row["total"] + 0.05  # rounding to 0.01 ms each
    assert all(getattr(m, a) is fn for (m, a), fn in before.items())
    assert full_search.search_layouts.__module__ == "gpu_sharing.planner.layout_search"
    assert pattern_master.solve_integer.__module__ == "gpu_sharing.planner.pattern_mip"
    assert phases.table(rows, ["cpx"])[1].startswith("cpx")
