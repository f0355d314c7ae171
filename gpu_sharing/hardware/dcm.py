"""AMD GPU Operator facts: DCM partition profiles and the device plugin's resource names.

On Kubernetes, AMD's GPU Operator partitions a node through its Device Config Manager
(DCM): a ConfigMap lists named profiles and the node label
``dcm.amd.com/gpu-config-profile=<name>`` picks one per node. Its device plugin then
advertises the partitions as extended resources. The rules below are DCM's own checks,
copied from ROCm/gpu-operator (commit 32919eeb1e4663bd6e7d6fa7560cbfedf65cfd61),
docs/dcm/device-config-manager-configmap.md, "ConfigMap Profile Checks" and "Supported
Partition Modes":
- compute types SPX or CPX; memory types NPS1 or NPS4; NPS4 only with CPX;
- NPS1 and NPS4 cannot be combined in one profile ("NPS4 memory partition mode does
  not work with heterogenous partition schemes");
- sum of ``numGPUsAssigned`` + len(``skippedGPUs.ids``) == the node's GPU count, and
  skipped ids range over 0..count-1.
A profile with more than one entry ("heterogeneous") is accepted by DCM but "not a
recommended or supported configuration by AMD" (same page): we only plan one when a pool
allows it. Each pair must also be valid for the GPU model (hardware.catalog): the
MI350X/MI355X offer no NPS4, so CPX+NPS4 never appears on them.

Resource names (ROCm/gpu-operator commit 1782ce0dc0ad5e2f8d146248068d2d03b45abf49,
docs/device_plugin/device-plugin.md, "How to choose Resource Naming Strategy"): with
``resource_naming_strategy: mixed`` a partition is ``amd.com/<compute>_<memory>`` in lower
case (``amd.com/cpx_nps4``, ``amd.com/spx_nps1``); ``single`` (``amd.com/gpu``) is "not
supported for heterogeneous nodes". We always request the mixed names, so the exact
partition type a pod gets is the one the plan sized it for.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_sharing.hardware.catalog import GpuModelSpec
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M

PROFILE_LABEL = "dcm.amd.com/gpu-config-profile"
DCM_COMPUTE = (C.SPX, C.CPX)
DCM_MEMORY = (M.NPS1, M.NPS4)


@dataclass(frozen=True, order=True)
class PartitionType:
    """One (compute, memory) pair as the device plugin names its resource."""

    compute: C
    memory: M

    @property
    def resource(self) -> str:
        """Mixed-strategy extended resource name, e.g. ``amd.com/cpx_nps4``."""
        return f"amd.com/{self.compute.value.lower()}_{self.memory.value.lower()}"

    def __str__(self) -> str:
        return f"{self.compute.value}+{self.memory.value}"


@dataclass(frozen=True)
class ProfileEntry:
    """One element of a DCM profile's ``profiles`` array."""

    kind: PartitionType
    gpus: int
    """numGPUsAssigned."""


@dataclass(frozen=True)
class DcmProfile:
    """A DCM partition profile for nodes of one GPU model and GPU count."""

    name: str
    entries: tuple[ProfileEntry, ...]
    skipped_gpu_ids: tuple[int, ...] = ()

    @property
    def gpus(self) -> int:
        return sum(e.gpus for e in self.entries) + len(self.skipped_gpu_ids)

    def to_json(self) -> dict:
        """The value under ``gpu-config-profiles.<name>`` in DCM's config.json."""
        return {"skippedGPUs": {"ids": list(self.skipped_gpu_ids)},
                "profiles": [{"computePartition": e.kind.compute.value, "memoryPartition": e.kind.memory.value,
                              "numGPUsAssigned": e.gpus} for e in self.entries]}


