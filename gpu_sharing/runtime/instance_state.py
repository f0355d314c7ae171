"""Per-instance lifecycle states and the one table of allowed transitions.

Why a table: supervision bugs are mostly "impossible" moves (READY -> STARTING
without a stop, a second spawn while one runs). Every move goes through
``check_transition``; an illegal one raises ``IllegalTransition`` naming the
instance, where it is and where it tried to go, so the bug surfaces at once.

    PENDING  -> STAGING -> STARTING -> READY
                  ^           |          |
                  |           v          v
                  +------- BACKOFF <-----+      (crash, start timeout, failed health)
                              |
                              v
                            FAILED               (too many restarts within the window)
    any live state -> STOPPING -> STOPPED
"""

from __future__ import annotations

from enum import Enum

from gpu_sharing.errors import GpuSharingError


class InstanceState(str, Enum):
    PENDING = "PENDING"
    """Known, not yet considered for a start."""
    STAGING = "STAGING"
    """Waiting for partition neighbours to finish starting (vLLM profiles memory at start)."""
    STARTING = "STARTING"
    """Process spawned; /health not yet 200."""
    READY = "READY"
    BACKOFF = "BACKOFF"
    """Crashed or timed out; waiting before the next start."""
    FAILED = "FAILED"
    """Gave up: too many restarts within the window. Only a config change or stop clears it."""
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value

    @property
    def live(self) -> bool:
        """A process may exist in this state."""
        return self in (InstanceState.STARTING, InstanceState.READY, InstanceState.STOPPING)


S = InstanceState

TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.PENDING: frozenset({S.STAGING, S.STARTING, S.READY, S.STOPPING, S.STOPPED}),
    # PENDING -> READY only for adopted processes that already answer /health.
    S.STAGING: frozenset({S.STARTING, S.BACKOFF, S.STOPPING, S.STOPPED}),
    S.STARTING: frozenset({S.READY, S.BACKOFF, S.FAILED, S.STOPPING}),
    S.READY: frozenset({S.BACKOFF, S.FAILED, S.STOPPING}),
    S.BACKOFF: frozenset({S.STAGING, S.FAILED, S.STOPPING, S.STOPPED}),
    S.FAILED: frozenset({S.STAGING, S.STOPPING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset({S.STAGING}),
}
"""Allowed moves. FAILED -> STAGING is an explicit operator/config restart."""


class IllegalTransition(GpuSharingError):
    """A supervisor bug: a move the table does not allow."""

    def __init__(self, instance_id: str, current: InstanceState, target: InstanceState):
        self.instance_id = instance_id
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none"
        super().__init__(f"instance {instance_id}: illegal transition {current.value} -> {target.value} "
                         f"(allowed from {current.value}: {allowed})")


def check_transition(instance_id: str, current: InstanceState, target: InstanceState) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(instance_id, current, target)


def backoff_delay_s(restart_number: int, initial_s: float, max_s: float) -> float:
    """Capped exponential backoff: initial, 2x, 4x ... never above max_s. restart_number starts at 1."""
    if restart_number < 1:
        return 0.0
    return min(max_s, initial_s * (2.0 ** min(restart_number - 1, 60)))
