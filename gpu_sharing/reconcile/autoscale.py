"""Demand-driven replica targets: cold start, scale up, scale down, idle unload, eviction for a cold start.

Why pure and here: the decision needs the config (scaling settings, priorities) and the
router's demand figures, and nothing else; the daemon feeds it samples and a clock, then
hands the targets to the Reconciler, whose desired-state function plans them like any
replica count (placed priority first). Keeping it free of I/O makes the rules testable
with an injected clock and reusable by ``benchmarks/demand.py``.

Rules, per model with ``scaling`` (targets of other models are not touched):

* cold start: a request is held and the target is 0 -> target 1, at once;
* scale up: outstanding (in flight + held) per replica above ``target_queue_per_replica``
  for ``scale_up_after_s`` -> one more, up to ``max_replicas``;
* scale down (hysteresis): outstanding at or below half the target for one replica fewer, for
  ``scale_down_after_s`` -> one fewer, never below ``min_replicas`` nor below 1 while requests run;
* idle unload: nothing in flight or held and no request for ``idle_unload_s`` -> ``min_replicas``;
* eviction: a held model the planner could not place takes room from idle models (nothing in
  flight or held) of lower or equal priority, one replica each pass, never below their min;
  a busy model or a higher-priority one is never evicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, Sequence

from gpu_sharing.config.schema import Config, ModelSettings


class ScaleKind(str, Enum):
    COLD_START = "cold-start"
    SCALE_UP = "scale-up"
    SCALE_DOWN = "scale-down"
    IDLE_UNLOAD = "idle-unload"
    EVICT = "evict"


@dataclass(frozen=True)
class DemandSample:
    """What the router saw for one model at ``now`` (monotonic seconds)."""

    model: str
    in_flight: int = 0
    held: int = 0
    last_request_at: float | None = None


@dataclass(frozen=True)
class ScaleDecision:
    model: str
    kind: ScaleKind
    from_replicas: int
    to_replicas: int
    reason: str


@dataclass
class _ModelState:
    target: int
    since: float
    """When this model came under the autoscaler: idle time counts from here until its first request."""
    above_since: float | None = None
    below_since: float | None = None


@dataclass
class Autoscaler:
    """Keeps each scaled model's target and the time its load crossed a threshold (for the delays)."""

    states: dict[str, _ModelState] = field(default_factory=dict)

    def targets(self) -> dict[str, int]:
        return {m: s.target for m, s in self.states.items()}

    def sync(self, config: Config, now: float) -> None:
        """Start targets for newly scaled models (``min_replicas``); forget removed ones."""
        scaled = {m.name: m for m in config.models if m.scaling is not None and m.enabled}
        for name in list(self.states):
            if name not in scaled:
                del self.states[name]
        for name, m in scaled.items():
            sc = m.scaling
            st = self.states.setdefault(name, _ModelState(
                target=sc.min_replicas, since=now))
            st.target = min(max(st.target, sc.min_replicas), sc.max_replicas)

    def decide(self, config: Config, samples: Mapping[str, DemandSample], now: float,
               unplaced: Sequence[str] = ()) -> list[ScaleDecision]:
        """New targets from demand at ``now``; ``unplaced``: scaled models the last plan could not place."""
        self.sync(config, now)
        models = {m.name: m for m in config.models if m.name in self.states}
        decisions: list[ScaleDecision] = []
        for name, m in sorted(models.items()):
            d = self._decide_one(m, samples.get(name, DemandSample(name)), now)
            if d is not None:
                decisions.append(d)
        for name in sorted(set(unplaced) & set(models)):
            victim = self._evict_for(models[name], models, samples)
            if victim is not None:
                decisions.append(victim)
        return decisions

    def _decide_one(self, m: ModelSettings, s: DemandSample, now: float) -> ScaleDecision | None:
        sc, st = m.scaling, self.states[m.name]
        outstanding = s.in_flight + s.held
        if st.target == 0:
            st.above_since = st.below_since = None
            if s.held > 0:
                return self._set(m, ScaleKind.COLD_START, 1, f"{s.held} request(s) held and no replica")
            return None
        idle_for = now - (st.since if s.last_request_at is None else max(s.last_request_at, st.since))
        if (outstanding == 0 and sc.idle_unload_s is not None and st.target > sc.min_replicas
                and idle_for >= sc.idle_unload_s):
            return self._set(m, ScaleKind.IDLE_UNLOAD, sc.min_replicas, f"no request for {idle_for:.0f} s "
                             f"(idle_unload_s {sc.idle_unload_s:g})")
        if outstanding / st.target > sc.target_queue_per_replica and st.target < sc.max_replicas:
            st.below_since = None
            st.above_since = now if st.above_since is None else st.above_since
            if now - st.above_since >= sc.scale_up_after_s:
                return self._set(m, ScaleKind.SCALE_UP, st.target + 1,
                                 f"{outstanding} outstanding for {st.target} replica(s) > "
                                 f"{sc.target_queue_per_replica:g} per replica for {sc.scale_up_after_s:g} s")
            return None
        st.above_since = None
        floor = max(sc.min_replicas, 1 if outstanding else 0, 1)
        if st.target > floor and outstanding <= (st.target - 1) * sc.target_queue_per_replica / 2:
            st.below_since = now if st.below_since is None else st.below_since
            if now - st.below_since >= sc.scale_down_after_s:
                return self._set(m, ScaleKind.SCALE_DOWN, st.target - 1,
                                 f"{outstanding} outstanding fit in {st.target - 1} replica(s) at half the target "
                                 f"for {sc.scale_down_after_s:g} s")
        else:
            st.below_since = None
        return None

    def _evict_for(self, needy: ModelSettings, models: Mapping[str, ModelSettings],
                   samples: Mapping[str, DemandSample]) -> ScaleDecision | None:
        held = samples.get(needy.name, DemandSample(needy.name)).held
        if held == 0:
            return None
        idle = [m for n, m in models.items() if n != needy.name and m.priority <= needy.priority
                and self.states[n].target > m.scaling.min_replicas
                and samples.get(n, DemandSample(n)).in_flight == 0 and samples.get(n, DemandSample(n)).held == 0]
        if not idle:
            return None
        # the least valuable first: lowest priority, then the longest idle, then the name
        victim = min(idle, key=lambda m: (m.priority, samples.get(m.name, DemandSample(m.name)).last_request_at or 0.0,
                                          m.name))
        return self._set(victim, ScaleKind.EVICT, self.states[victim.name].target - 1,
                         f"room for {needy.name} (priority {needy.priority}), which has {held} request(s) held; "
                         f"{victim.name} (priority {victim.priority}) is idle")

    def _set(self, m: ModelSettings, kind: ScaleKind, to: int, reason: str) -> ScaleDecision:
        st = self.states[m.name]
        d = ScaleDecision(m.name, kind, st.target, to, reason)
        st.target, st.above_since, st.below_since = to, None, None
        return d