def profile_problems(profile: DcmProfile, node_gpus: int, spec: GpuModelSpec | None = None) -> list[str]:
    """Every DCM check this profile fails on a node with ``node_gpus`` GPUs (empty: valid)."""
    out = []
    for e in profile.entries:
        if e.kind.compute not in DCM_COMPUTE:
            out.append(f"computePartition {e.kind.compute.value}: DCM supports only SPX and CPX")
        if e.kind.memory not in DCM_MEMORY:
            out.append(f"memoryPartition {e.kind.memory.value}: DCM supports only NPS1 and NPS4")
        if e.kind.memory == M.NPS4 and e.kind.compute != C.CPX:
            out.append(f"{e.kind}: NPS4 is supported only with CPX")
        if e.gpus < 1:
            out.append(f"{e.kind}: numGPUsAssigned must be at least 1")
        if spec is not None and not spec.is_valid(e.kind.compute, e.kind.memory):
            out.append(f"{e.kind} is not a valid pair on {spec.name} (valid: {spec.describe_valid_pairs()})")
    memories = {e.kind.memory for e in profile.entries}
    if M.NPS4 in memories and len(profile.entries) > 1:
        out.append("NPS4 cannot be combined with other entries in one profile")
    if len(memories) > 1:
        out.append("NPS1 and NPS4 cannot be combined in one profile")
    if profile.gpus != node_gpus:
        out.append(f"numGPUsAssigned ({sum(e.gpus for e in profile.entries)}) + skipped GPUs "
                   f"({len(profile.skipped_gpu_ids)}) must equal the node's {node_gpus} GPUs")
    bad = [i for i in profile.skipped_gpu_ids if not 0 <= i < node_gpus]
    if bad:
        out.append(f"skippedGPUs ids {bad} out of range 0..{node_gpus - 1}")
    if len(set(profile.skipped_gpu_ids)) != len(profile.skipped_gpu_ids):
        out.append("skippedGPUs ids repeat")
    return out


def profile_name(gpu_model: str, entries: tuple[ProfileEntry, ...]) -> str:
    """Deterministic name, e.g. ``mi300x-8-cpx-nps4`` or ``mi300x-8-spx-nps1-2-cpx-nps1-6``.

    The GPU model and count are part of the name so that the profile label alone tells a
    pod's node selector which partition size it gets (MI300X and MI325X share profiles
    otherwise, with 24 and 32 GB CPX partitions). A valid label value (<= 63 characters).
    """
    gpus = sum(e.gpus for e in entries)
    if len(entries) == 1:
        parts = [f"{entries[0].kind.compute.value}-{entries[0].kind.memory.value}"]
    else:
        parts = [f"{e.kind.compute.value}-{e.kind.memory.value}-{e.gpus}" for e in entries]
    return "-".join([gpu_model, str(gpus), *parts]).lower()


def candidate_profiles(spec: GpuModelSpec, node_gpus: int, heterogeneous: bool) -> tuple[DcmProfile, ...]:
    """Every profile DCM accepts for such a node: homogeneous SPX+NPS1, CPX+NPS1, CPX+NPS4
    where the GPU model offers them; with ``heterogeneous``, also k SPX+NPS1 with
    node_gpus-k CPX+NPS1 (NPS4 never mixes). Nothing is skipped: a skipped GPU keeps
    whatever mode it has, which a plan cannot count on."""
    kinds = [PartitionType(c, m) for c in DCM_COMPUTE for m in DCM_MEMORY
             if spec.is_valid(c, m) and not (m == M.NPS4 and c != C.CPX)]
    entries: list[tuple[ProfileEntry, ...]] = [(ProfileEntry(k, node_gpus),) for k in kinds]
    spx, cpx = PartitionType(C.SPX, M.NPS1), PartitionType(C.CPX, M.NPS1)
    if heterogeneous and spx in kinds and cpx in kinds:
        entries += [(ProfileEntry(spx, k), ProfileEntry(cpx, node_gpus - k)) for k in range(1, node_gpus)]
    return tuple(DcmProfile(profile_name(spec.name, e), e) for e in entries)


def partitions_per_gpu(spec: GpuModelSpec, kind: PartitionType) -> int:
    return spec.partitions(kind.compute)


def partition_counts(spec: GpuModelSpec, profile: DcmProfile) -> dict[PartitionType, int]:
    """How many of each resource the device plugin advertises on a node with this profile."""
    out: dict[PartitionType, int] = {}
    for e in profile.entries:
        out[e.kind] = out.get(e.kind, 0) + e.gpus * spec.partitions(e.kind.compute)
    return out
