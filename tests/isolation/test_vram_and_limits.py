"""VRAM monitor decisions, ComputeLimits from settings, apply-time check, status dict, CLI."""

from __future__ import annotations

import json

import pytest

from gpu_sharing.cli import main as cli
from gpu_sharing.config.schema import ComputeLimitsSettings
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import GpuProcess, Inventory, LogicalPartition, PartitionRef, PhysicalGpu
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode
from gpu_sharing.isolation import (
    ComputeLimits,
    MemoryAction,
    ResourceIsolator,
    VramBudget,
    VramMonitor,
    describe_limits,
)
from simulator.cu_mask_check import parse_hsa_cu_mask

GiB = 2**30


def part(index: int, procs=(), cu_count=38, xcc_count=1) -> LogicalPartition:
    return LogicalPartition(gpu=0, index=index, hip_index=index, render_node=f"renderD{128 + index}",
                            cu_count=cu_count, xcc_count=xcc_count, vram_total_bytes=24 * GiB,
                            vram_used_bytes=sum(p.vram_bytes for p in procs), processes=tuple(procs))


def inventory(*parts: LogicalPartition) -> Inventory:
    gpu = PhysicalGpu(index=0, bdf="0000:0c:00.0", model="MI300X", hive_id=1, numa_node=0,
                      compute_mode=ComputePartitionMode.CPX, memory_mode=MemoryPartitionMode.NPS1, partitions=parts)
    return Inventory(gpus=(gpu,))


def test_over_budget_beyond_tolerance_is_a_violation_with_the_policy():
    inv = inventory(part(0, [GpuProcess(100, "python3", 11 * GiB), GpuProcess(200, "python3", 10 * GiB)]))
    budgets = [
        VramBudget("a", 10 * GiB, frozenset({100}), (PartitionRef(0, 0),), MemoryAction.RESTART, 0.05),
        VramBudget("b", 10 * GiB, frozenset({200}), (PartitionRef(0, 0),), MemoryAction.STOP, 0.05),
    ]
    report = VramMonitor().check(budgets, inv)
    assert [(v.instance_id, v.action) for v in report.violations] == [("a", MemoryAction.RESTART)]
    v = report.violations[0]
    assert v.used_bytes == 11 * GiB and v.budget_bytes == 10 * GiB and v.partition == "0.0"
    assert "1.00 GiB over its budget of 10.00 GiB" in v.message and "restart" in v.message
    assert report.used_bytes == {"a": 11 * GiB, "b": 10 * GiB}


def test_within_tolerance_is_fine_and_worst_rank_counts():
    inv = inventory(part(0, [GpuProcess(1, "w0", 10 * GiB)]), part(1, [GpuProcess(2, "w1", int(10.4 * GiB))]))
    b = VramBudget("tp2", 10 * GiB, frozenset({1, 2}), (PartitionRef(0, 0), PartitionRef(0, 1)))
    report = VramMonitor().check([b], inv)
    assert report.violations == () and report.used_bytes["tp2"] == int(10.4 * GiB)
    tight = VramBudget("tp2", 10 * GiB, frozenset({1, 2}), b.partitions, MemoryAction.WARN, 0.0)
    assert VramMonitor().check([tight], inv).violations[0].partition == "0.1"


def test_foreign_processes_on_managed_partitions_are_reported_not_owned():
    inv = inventory(part(0, [GpuProcess(1, "vllm", GiB), GpuProcess(666, "miner", 3 * GiB)]),
                    part(1, [GpuProcess(777, "someone-elses", GiB)]))
    b = VramBudget("a", 10 * GiB, frozenset({1}), (PartitionRef(0, 0),))
    report = VramMonitor().check([b], inv)
    assert [(f.partition, f.pid, f.name) for f in report.foreign] == [("0.0", 666, "miner")]
    everything = VramMonitor(managed_partitions=[PartitionRef(0, 0), PartitionRef(0, 1)]).check([b], inv)
    assert [f.pid for f in everything.foreign] == [666, 777]


