"""When a compute-partition change needs the whole node drained, and why.

The kernel's KFD refuses a compute-partition switch while a KFD process has a context on that GPU
(amd-gfx "drm/amdkfd: allow compute partition mode switch with cgroup exclusions", J. Kim, 29 May
2025: ``kgd2kfd_check_and_lock_kfd`` is -EBUSY if any process has a process-device entry there).
Every process that opens /dev/kfd gets such an entry on every GPU its device cgroup allows
(``kfd_init_apertures``, kfd_flat_memory.c); HIP_VISIBLE_DEVICES/ROCR_VISIBLE_DEVICES do not limit
it. Before that change, any KFD process anywhere blocked every switch. So:

* ``node.kfd_mode_switch: strict`` (kernels without the change): any running instance blocks;
* ``cgroup_exclusion`` with ``launcher: direct``: an instance has no device cgroup, so it still has
  a context on every GPU and blocks;
* ``cgroup_exclusion`` with ``launcher: systemd-run``: an instance's unit allows only its own render
  nodes, so only instances on the GPU being changed block it (the applier stops those anyway).

In the first two cases a plan that changes any GPU's compute mode needs a node-wide drain: stop every
instance, repartition, start them again. The simulator models both kernels (simulator/node_modes.py).
The planner counts the drain as disruption (``PlannerPolicy.repartition_drains_node``, set from
``drains_node`` by ``demands.policy_from_config``); the applier executes it from ``drain_reason``.
"""

from __future__ import annotations

from gpu_sharing.config.schema import Config, KfdModeSwitch, LauncherKind
from gpu_sharing.planner.types import Plan


def drains_node(config: Config) -> bool:
    """Whether any compute-partition change on this node stops every instance (the cases above)."""
    node = config.node
    return not (node.kfd_mode_switch == KfdModeSwitch.CGROUP_EXCLUSION and node.launcher == LauncherKind.SYSTEMD_RUN)


def drain_reason(plan: Plan, config: Config) -> str | None:
    """Why applying ``plan`` must first stop every instance on the node, or None when it need not."""
    changing = sorted(t.gpu for t in plan.to_repartition if t.compute_changes)
    if not changing:
        return None
    if not drains_node(config):
        return None
    node = config.node
    gpus = ", ".join(map(str, changing))
    if node.kfd_mode_switch == KfdModeSwitch.STRICT:
        why = "node.kfd_mode_switch is strict: any GPU process on the node blocks a compute-partition change"
    else:
        why = ("launcher direct: instances have no device cgroup, so each one holds a KFD context on every GPU "
               "and blocks a compute-partition change")
    return f"compute partition change on GPU {gpus} needs a node-wide drain ({why})"
