"""``gpu-sharing doctor``: qualify a node in one command, and check the simulator's assumptions on it.

Each check compares one fact of the node with what gpu-sharing assumes, and says PASS / WARN /
FAIL / SKIP with the measured value, the expectation, a fix and the fact's source. The same checks
run on a real node (``probe.RealProbe``) and on the simulator (``simulated.SimulatedProbe``), whose
every answer names the simulator rule and the real-stack source it copies.

API for the CLI: ``run_checks(ctx) -> list[Check]``, ``running_processes(ctx)``, ``save_facts(ctx)``.
Modules: checks (types), context, probe (real node), simulated, versions, hardware, permissions,
kernel_behaviour, deep, vllm_flags.
"""

from __future__ import annotations

from pathlib import Path

from gpu_sharing.doctor import deep, hardware, kernel_behaviour, permissions, versions
from gpu_sharing.doctor.checks import Check, Family, Status
from gpu_sharing.doctor.context import DoctorContext
from gpu_sharing.hardware.node_facts import Drain, KfdModeSwitch, NodeFacts, save_node_facts
CHECK_FAMILIES = (versions.CHECKS, hardware.CHECKS, permissions.CHECKS, kernel_behaviour.CHECKS, deep.CHECKS)


def run_checks(ctx: DoctorContext) -> list[Check]:
    return [fn(ctx) for family in CHECK_FAMILIES for fn in family]


def running_processes(ctx: DoctorContext) -> list[str]:
    """GPU processes on the node (``--deep`` refuses to run next to them); [] when the GPUs are unreadable."""
    inv = ctx.inventory(fresh=True)
    if inv is None:
        return []
    return [f"pid {x.pid} {x.name} on {p.id}" for g in inv.gpus for p in g.partitions for x in p.processes]


def save_facts(ctx: DoctorContext) -> Path | None:
    """Write what the KFD check decided to <state_dir>/node-facts.json (hardware.node_facts) for the daemon."""
    if "kfd_mode_switch" not in ctx.facts:
        return None
    facts = NodeFacts(KfdModeSwitch(ctx.facts["kfd_mode_switch"]), Drain(ctx.facts["drain"]),
                      bool(ctx.facts.get("measured")))
    return save_node_facts(ctx.state_dir, facts)


__all__ = ["Check", "DoctorContext", "Family", "Status", "run_checks", "running_processes", "save_facts"]
