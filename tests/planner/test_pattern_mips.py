"""benchmarks/pattern_mips.py: a captured pattern MIP solved again with the planner's own searches
reaches the value the planner reached on it (the capture is faithful), the hook is removed, and
bad settings or an empty folder are refused with exit status 2."""

from __future__ import annotations

import json

import pytest

import gpu_sharing.planner.pattern_mip as pattern_mip
import pattern_mips


def test_captured_mips_reproduce_the_planners_value(tmp_path):
    before = pattern_mip._run_all
    index = pattern_mips.capture(tmp_path, ["cpx"], [1], 2)
    assert pattern_mip._run_all is before
    assert index and all(name.startswith("cpx_") for name in index)
    assert json.loads((tmp_path / "index.json").read_text()) == index
    results = pattern_mips.compare(tmp_path, [pattern_mips.parse_setting("current"),
                                              pattern_mips.parse_setting("lp:search_branching=LP_SEARCH,random_seed=1")],
                                   0.15)
    assert set(results) == set(index)
    for name, planned in index.items():
        assert results[name]["current"][0] == planned
    lines = pattern_mips.table(results, ["current", "lp"])
    assert lines[0].split()[:3] == ["family", "setting", "MIPs"]
    assert [line.split()[:3] for line in lines[1:]] == [["cpx", "current", str(len(index))],
                                                        ["cpx", "lp", str(len(index))]]


@pytest.mark.parametrize("text", ["lp", "lp:", "lp:no_such_param=1", "lp:random_seed=x"])
def test_bad_settings_are_refused(text):
    with pytest.raises(ValueError):
        pattern_mips.parse_setting(text)


def test_exit_status_two_on_bad_input(tmp_path, capsys):
    assert pattern_mips.main(["compare", str(tmp_path), "current"]) == 2
    assert "run 'capture' first" in capsys.readouterr().err
    assert pattern_mips.main(["compare", str(tmp_path), "lp:nope=1"]) == 2
