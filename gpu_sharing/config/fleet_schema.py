"""The fleet description (``--fleet FILE``, e.g. ``config/fleet.yaml``), version v1, strict.

A fleet is a set of Kubernetes node pools that AMD's GPU Operator partitions. It says
what hardware exists (GPU model, GPUs per node, how many nodes or their names) and,
optionally, a partition profile a pool must keep; the fleet planner chooses the rest.
Nothing here needs local hardware: the catalog gives every partition's size.
Field docstrings become the JSON Schema descriptions (``gpu-sharing schema --fleet``).
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gpu_sharing.config.loader import read_yaml, validate_data
from gpu_sharing.config.strict import Strict, known_gpu_model
from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.dcm import DcmProfile, PartitionType, ProfileEntry, profile_name, profile_problems
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""Kubernetes node names (k8s.io/apimachinery pkg/util/validation/validation.go, IsDNS1123Subdomain; <= 253)."""
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""Namespaces and pool names (IsDNS1123Label; <= 63)."""


class PoolSettings(Strict):
    name: str = Field(pattern=DNS1123_LABEL, max_length=40)
    """Pool name (a DNS-1123 label); generated node names are <name>-<index>."""
    gpu_model: str
    """GPU model of every node in the pool: MI300X, MI325X, MI350X, MI355X or MI300A."""
    gpus_per_node: int = Field(8, ge=1, le=64)
    """Physical GPUs per node (DCM's numGPUsAssigned must add up to it)."""
    nodes: int | None = Field(None, ge=1, le=10_000)
    """Number of nodes, when their names are not known yet (names are then placeholders)."""
    node_names: list[str] | None = None
    """Kubernetes node names (metadata.name); give this or `nodes`."""
    profile: str = "auto"
    """auto (the planner chooses per node), or a pair every node keeps: SPX+NPS1, CPX+NPS1, CPX+NPS4."""
    heterogeneous_profiles: bool = False
    """Allow profiles mixing SPX+NPS1 and CPX+NPS1 GPUs on one node. DCM accepts them, but
    AMD calls them "not a recommended or supported configuration"."""

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        return known_gpu_model(v)

    @field_validator("node_names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("node_names must list at least one node")
        for n in v:
            if len(n) > 253 or not re.match(DNS1123_SUBDOMAIN, n):
                raise ValueError(f"node name {n!r} is not a Kubernetes node name (DNS-1123 subdomain: "
                                 "lower-case letters, digits, '-' and '.', at most 253 characters)")
        if len(set(v)) != len(v):
            raise ValueError("node_names repeat: " + ", ".join(sorted({n for n in v if v.count(n) > 1})))
        return v

    @model_validator(mode="after")
    def _checks(self) -> "PoolSettings":
        if (self.nodes is None) == (self.node_names is None):
            raise ValueError(f"pool {self.name}: give exactly one of `nodes` (a count) or `node_names`")
        if self.profile != "auto":
            kind = parse_pair(self.profile)
            entries = (ProfileEntry(kind, self.gpus_per_node),)
            problems = profile_problems(DcmProfile("pinned", entries), self.gpus_per_node, get_spec(self.gpu_model))
            if problems:
                raise ValueError(f"pool {self.name}: profile {self.profile}: " + "; ".join(problems))
        return self

    @property
    def node_list(self) -> list[str]:
        return list(self.node_names) if self.node_names is not None else [f"{self.name}-{i}" for i in range(self.nodes or 0)]

    @property
    def placeholder_names(self) -> bool:
        return self.node_names is None

    def pinned_profile(self) -> DcmProfile | None:
        if self.profile == "auto":
            return None
        entries = (ProfileEntry(parse_pair(self.profile), self.gpus_per_node),)
        return DcmProfile(profile_name(self.gpu_model, entries), entries)


class DcmSettings(Strict):
    namespace: str = Field("kube-amd-gpu", pattern=DNS1123_LABEL, max_length=63)
    """Namespace of the GPU Operator (kube-amd-gpu; openshift-amd-gpu on OpenShift)."""
    configmap: str = Field("config-manager-config", pattern=DNS1123_SUBDOMAIN, max_length=253)
    """The ConfigMap DeviceConfig's spec.configManager.config.name points at."""


class KServeSettings(Strict):
    namespace: str = Field("default", pattern=DNS1123_LABEL, max_length=63)
    """Namespace of the ServingRuntime and InferenceServices (it bounds their name length)."""
    image_tag: str = Field("v0.33.0", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    """Tag of vllm/vllm-openai-rocm."""
    deployment_mode: Literal["Standard", "Knative"] = "Standard"
    """serving.kserve.io/deploymentMode annotation (Standard = raw Deployments)."""


class FleetPlannerSettings(Strict):
    time_budget_s: float = Field(5.0, gt=0, le=600)
    """Solver time for the whole fleet plan (split over its three objectives)."""


class Fleet(Strict):
    version: Literal["v1"] = "v1"
    pools: list[PoolSettings] = Field(min_length=1)
    dcm: DcmSettings = DcmSettings()
    kserve: KServeSettings = KServeSettings()
    planner: FleetPlannerSettings = FleetPlannerSettings()

    @model_validator(mode="after")
    def _unique(self) -> "Fleet":
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError("pool names repeat: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
        seen: dict[str, str] = {}
        for p in self.pools:
            for n in p.node_list:
                if n in seen:
                    raise ValueError(f"node {n} is in pools {seen[n]} and {p.name}")
                seen[n] = p.name
        return self


def parse_pair(text: str) -> PartitionType:
    """``CPX+NPS4`` -> PartitionType; ValueError naming what is allowed."""
    parts = text.upper().split("+")
    try:
        if len(parts) != 2:
            raise ValueError
        return PartitionType(ComputePartitionMode(parts[0]), MemoryPartitionMode(parts[1]))
    except ValueError:
        raise ValueError(f"profile {text!r} must be auto or COMPUTE+MEMORY, e.g. SPX+NPS1, CPX+NPS1, CPX+NPS4") from None


def load_fleet(path: str | os.PathLike[str]) -> Fleet:
    """Load a fleet file. Raises ConfigError (exit code 2) naming the file and every bad key."""
    return validate_data(Fleet, read_yaml(path), str(path))
