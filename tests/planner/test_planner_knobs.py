"""benchmarks/planner_knobs.py: settings are parsed strictly, reach the planner (module constants
and the default arguments that captured them), and each setting's numbers are the planner's own."""

from __future__ import annotations

import json
import random

import pytest

import planner_knobs as knobs
from plan_digest import plans_of_case
from reference_optimum import placed_priority

import gpu_sharing.planner.layout_search as layout_search
import gpu_sharing.planner.pattern_master as pattern_master


@pytest.mark.parametrize("text, says", [
    ("nocolon", "expected 'default'"),
    ("x:improve.MAX_MOVES", "is not module.CONSTANT=value"),
    ("x:MAX_MOVES=3", "is not module.CONSTANT=value"),
    ("x:improve.max_moves=3", "is not module.CONSTANT=value"),
    ("x:improve.MAX_MOVES=three", "is not a Python literal"),
])
def test_bad_settings_are_refused_with_the_part_named(text, says):
    with pytest.raises(ValueError, match=says):
        knobs.parse_setting(text)


def test_unknown_module_or_constant_exits_2_before_any_run(capsys):
    assert knobs.main(["x:nosuch.A=1"]) == 2
    assert "no module gpu_sharing.planner.nosuch" in capsys.readouterr().err
    assert knobs.main(["x:improve.NOPE=1"]) == 2
    assert "has no constant NOPE" in capsys.readouterr().err


def test_two_settings_with_one_name_exit_2(capsys):
    assert knobs.main(["a:improve.MAX_MOVES=1", "a:improve.MAX_MOVES=2"]) == 2
    assert "two settings share a name" in capsys.readouterr().err


def test_a_setting_whose_run_fails_exits_1_with_the_childs_error(capsys):
    """MAX_MOVES=None breaks improve.moves_for inside the child: the parent says which setting
    failed and shows the child's traceback instead of raising."""
    args = ["--seeds", "1", "--cases", "1", "--families", "cpx", "broken:improve.MAX_MOVES=None"]
    assert knobs.main(args) == 1
    err = capsys.readouterr().err
    assert "setting broken failed" in err and "TypeError" in err


@pytest.fixture
def restore_layout_search():
    saved = layout_search.MAX_EVALUATIONS, layout_search.search_layouts.__defaults__
    yield
    layout_search.MAX_EVALUATIONS, layout_search.search_layouts.__defaults__ = saved


def test_a_constant_captured_as_a_default_argument_is_rebound(restore_layout_search):
    name, changes = knobs.parse_setting("few:layout_search.MAX_EVALUATIONS=3")
    assert name == "few" and changes == [("layout_search", "MAX_EVALUATIONS", 3)]
    knobs.apply(changes)
    assert layout_search.MAX_EVALUATIONS == 3
    assert layout_search.search_layouts.__defaults__[0] == 3  # max_evaluations=MAX_EVALUATIONS


def test_each_setting_reports_what_the_planner_places_under_it(monkeypatch, capsys):
    """The child process's numbers for a setting are those of plan() with the same constant set
    in this process (the pattern step off, then on)."""
    args = ["--seeds", "1", "--cases", "1", "--families", "cpx", "--json"]
    assert knobs.main(args + ["default", "off:pattern_master.MIN_BUDGET_S=1e9"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = {}
    for label, off in (("default", False), ("off", True)):
        if off:
            monkeypatch.setattr(pattern_master, "MIN_BUDGET_S", 1e9)
        row = {}
        for what, p, demands, _s in plans_of_case(random.Random("1-cpx"), "cpx"):
            row[what] = placed_priority(p, demands)
        expected[label] = [row["timed"], row["replan"]]
    for label in ("default", "off"):
        timed, _ms, replan = got[label]["cpx/1/0"]
        assert [timed, replan] == expected[label]
    assert knobs.report(got, ["cpx"])[0].startswith("family")
