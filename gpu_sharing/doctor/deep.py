"""Deep checks (``--deep`` only): they start work on an idle GPU, so they SKIP without the flag.

- cu-mask: the daemon's CU mask for a partition that is not device 0 (two instances sharing it,
  half the CUs each, from isolation.cu_masks), in the environment the launch contract builds
  (runtime.launch_spec): a tiny kernel must run on that partition and only on the mask's CUs.
  ROCm numbers HSA_CU_MASK devices after ROCR_VISIBLE_DEVICES filtering (rocm.docs.amd.com,
  reference/environment-variables "setting-cus"): with HIP_VISIBLE_DEVICES alone the mask's device
  0 is the node's device 0, which is the mistake this check exists to catch.
- vllm-memory (doctor/vllm_memory.py): start the config's smallest model with ``--load-format dummy``
  and compare vLLM's logged memory with the launch contract's prediction; record the measured size.
"""

from __future__ import annotations

from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.doctor.checks import Check, Family, Status, check
from gpu_sharing.doctor.context import DoctorContext
from gpu_sharing.doctor.vllm_memory import vllm_memory
from gpu_sharing.isolation.cu_masks import assign_cu_masks, assign_cu_sets, format_cu_list
from gpu_sharing.runtime.launch_spec import build_launch_spec

F = Family.DEEP
GIB = 1024**3


def cu_mask(ctx: DoctorContext) -> Check:
    expected = "the masked kernel runs on the intended partition, on exactly the mask's CUs"
    if not ctx.deep:
        return check("cu-mask", F, Status.SKIP, "not run", expected + " (--deep)")
    inv = ctx.inventory(fresh=True)
    if inv is None:
        return check("cu-mask", F, Status.FAIL, f"cannot read the GPUs: {ctx.inventory_error}", expected,
                     source="backend")
    part = next((p for g in inv.gpus for p in g.partitions if p.hip_index != 0 and not p.processes and p.cu_count > 1),
                None)
    if part is None:
        return check("cu-mask", F, Status.SKIP, "no idle partition other than device 0", expected)
    requests = {"doctor-a": 0.5, "doctor-b": 0.5}
    mask = assign_cu_masks(cu_count=part.cu_count, xcc_count=part.xcc_count, requests=requests)["doctor-a"]
    want = assign_cu_sets(cu_count=part.cu_count, xcc_count=part.xcc_count, requests=requests)["doctor-a"]
    spec = build_launch_spec(instance_id="doctor-cu-probe", model=ModelSettings(name="doctor-cu-probe", source="probe"),
                             vllm=ctx.config.vllm, partitions=[part], tp=1, port=8100, memory_bytes_per_rank=GIB,
                             cu_mask=mask)
    env = {k: v for k, v in spec.env.items() if k in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HSA_CU_MASK")}
    fact = ctx.probe.masked_kernel(part, env)
    if not fact.ok:
        return check("cu-mask", F, Status.SKIP, fact.error, expected, source=fact.source)
    ran_on, cus = fact.value["hip_index"], frozenset(fact.value["cus"])
    env_text = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    measured = f"{env_text}: ran on device {ran_on} with {len(cus)} CUs"
    if ran_on != part.hip_index or cus != want:
        where = fact.value.get("mask_target")
        return check("cu-mask", F, Status.FAIL, measured + (f" (the mask landed on device {where})" if where is not None
                                                            else ""),
                     f"{expected}: device {part.hip_index}, CUs {format_cu_list(want)}",
                     fix="select the device with ROCR_VISIBLE_DEVICES (then the mask's device 0 is it), or write the "
                     "mask for the node index the runtime sees", source=fact.source)
    return check("cu-mask", F, Status.PASS, measured, expected, source=fact.source)



CHECKS = (cu_mask, vllm_memory)
