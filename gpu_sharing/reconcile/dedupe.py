"""Group identical model entries so one vLLM process serves several names.

Two config entries that would start byte-identical vLLM processes (same
weights, revision, quantization, dtype, context length, limits, env, extra
vLLM arguments, ...) waste a whole copy of the weights and KV cache if run
separately.  ``group_identical`` folds them into one ``InstanceGroup`` whose
process is launched with ``--served-model-name a b`` so the router can map
both names to the same upstream.

What is compared: every ``ModelSettings`` field except the ones that only
name or weigh the entry (``name``, ``aliases``, ``replicas``, ``priority``).
Anything else changes the process or when it runs, so it splits groups.

How the group's weights combine (a deliberate choice):

* ``replicas = max(replicas)``: each member asks for "at least N copies of
  this process"; the shared process already serves every member, so summing
  would double the GPU memory for no extra capacity a single member asked
  for.  A member with ``replicas: 0`` does not shrink the group.
* ``priority = max(priority)``: the group must not be evicted before its most
  important member would be.

Order is stable: groups appear in the order of their first member, and the
first member is the group's primary (its name is the instance id stem and
the first served name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from gpu_sharing.config.schema import ModelSettings

#: Fields that name or weigh an entry but do not change the vLLM process.
IDENTITY_ONLY_FIELDS: frozenset[str] = frozenset({"name", "aliases", "replicas", "priority"})


@dataclass(frozen=True)
class InstanceGroup:
    """One vLLM process shape serving one or more config entries."""

    primary: ModelSettings
    member_names: tuple[str, ...]
    served_names: tuple[str, ...]
    replicas: int
    priority: int

    @property
    def name(self) -> str:
        """The primary member's name (stable id for the group)."""
        return self.primary.name

    @property
    def is_shared(self) -> bool:
        """True when more than one config entry runs in this process."""
        return len(self.member_names) > 1

    def settings(self) -> ModelSettings:
        """The primary's settings with the group's replicas and priority.

        Hand this to demands/planner/launch code that expects one
        ``ModelSettings`` per instance; pass ``served_names`` to
        ``build_launch_spec(served_names=...)``.
        """
        return self.primary.model_copy(
            update={"replicas": self.replicas, "priority": self.priority}
        )

    def route_table(self) -> dict[str, str]:
        """Served name -> group name, for the router."""
        return {served: self.name for served in self.served_names}


def process_key(model: ModelSettings) -> str:
    """A canonical string of everything that changes the vLLM process."""
    data: dict[str, Any] = model.model_dump(mode="json", exclude=set(IDENTITY_ONLY_FIELDS))
    return json.dumps(data, sort_keys=True, default=str)


def group_identical(models: Iterable[ModelSettings]) -> list[InstanceGroup]:
    """Fold entries with identical process settings into shared instances."""
    buckets: dict[str, list[ModelSettings]] = {}
    for model in models:
        buckets.setdefault(process_key(model), []).append(model)
    groups: list[InstanceGroup] = []
    for members in buckets.values():
        served: list[str] = []
        for member in members:
            for served_name in (member.name, *member.aliases):
                if served_name not in served:
                    served.append(served_name)
        groups.append(
            InstanceGroup(
                primary=members[0],
                member_names=tuple(m.name for m in members),
                served_names=tuple(served),
                replicas=max(m.replicas for m in members),
                priority=max(m.priority for m in members),
            )
        )
    return groups


def merged_config(config):
    """The config with identical entries folded: one model per group, the others' names as aliases.

    The launch spec then emits ``--served-model-name a b`` and the router maps both names to the
    one process; nothing downstream needs to know about groups.
    """
    groups = group_identical([m for m in config.models if m.enabled])
    if all(not g.is_shared for g in groups):
        return config
    disabled = [m for m in config.models if not m.enabled]
    models = [g.settings().model_copy(update={"aliases": list(g.served_names[1:])}) for g in groups]
    return config.model_copy(update={"models": models + disabled})
