"""End-to-end example in simulation (no GPU needed): partition, size, schedule, launch, query, clean up.

    python example_usage.py

1. ROCmPartitioner partitions simulated GPU 0 of an 8 x MI300X node so four 40 GB requests fit (QPX).
2. ModelSizingConfig reads config/model_sizing_config.yaml; ModelScheduler places three models.
3. The real runtime (Reconciler: planner, launch specs, supervisor) starts one fake vLLM server per
   model on its partition, pinned to the layout the partitioner chose.
4. One chat request goes to each instance; a table shows where each runs and what it answered.
5. Everything is stopped and the simulated VRAM is released.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gpu_sharing import ModelScheduler, ModelSizingConfig, ROCmPartitioner
from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.reconcile.reconciler import Reconciler
from simulator.node import SimNode

ROOT = Path(__file__).resolve().parent
MODELS = {"llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct", "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
          "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct"}


def chat(url: str, model: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello from gpu-sharing"}],
                       "max_tokens": 4}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"].strip()


def main() -> int:
    t0 = time.monotonic()
    sim = Path(tempfile.mkdtemp(prefix="gpu-sharing-example-"))
    SimNode.create(sim, "MI300X", 8, reload_time_s=0)
    backend = SimulatedBackend(SimNode.open(sim))

    partitioner = ROCmPartitioner(gpu_id=0, backend=backend)
    parts = partitioner.initialize("MI300X", [40, 40, 40, 40])
    print("\n".join(partitioner.notes))

    sizing = ModelSizingConfig(ROOT / "config" / "model_sizing_config.yaml")
    scheduler = ModelScheduler(partitioner, sizing)
    for name, model_id in MODELS.items():
        ok, partition_id, error = scheduler.schedule_model(model_id)
        print(f"schedule {name}: {'on partition ' + partition_id if ok else 'failed: ' + str(error)}")

    models_yaml = "\n".join(f"  - {{name: {n}, source: {m}, max_model_len: 4096, max_num_seqs: 4, gpus: [0]}}"
                            for n, m in MODELS.items())
    config = parse_config_text(f"""
version: v1
node: {{backend: simulated, simulator: {{startup_time_s: 0.3}}}}
gpus:
  - {{devices: [0], compute_partition: {parts[0].compute_mode.value}}}
models:
{models_yaml}
vllm: {{port_range: [28100, 28199], stop_grace_s: 5, startup_timeout_s: 30}}
sizing: {{catalog: {ROOT / 'config' / 'model_sizing_config.yaml'}}}
""", "example")
    rec = Reconciler(config, backend, state_dir=sim / "daemon", simulate=True, sim_state_dir=sim)
    try:
        report = rec.reconcile_once()
        if report.errors:
            print("errors:", *report.errors, sep="\n  ")
        if not rec.wait_settled(timeout_s=45):
            print("instances did not become ready in time", file=sys.stderr)
            return 1
        rows = []
        for st in sorted(rec.statuses(), key=lambda s: s.instance_id):
            answer = chat(st.url, st.served_names[0]) if st.state.value == "READY" else "-"
            rows.append((st.instance_id, ",".join(st.partitions), st.state.value, str(st.pid), st.url, answer))
        widths = [max(len(r[i]) for r in rows + [("INSTANCE", "PARTITION", "STATE", "PID", "URL", "ANSWER")])
                  for i in range(6)]
        for r in [("INSTANCE", "PARTITION", "STATE", "PID", "URL", "ANSWER"), *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        ok = all(r[2] == "READY" for r in rows) and len(rows) == len(MODELS)
    finally:
        rec.stop_all(timeout_s=15)
    used = sum(p["vram_used_bytes"] for p in SimNode.open(sim).partitions())
    print(f"stopped all instances; simulated VRAM in use: {used} bytes; {time.monotonic() - t0:.1f} s")
    return 0 if ok and used == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
