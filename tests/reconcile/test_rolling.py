"""limit_rolling: a changed multi-replica model loses one replica per pass, and only while the rest is READY."""

from __future__ import annotations

from gpu_sharing.hardware.inventory import PartitionRef
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.planner.types import RunningInstance
from gpu_sharing.reconcile.rolling import limit_rolling

from reconcile_fakes import make_plan, placement, target

GIB = 1 << 30


def running(iid: str, part: tuple[int, int], fp: str = "old") -> RunningInstance:
    model, _, replica = iid.rpartition("-")
    return RunningInstance(iid, model, int(replica), fp, (PartitionRef(*part),), 10 * GIB)


def four_changed():
    run = [running(f"m-{k}", (0, k)) for k in range(4)] + [running("other-0", (1, 0), fp="o")]
    plan = make_plan(to_start=[placement(f"m-{k}", ((0, k),)) for k in range(4)], to_stop=[f"m-{k}" for k in range(4)])
    return run, plan


def test_one_replica_per_pass_while_the_rest_is_ready():
    run, plan = four_changed()
    ready = {r.instance_id: True for r in run}
    limited, steps = limit_rolling(plan, run, ready, {"m": "new", "other": "o"})
    assert limited.to_stop == ("m-0",) and [p.instance_id for p in limited.to_start] == ["m-0"]
    assert steps[0].replacing == "m-0" and steps[0].held_back == ("m-1", "m-2", "m-3")
    # next pass: m-0 (new) still starting -> nothing more goes down
    run2 = [running("m-0", (0, 0), fp="new")] + run[1:]
    plan2 = make_plan(to_start=[placement(f"m-{k}", ((0, k),)) for k in range(1, 4)], to_stop=["m-1", "m-2", "m-3"])
    limited2, steps2 = limit_rolling(plan2, run2, {**ready, "m-0": False}, {"m": "new", "other": "o"})
    assert limited2.to_stop == () and limited2.to_start == () and steps2[0].waiting_for == ("m-0",)
    limited3, _ = limit_rolling(plan2, run2, ready, {"m": "new", "other": "o"})
    assert limited3.to_stop == ("m-1",)


def test_unrelated_changes_and_single_replicas_pass_through():
    run = [running("solo-0", (0, 0))]
    plan = make_plan(to_start=[placement("solo-0", ((0, 1),)), placement("new-0", ((0, 2),))], to_stop=["solo-0"])
    limited, steps = limit_rolling(plan, run, {"solo-0": True}, {"solo": "new", "new": "n"})
    assert limited == plan and steps == ()


def test_overlapping_new_placements_or_repartition_replace_at_once():
    run = [running("m-0", (0, 0)), running("m-1", (0, 1))]
    crossed = make_plan(to_start=[placement("m-0", ((0, 1),)), placement("m-1", ((0, 0),))], to_stop=["m-0", "m-1"])
    limited, steps = limit_rolling(crossed, run, {"m-0": True, "m-1": True}, {"m": "new"})
    assert limited == crossed and "overlap" in steps[0].all_at_once
    repart = make_plan(to_start=[placement("m-0", ((0, 0),)), placement("m-1", ((0, 1),))], to_stop=["m-0", "m-1"],
                       to_repartition=[target(0, C.DPX)])
    limited, steps = limit_rolling(repart, run, {"m-0": True, "m-1": True}, {"m": "new"})
    assert limited == repart and "repartitioned" in steps[0].all_at_once


def test_replicas_sharing_one_partition_roll():
    run = [running(f"m-{k}", (0, 0)) for k in range(3)]
    plan = make_plan(to_start=[placement(f"m-{k}", ((0, 0),)) for k in range(3)], to_stop=["m-0", "m-1", "m-2"])
    limited, steps = limit_rolling(plan, run, {f"m-{k}": True for k in range(3)}, {"m": "new"})
    assert limited.to_stop == ("m-0",) and steps[0].held_back == ("m-1", "m-2")
