"""benchmarks/replan_policy.py: any_gain never places less than the default policy on the same
re-plan (it may take every plan the default may, and more), and plan_digest plans as before afterwards."""

from __future__ import annotations

import plan_digest
import replan_policy


def test_any_gain_places_at_least_the_default_and_the_hook_is_removed():
    before = plan_digest.plan
    rows = list(replan_policy.compare([1], 3))
    assert [(seed, case) for seed, case, *_ in rows] == [(1, 0), (1, 1), (1, 2)]
    assert all(anyway >= strict for _s, _c, strict, anyway, _f in rows)
    assert any(anyway > strict for _s, _c, strict, anyway, _f in rows)  # seed 1 case 2: the policy holds back 1
    assert plan_digest.plan is before


def test_prints_only_the_cases_that_differ(capsys):
    assert replan_policy.main(["--seeds", "1", "--cases", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["seed", "case", "strict", "any_gain", "fresh"]
    assert [line.split()[:2] for line in out[1:-1]] == [["1", "1"], ["1", "2"]]
    assert out[-1].startswith("3 re-plans: any_gain places more in 1")
