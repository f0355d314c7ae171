"""DCM's profile checks (tests/data/dcm/README.md) as gpu_sharing.hardware.dcm applies them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.dcm import (DcmProfile, PartitionType, ProfileEntry, candidate_profiles, partition_counts,
                                      profile_problems)
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M

DATA = Path(__file__).resolve().parents[1] / "data" / "dcm"


def parse(entry: dict) -> DcmProfile:
    """DCM's JSON shape -> DcmProfile (the inverse of DcmProfile.to_json)."""
    return DcmProfile("x", tuple(ProfileEntry(PartitionType(C(p["computePartition"]), M(p["memoryPartition"])),
                                              p["numGPUsAssigned"]) for p in entry["profiles"]),
                      tuple(entry.get("skippedGPUs", {}).get("ids", [])))


def test_amds_example_profiles_pass_on_an_8_gpu_mi300x_node():
    doc = yaml.safe_load((DATA / "example-configmap.yaml").read_text())
    profiles = json.loads(doc["data"]["config.json"])["gpu-config-profiles"]
    assert set(profiles) == {"cpx-profile", "spx-profile", "heterogenous"}
    for name, entry in profiles.items():
        assert profile_problems(parse(entry), 8, get_spec("MI300X")) == [], name
        assert parse(entry).to_json() == {"skippedGPUs": {"ids": []}, "profiles": entry["profiles"]}


@pytest.mark.parametrize("entries, skipped, gpus, expect", [
    ([("SPX", "NPS1", 6)], (), 8, "must equal the node's 8 GPUs"),
    ([("SPX", "NPS1", 6)], (6, 7), 8, None),
    ([("SPX", "NPS1", 6)], (6, 8), 8, "out of range"),
    ([("DPX", "NPS1", 8)], (), 8, "only SPX and CPX"),
    ([("CPX", "NPS2", 8)], (), 8, "only NPS1 and NPS4"),
    ([("SPX", "NPS4", 8)], (), 8, "NPS4 is supported only with CPX"),
    ([("CPX", "NPS4", 4), ("CPX", "NPS1", 4)], (), 8, "cannot be combined"),
    ([("SPX", "NPS1", 4), ("CPX", "NPS4", 4)], (), 8, "cannot be combined"),
])
def test_profile_checks(entries, skipped, gpus, expect):
    profile = DcmProfile("p", tuple(ProfileEntry(PartitionType(C(c), M(m)), n) for c, m, n in entries), skipped)
    problems = profile_problems(profile, gpus)
    if expect is None:
        assert problems == []
    else:
        assert any(expect in p for p in problems), problems


def test_gpu_model_pairs_are_checked_too():
    nps4 = DcmProfile("p", (ProfileEntry(PartitionType(C.CPX, M.NPS4), 8),))
    assert profile_problems(nps4, 8, get_spec("MI300X")) == []
    assert any("not a valid pair on MI355X" in p for p in profile_problems(nps4, 8, get_spec("MI355X")))


@pytest.mark.parametrize("model", ["MI300X", "MI325X", "MI355X", "MI300A"])
@pytest.mark.parametrize("heterogeneous", [False, True])
def test_every_candidate_profile_passes_dcm_and_the_gpu_model(model, heterogeneous):
    spec = get_spec(model)
    profiles = candidate_profiles(spec, 8, heterogeneous)
    assert profiles and len({p.name for p in profiles}) == len(profiles)
    for p in profiles:
        assert profile_problems(p, 8, spec) == [], p.name
        assert len(p.name) <= 63 and p.name == p.name.lower()
    kinds = {e.kind for p in profiles for e in p.entries}
    assert (PartitionType(C.CPX, M.NPS4) in kinds) == spec.is_valid(C.CPX, M.NPS4)
    mixed = [p for p in profiles if len(p.entries) > 1]
    assert len(mixed) == (7 if heterogeneous and spec.is_valid(C.SPX, M.NPS1) and spec.is_valid(C.CPX, M.NPS1) else 0)


def test_partition_counts_follow_the_catalog():
    spec = get_spec("MI300X")
    mixed = DcmProfile("m", (ProfileEntry(PartitionType(C.SPX, M.NPS1), 5), ProfileEntry(PartitionType(C.CPX, M.NPS1), 3)))
    # The device plugin's own example: 5 SPX-NPS1 + 3 CPX-NPS1 GPUs -> spx_nps1: 5, cpx_nps1: 24
    # (ROCm/gpu-operator docs/device_plugin/device-plugin.md, "Mixed").
    counts = {k.resource: v for k, v in partition_counts(spec, mixed).items()}
    assert counts == {"amd.com/spx_nps1": 5, "amd.com/cpx_nps1": 24}
