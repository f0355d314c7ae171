"""``--deep`` vllm-memory: start the config's smallest model with ``--load-format dummy`` on an idle
partition and compare what vLLM logs with the launch contract's prediction (sizing).

vLLM 0.33 log lines read (sources: vLLM v1 gpu_model_runner / gpu_worker, quoted in
real-stack-findings.md "Published vLLM memory profiles"):
- ``Model loading took X GiB and S seconds``       -> weights per rank
- ``PyTorch activation peak memory takes X GiB`` or ``torch peak memory increase: X GiB`` -> activations
- ``Graph capturing finished in S secs, took X GiB`` -> graph memory (part of the runtime overhead)
- ``Available KV cache memory: X GiB``               -> the KV pool vLLM got
A component is a FAIL when the measurement exceeds the prediction by more than 10 % (weights load
~2 % larger on ROCm: 15.30 vs 14.99 GiB for Llama-3.1-8B), or when the KV pool is more than 2 %
smaller than the configured context x sequences need. With weights logged, the measured size per
rank (prediction with the logged weights and activations in place of the estimates) is recorded in
<state_dir>/measured_sizes.json, which the planner prefers over estimates (sizing.resolve).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from gpu_sharing.doctor.checks import Check, Family, Status, check
from gpu_sharing.doctor.context import DoctorContext
from gpu_sharing.errors import UserError
from gpu_sharing.runtime.launch_spec import build_launch_spec
from gpu_sharing.sizing.measured_store import MeasuredSizes, measured_key
from gpu_sharing.sizing.resolve import size_model

F = Family.DEEP
GIB = 1024**3
OVER_TOLERANCE = 0.10
KV_TOLERANCE = 0.02
MEASURED_FILE = "measured_sizes.json"
PATTERNS = {
    "weights": r"Model loading took (-?[\d.]+) ?GiB",
    "activation": r"(?:PyTorch activation peak memory takes|torch peak memory increase:?) (-?[\d.]+) ?GiB",
    "graph": r"Graph capturing finished in [\d.]+ secs?, took (-?[\d.]+) ?GiB",
    "kv": r"Available KV cache memory: (-?[\d.]+) ?GiB",
}


def parse_memory_log(text: str) -> dict[str, int]:
    """Bytes per component from a vLLM log (last occurrence wins: a restart logs again)."""
    out: dict[str, int] = {}
    for name, pattern in PATTERNS.items():
        found = re.findall(pattern, text)
        if found:
            out[name] = int(float(found[-1]) * GIB)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smallest_model(ctx: DoctorContext):
    """The smallest model sized from its config.json: a catalog-only size has no breakdown to compare."""
    sized = []
    for model in ctx.config.models:
        if not model.enabled or (model.tensor_parallel_size or 1) != 1:
            continue
        try:
            sized.append((size_model(model, tp=1, config_dir=ctx.config_dir), model))
        except UserError:
            continue
    return min(sized, key=lambda x: x[0].total_bytes_per_rank, default=(None, None))


def compare(size, logged: dict[str, int]) -> list[str]:
    predicted = {"weights": size.weights_bytes_per_rank, "activation": size.activation_bytes,
                 "graph": size.runtime_overhead_bytes}
    problems = [f"{k} {logged[k] / GIB:.2f} GiB > predicted {v / GIB:.2f} GiB" for k, v in predicted.items()
                if k in logged and logged[k] > v * (1 + OVER_TOLERANCE)]
    if "kv" in logged and logged["kv"] < size.kv_bytes * (1 - KV_TOLERANCE):
        problems.append(f"KV pool {logged['kv'] / GIB:.2f} GiB < the {size.kv_bytes / GIB:.2f} GiB the configured "
                        "context x sequences need")
    return problems


def vllm_memory(ctx: DoctorContext) -> Check:
    expected = "vLLM's logged weights, activations, graph memory and KV pool within the launch contract's prediction"
    if not ctx.deep:
        return check("vllm-memory", F, Status.SKIP, "not run", expected + " (--deep)")
    size, model = _smallest_model(ctx)
    if model is None:
        return check("vllm-memory", F, Status.SKIP, "no enabled tp=1 model has a config.json to predict its memory from "
                     "(models[].config_json, a local model dir, or the Hugging Face cache)", expected)
    inv = ctx.inventory(fresh=True)
    if inv is None:
        return check("vllm-memory", F, Status.FAIL, f"cannot read the GPUs: {ctx.inventory_error}", expected)
    part = next((p for g in inv.gpus for p in g.partitions
                 if not p.processes and p.vram_total_bytes >= size.total_bytes_per_rank), None)
    if part is None:
        return check("vllm-memory", F, Status.SKIP, f"no idle partition holds {model.name} "
                     f"({size.total_bytes_per_rank / GIB:.1f} GiB)", expected)
    vllm = ctx.vllm_settings()
    spec = build_launch_spec(instance_id=f"doctor-{model.name}", model=model, vllm=vllm, partitions=[part],
                             tp=1, port=_free_port(), memory_bytes_per_rank=size.total_bytes_per_rank, size=size)
    argv = [*spec.argv, "--load-format", "dummy"]
    fact = ctx.probe.run_vllm(argv, dict(spec.env), spec.url, vllm.startup_timeout_s)
    where = f"{model.name} on partition {part.id} (--load-format dummy)"
    if not fact.ok:
        return check("vllm-memory", F, Status.FAIL, f"{where}: {fact.error}", expected,
                     fix="read the vLLM output above the last traceback; run `gpu-sharing size` for the prediction",
                     source=fact.source)
    logged = parse_memory_log(fact.value)
    unlogged = [k for k in PATTERNS if k not in logged]
    measured = f"{where}: " + (", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in logged.items()) or "no memory lines") + \
        (f" ({', '.join(unlogged)} not logged)" if unlogged and logged else "")
    if not logged:
        return check("vllm-memory", F, Status.WARN, measured, expected,
                     fix="this vLLM logs no memory profile at INFO: set VLLM_LOGGING_LEVEL=INFO", source=fact.source)
    problems = compare(size, logged)
    if "weights" in logged:
        total = size.total_bytes_per_rank - size.weights_bytes_per_rank + logged["weights"]
        if "activation" in logged:
            total += logged["activation"] - size.activation_bytes
        store_path = Path(ctx.state_dir) / MEASURED_FILE
        store = MeasuredSizes.load(store_path)
        store.record(measured_key(model, tp=1), total)
        store.save(store_path)
        ctx.facts["measured_size"] = {"model": model.name, "bytes_per_rank": total, "file": str(store_path)}
        measured += f"; recorded {total / GIB:.2f} GiB per rank"
    if problems:
        return check("vllm-memory", F, Status.FAIL, measured + " (" + "; ".join(problems) + ")", expected,
                     fix="raise the sizing constants (gpu_sharing/sizing/estimate.py) or the model's budget; the "
                     "measured size is recorded when weights were logged", source=fact.source)
    return check("vllm-memory", F, Status.PASS, measured, expected, source=fact.source)
