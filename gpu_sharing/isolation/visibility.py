"""Which devices an instance sees, chosen together with the device index its HSA_CU_MASK names.

Why together: ROCm numbers the GPUs of ``HSA_CU_MASK`` after ``ROCR_VISIBLE_DEVICES`` filtering
("The GPU indices are taken post ROCR_VISIBLE_DEVICES reordering",
rocm.docs.amd.com/en/latest/reference/environment-variables/setting-cus.html), while
``HIP_VISIBLE_DEVICES`` filters only at the HIP layer. An instance given ``HIP_VISIBLE_DEVICES=8`` and
``HSA_CU_MASK=0:...`` therefore masks node device 0 and runs on every CU of device 8. We select the
device with ``ROCR_VISIBLE_DEVICES`` instead, so that ROCr, HIP and the mask all count the instance's
own partitions as devices ``0..tp-1`` (the masks of ``isolation.cu_masks`` are built that way).

Per launcher (the confinement decides what ROCr can enumerate):

* ``direct``: ROCr enumerates every GPU of the node: ``ROCR_VISIBLE_DEVICES=<node indices>``.
* ``systemd-run``: the unit's device cgroup (``DevicePolicy=closed`` + ``DeviceAllow=`` of the
  instance's render nodes) lets ROCr enumerate only those partitions, in node order, so inside the
  unit they are devices ``0..tp-1``; ``ROCR_VISIBLE_DEVICES`` then lists those positions in rank
  order (a node index such as 8 would name a device that does not exist in the unit). Source:
  shared reference real-stack-findings.md (ROCT drops devices whose render node it cannot open;
  unverified on hardware).

``HIP_VISIBLE_DEVICES``/``CUDA_VISIBLE_DEVICES`` are not set: HIP indices count ROCr's devices, so
repeating the node index there hides the device (SwarmUI issue #565).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpu_sharing.config.schema import LauncherKind

VISIBILITY_ENV = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
"""Variables that choose devices; the placement owns all of them."""


def visibility_env(node_indices: Sequence[int], launcher: LauncherKind | str) -> dict[str, str]:
    """The device-selecting variables for an instance on ``node_indices`` (rank order)."""
    if not node_indices:
        raise ValueError("an instance needs at least one device")
    if LauncherKind(launcher) is LauncherKind.SYSTEMD_RUN:
        in_unit = sorted(node_indices)  # the cgroup-filtered enumeration keeps node order
        picked = [in_unit.index(i) for i in node_indices]
    else:
        picked = list(node_indices)
    return {"ROCR_VISIBLE_DEVICES": ",".join(str(i) for i in picked)}


def apply_visibility(env: Mapping[str, str], node_indices: Sequence[int],
                     launcher: LauncherKind | str) -> tuple[dict[str, str], list[str]]:
    """``env`` with every device-selecting variable replaced by the placement's; warnings for dropped ones."""
    out = dict(env)
    warnings = []
    wanted = visibility_env(node_indices, launcher)
    for key in VISIBILITY_ENV:
        if key in out and out[key] != wanted.get(key):
            if key != "HIP_VISIBLE_DEVICES":  # ours before this module: not the user's choice
                warnings.append(f"{key}={out[key]} from the config is replaced by the placement's devices")
            del out[key]
    out.update(wanted)
    return out, warnings