def test_compute_limits_from_settings_and_budget():
    s = ComputeLimitsSettings(compute_share=0.25, memory_bytes="20GiB", memory_policy="stop", user="vllm")
    lim = ComputeLimits.from_settings(s)
    assert lim.cu_request == 0.25 and lim.memory_bytes == 20 * GiB and lim.memory_policy is MemoryAction.STOP
    assert ComputeLimits.from_settings(ComputeLimitsSettings(cu_count=19)).cu_request == 19
    b = ResourceIsolator.vram_budget("x", lim, sized_bytes_per_rank=5 * GiB, pids=[3], partitions=[PartitionRef(0, 1)])
    assert b.budget_bytes_per_rank == 20 * GiB and b.policy is MemoryAction.STOP
    b2 = ResourceIsolator.vram_budget("x", ComputeLimits(), sized_bytes_per_rank=5 * GiB, pids=[], partitions=[])
    assert b2.budget_bytes_per_rank == 5 * GiB


def test_isolator_check_and_masks():
    iso = ResourceIsolator(allowed_cpus=[0])
    p = part(0, cu_count=152, xcc_count=4)
    ok = {"a": ComputeLimits(compute_share=0.5), "b": ComputeLimits(compute_share=0.25), "c": ComputeLimits()}
    iso.check({p.ref: ok}, {p.ref: p})
    masks = iso.cu_masks(p, ok)
    cus = {k: parse_hsa_cu_mask(v, 1, cu_count=152)[0] for k, v in masks.items()}
    assert sorted(len(c) for c in cus.values()) == [38, 38, 76]
    bad = {"a": ComputeLimits(compute_share=0.75), "b": ComputeLimits(compute_share=0.5)}
    with pytest.raises(UserError, match=r"partition 0\.0 \(152 CUs, 4 XCCs\): compute shares sum to 1.25"):
        iso.check({p.ref: bad}, {p.ref: p})
    assert iso.cu_masks(p, {"solo": ComputeLimits()}) == {}


def test_describe_limits_reports_grant_and_usage():
    p = part(0, cu_count=152, xcc_count=4)
    d = describe_limits(instance_id="a", limits=ComputeLimits(compute_share=0.25), partition=p,
                        cu_mask="0:76-113", vram_used_bytes=3 * GiB, vram_budget_bytes=4 * GiB, cpus=[0, 1, 2, 5])
    assert d["cus_granted"] == 38 and d["cus_per_xcc"] == [10, 10, 9, 9] and d["cpus"] == "0-2,5"
    assert d["vram_used_bytes"] == 3 * GiB and d["partition"] == "0.0"
    assert describe_limits(instance_id="s", limits=ComputeLimits(), partition=p, cu_mask=None, vram_used_bytes=None,
                           vram_budget_bytes=None, cpus=None)["cus_granted"] == 152


def test_cli_masks_json_and_impossible_exit_2(capsys):
    code = cli.main(["isolation", "masks", "--cus", "152", "--xccs", "4",
                     "--share", "a=0.5", "--share", "b=0.25", "--share", "c=0.25", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["instance"], r["cus"]) for r in out["instances"]] == [("a", 76), ("b", 38), ("c", 38)]
    assert out["instances"][0]["cus_per_xcc"] == [19, 19, 19, 19]
    code = cli.main(["isolation", "masks", "--cus", "38", "--xccs", "1", "--share", "a=0.75", "--share", "b=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "38 CUs" in err and "1.25 > 1" in err and "Traceback" not in err
    assert cli.main(["isolation", "masks", "--cus", "38", "--xccs", "1", "--share", "a"]) == 2
    assert cli.main(["isolation", "masks", "--cus", "38", "--xccs", "1", "--share", "a=auto", "--share", "b=10"]) == 0
    assert "0:0-27" in capsys.readouterr().out


def test_watch_counts_violations_and_survives_a_failing_action():
    from gpu_sharing.isolation import VramWatch

    state = {"used": 5 * GiB}
    budgets = [VramBudget("a", 4 * GiB, frozenset({1}), (PartitionRef(0, 0),), MemoryAction.STOP, 0.0)]
    acted: list[str] = []

    def act(v):
        acted.append(v.instance_id)
        raise RuntimeError("supervisor busy")

    watch = VramWatch(inventory=lambda: inventory(part(0, [GpuProcess(1, "vllm", state["used"]),
                                                           GpuProcess(9, "foreign", GiB)])),
                      budgets=lambda: budgets, act=act)
    watch.run_once()
    watch.run_once()
    assert watch.violations_total == {("a", "stop"): 2} and acted == ["a", "a"]
    assert len(watch.errors) == 2 and "supervisor busy" in watch.errors[0]
    assert [f.pid for f in watch.last.foreign] == [9]
    state["used"] = 3 * GiB
    assert watch.run_once().violations == () and watch.violations_total == {("a", "stop"): 2}
