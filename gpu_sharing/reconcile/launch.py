"""From a placement to an InstanceLaunch: vLLM argv/env, CU masks, and confinement.

Why here (reconcile) and not in runtime: a launch needs the placement (planner),
the partitions of the NEW inventory (after a repartition, HIP indices change),
the model's limits (isolation) and the launch spec (runtime); the reconcile layer
is the lowest that sees all four. The Reconciler receives ``build_launch`` and
``cu_sharing.cu_masks_for`` as injected collaborators (see ``collaborators.py``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.errors import OperationError
from gpu_sharing.hardware.inventory import Inventory, LogicalPartition
from gpu_sharing.isolation import ComputeLimits, ResourceIsolator
from gpu_sharing.isolation.visibility import apply_visibility
from gpu_sharing.planner.types import Placement
from gpu_sharing.reconcile.cache_env import cache_env
from gpu_sharing.runtime.launch_spec import build_launch_spec
from gpu_sharing.runtime.markers import MARKER_ENV, RECORD_ENV, STATE_DIR_ENV, marker_env
from gpu_sharing.runtime.port_owner import listener_belongs_to
from gpu_sharing.runtime.ports import PortAllocator, port_is_free
from gpu_sharing.runtime.spawner import group_pids
from gpu_sharing.runtime.supervisor import InstanceLaunch

SYS_NODE_DIR = "/sys/devices/system/node"
MARKER_KEYS = frozenset({MARKER_ENV, STATE_DIR_ENV, RECORD_ENV})


def build_launch(placement: Placement, partitions: Sequence[LogicalPartition], port: int, cu_mask: str | None,
                 inventory: Inventory, *, config: Config, fingerprint: str,
                 config_dir: Path | None = None) -> InstanceLaunch:
    """argv/env from runtime.launch_spec; confinement from isolation: a preexec hook (CPU pinning to the
    GPU's NUMA node, user drop) for the direct launcher, or a systemd-run wrapper around argv."""
    model = next((m for m in config.models if m.name == placement.model), None)
    if model is None:
        raise OperationError(f"{placement.instance_id}: model {placement.model!r} is not in the config")
    spec = build_launch_spec(
        instance_id=placement.instance_id, model=model, vllm=config.vllm, partitions=list(partitions),
        tp=placement.tp, port=port, memory_bytes_per_rank=placement.memory_bytes_per_rank, cu_mask=cu_mask,
        config_dir=config_dir)
    # Devices by ROCR_VISIBLE_DEVICES, right inside the launcher's confinement, so the mask's "0:" is ours;
    # caches under the state dir (cache_env).
    env, _ = apply_visibility(cache_env(config, spec.env), [p.hip_index for p in partitions], config.node.launcher)
    argv, preexec = _confine(config, model, placement, spec.argv, env, partitions, inventory)
    return InstanceLaunch(
        instance_id=placement.instance_id, model=placement.model, replica=placement.replica,
        fingerprint=fingerprint, served_names=tuple(spec.served_names),
        partitions=tuple(str(ref) for ref in placement.partitions),
        hip_indices=tuple(p.hip_index for p in partitions), memory_bytes_per_rank=placement.memory_bytes_per_rank,
        tp=placement.tp, argv=tuple(argv), env=tuple(sorted(env.items())), port=port,
        url=spec.url, preexec_fn=preexec)


def mark_launch(launch: InstanceLaunch, state_dir: Path | str) -> InstanceLaunch:
    """The launch with the OS marker (instance id, state dir) in its environment (``runtime.markers``), so a
    restarted controller finds this process, and its children, without any state file."""
    own = dict(launch.env)
    record = {"model": launch.model, "replica": launch.replica, "fingerprint": launch.fingerprint,
              "served_names": list(launch.served_names), "partitions": list(launch.partitions),
              "hip_indices": list(launch.hip_indices), "memory_bytes_per_rank": launch.memory_bytes_per_rank,
              "tp": launch.tp, "port": launch.port, "url": launch.url, "env_keys": sorted(own)}
    env = {**own, **marker_env(launch.instance_id, state_dir, record)}
    return replace(launch, env=tuple(sorted(env.items())))


def relaunch_on_port(launch: InstanceLaunch, port: int, state_dir: Path | str) -> InstanceLaunch:
    """The same launch on another port: ``--port`` in argv, the URL and the marker record follow."""
    argv = list(launch.argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "--port":
            argv[i + 1] = str(port)
    head, sep, tail = launch.url.rpartition(f":{launch.port}")
    url = f"{head}:{port}{tail}" if sep else launch.url
    env = tuple((k, v) for k, v in launch.env if k not in MARKER_KEYS)
    return mark_launch(replace(launch, argv=tuple(argv), url=url, port=port, env=env), state_dir)


def port_guard(ports: PortAllocator, state_dir: Path | str) -> Callable[[InstanceLaunch], InstanceLaunch]:
    """Supervisor hook before each (re)spawn: a port that cannot be bound now (another process took it) is
    replaced by a free one, instead of restarting on it until FAILED."""
    def check(launch: InstanceLaunch) -> InstanceLaunch:
        if port_is_free(ports.host, launch.port):
            return launch
        try:
            new = ports.allocate()
        except OperationError:
            return launch  # no other port: the spawn fails and says so
        ports.release(launch.port)
        return relaunch_on_port(launch, new, state_dir)
    return check


def listener_guard(launch: InstanceLaunch, handle) -> bool | None:
    """READY gate (runtime.port_owner): the port's listener belongs to the instance's process group."""
    return listener_belongs_to(launch.port, group_pids(handle.pgid))


def _confine(config: Config, model: ModelSettings, placement: Placement, spec_argv: Sequence[str],
             env: dict[str, str], partitions: Sequence[LogicalPartition], inventory: Inventory) -> tuple[list[str], Callable[[], None] | None]:
    isolator = ResourceIsolator(launcher=config.node.launcher)
    limits = ComputeLimits.from_settings(model.limits)
    try:
        numa_node: int | None = inventory.gpu(placement.gpu).numa_node
    except KeyError:
        numa_node = None
    if numa_node is not None and not os.path.isdir(os.path.join(SYS_NODE_DIR, f"node{numa_node}")):
        numa_node = None  # the host has no such NUMA node (a simulated GPU, or NUMA off): no CPU pinning
    argv = isolator.wrap_argv(instance_id=placement.instance_id, argv=list(spec_argv), env=env,
                              limits=limits, partitions=list(partitions), numa_node=numa_node)
    return argv, isolator.preexec_for(limits, numa_node)
