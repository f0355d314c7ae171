"""The MIP over the pattern master's columns runs two CP-SAT searches at once
(pattern_mip.SEARCHES); its answer must not depend on which thread ends first, and must never
place less than the leading search alone (issue 19, item 5: the same input gives the same
plan whatever the machine load)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from ortools.sat.python import cp_model
from test_determinism import _shares_node

import gpu_sharing.planner.pattern_master as pattern_master
import gpu_sharing.planner.pattern_mip as pattern_mip
from gpu_sharing.planner import plan
from gpu_sharing.planner.types import PlannerPolicy


@dataclass
class _FakeSolver:
    """Stands in for CpSolver in the selection rule's tests: a fixed outcome."""

    status: int
    value: float = 0.0
    stopped: list = field(default_factory=list)

    def Solve(self, _model):
        return self.status

    def ObjectiveValue(self):
        return self.value

    def stop_search(self):
        self.stopped.append(True)


def _searches(*outcomes):
    return [pattern_mip._Search(None, _FakeSolver(*o)) for o in outcomes]


def test_a_leader_that_proves_its_value_is_the_answer_and_stops_the_others():
    searches = _searches((cp_model.OPTIMAL, 10.0), (cp_model.FEASIBLE, 10.0))
    solver, status = pattern_mip._run_all(searches)
    assert solver is searches[0].solver and status == cp_model.OPTIMAL
    assert searches[1].solver.stopped or searches[1].status == cp_model.UNKNOWN  # stopped, or never started


def test_otherwise_the_highest_value_wins_and_the_leader_on_a_tie():
    higher = _searches((cp_model.FEASIBLE, 10.0), (cp_model.FEASIBLE, 12.0))
    assert pattern_mip._run_all(higher)[0] is higher[1].solver
    tie = _searches((cp_model.FEASIBLE, 12.0), (cp_model.OPTIMAL, 12.0))
    assert pattern_mip._run_all(tie)[0] is tie[0].solver
    assert not tie[1].solver.stopped  # only the leader stops the others


def test_nothing_when_the_leader_proves_no_plan_reaches_at_least_or_no_search_finds_one():
    assert pattern_mip._run_all(_searches((cp_model.INFEASIBLE,), (cp_model.FEASIBLE, 5.0))) is None
    assert pattern_mip._run_all(_searches((cp_model.UNKNOWN,), (cp_model.UNKNOWN,))) is None
    late = _searches((cp_model.UNKNOWN,), (cp_model.FEASIBLE, 7.0))
    assert pattern_mip._run_all(late)[0] is late[1].solver


@dataclass
class _LeaderUntilStopped(_FakeSolver):
    """A leader still searching: its Solve returns only when stopped (or after a bounded wait
    for the other thread), FEASIBLE at its value."""

    woken: threading.Event = field(default_factory=threading.Event)

    def Solve(self, _model):
        self.woken.wait(timeout=10)
        return self.status

    def stop_search(self):
        self.stopped.append(True)
        self.woken.set()


class _Partner(_FakeSolver):
    """A partner that ends at once; with ``wake`` it then lets the waiting leader end too (its
    limit reached), so that a test where the leader is rightly not stopped never waits."""

    def __init__(self, status, value, leader, wake):
        super().__init__(status, value)
        self.leader, self.wake = leader, wake

    def Solve(self, _model):
        if self.wake:
            self.leader.woken.set()
        return self.status


def _leader_and_partner(partner_value, at_least, wake):
    leader = _LeaderUntilStopped(cp_model.FEASIBLE, at_least)
    partner = _Partner(cp_model.OPTIMAL, partner_value, leader, wake)
    return [pattern_mip._Search(None, leader), pattern_mip._Search(None, partner)], leader, partner


def test_a_partners_proof_that_nothing_beats_the_start_stops_the_leader():
    searches, leader, partner = _leader_and_partner(10.0, at_least=10.0, wake=False)
    solver, status = pattern_mip._run_all(searches, 10.0)
    assert leader.stopped, "the leader ran on after the partner proved the start optimal"
    assert solver is partner and status == cp_model.OPTIMAL and solver.ObjectiveValue() == 10.0


def test_a_partners_proof_of_a_better_value_does_not_stop_the_leader():
    searches, leader, partner = _leader_and_partner(12.0, at_least=10.0, wake=True)
    solver, _status = pattern_mip._run_all(searches, 10.0)
    assert not leader.stopped  # proofs of other values settle nothing: which ends first depends on the load
    assert solver is partner  # the leader ran to its limit: the higher value wins


def test_without_the_starting_value_a_partners_proof_stops_nothing():
    searches, leader, _partner = _leader_and_partner(10.0, at_least=10.0, wake=True)
    pattern_mip._run_all(searches)
    assert not leader.stopped


def _a_real_mip(monkeypatch):
    """The arguments of the MIP a shares node's plan solves (the node leaves a gap for it)."""
    seen = []
    real = pattern_master.solve_integer

    def capture(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(pattern_master, "solve_integer", capture)
    inv, demands = _shares_node(8)
    plan(inv, demands, [], PlannerPolicy())
    assert seen, "the pattern step's MIP did not run on this node"
    return seen[0]


class _ThreadEndsFirst:
    """threading.Thread whose target runs to its end at start(): the helper search ends
    before the leader starts (a loaded core could do that)."""

    def __init__(self, target, args, daemon):
        self.target, self.args = target, args

    def start(self):
        self.target(*self.args)

    def join(self):
        pass


class _ThreadEndsLast(_ThreadEndsFirst):
    """The helper search starts only after the leader has ended."""

    def start(self):
        pass

    def join(self):
        self.target(*self.args)


@pytest.mark.parametrize("thread", [_ThreadEndsFirst, _ThreadEndsLast])
def test_the_answer_does_not_depend_on_which_search_ends_first(monkeypatch, thread):
    args, kwargs = _a_real_mip(monkeypatch)
    threaded = pattern_mip.solve_integer(*args, **kwargs)
    monkeypatch.setattr(pattern_mip.threading, "Thread", thread)
    assert pattern_mip.solve_integer(*args, **kwargs) == threaded


def test_two_searches_place_at_least_what_the_leading_search_places_alone(monkeypatch):
    args, kwargs = _a_real_mip(monkeypatch)
    both = pattern_mip.solve_integer(*args, **kwargs)
    monkeypatch.setattr(pattern_mip, "MIP_SEARCHES", 1)
    alone = pattern_mip.solve_integer(*args, **kwargs)
    assert both is not None and alone is not None
    assert both.placed >= alone.placed >= args[3]  # args[3]: at_least, the plan the step started from
