"""Demand-driven serving on one trace: static residency vs whole-GPU swapping vs gpu-sharing's autoscaler.

    python benchmarks/demand.py [--seed 7] [--hours 2] [--json]

The node: 8 x MI300X (192 GiB each, 3 % headroom). The models: 20 of mixed sizes (4 small, 6 medium,
6 large, 4 at 70B scale; weights + KV per replica below). The trace (seeded, the same for every
policy): model popularity follows a Zipf law (s = 1.1) over a random order of the models; each model
alternates bursts (exponential, mean 5 min) and idle gaps (exponential, mean 20 min divided by its
popularity rank's weight, so popular models come back sooner); inside a burst, requests arrive as a
Poisson process whose rate is the model's Zipf share of the node's rate, times 3. Each request holds
one of a replica's 8 sequence slots for an exponential service time (mean 4 s). A request that waits
more than 300 s is dropped. Start-up of a replica costs what a real vLLM start costs: 15 s of engine
start, its weights read at 2 GB/s, 8 s of graph capture.

The policies, on the same trace and the same start-up costs:
* static: today's fixed config: the most popular models, one replica each, packed first-fit while they fit;
* whole-GPU swapping (llama-swap, Ollama): one model per GPU; a request for a model that is not loaded
  loads it on a free GPU, else evicts the least recently used GPU whose model has nothing in flight;
* gpu-sharing: replicas packed by memory on shared GPUs (best fit), counts decided by the product's
  own ``reconcile.autoscale.Autoscaler`` (cold start, scale up on queue, hysteresis, idle unload,
  eviction of idle lower-or-equal-priority replicas for a held request), never stopping a busy replica.
  Placement here is best-fit by memory, standing in for the planner (which also proves optimality).

Printed: served and dropped requests, p50/p95 queue wait (cold starts included), cold starts, and
GPU-memory-hours held by replicas (loading or ready).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_sharing.config.schema import Config  # noqa: E402
from gpu_sharing.reconcile.autoscale import Autoscaler, DemandSample  # noqa: E402

GIB = 1 << 30
GPU_BYTES = int(192 * GIB * 0.97)
GPUS = 8
SLOTS = 8
DT_S = 0.5
QUEUE_TIMEOUT_S = 300.0
ENGINE_START_S, DISK_BYTES_PER_S, GRAPH_S = 15.0, 2e9, 8.0
SIZES_GIB = [6] * 4 + [30] * 6 + [80] * 6 + [165] * 4
SCALING = {"min_replicas": 0, "max_replicas": 3, "idle_unload_s": 300, "target_queue_per_replica": SLOTS,
           "scale_up_after_s": 10, "scale_down_after_s": 60}


@dataclass
class Model:
    name: str
    bytes: int
    weight: float
    priority: int

    @property
    def start_s(self) -> float:
        return ENGINE_START_S + self.bytes * 0.8 / DISK_BYTES_PER_S + GRAPH_S  # weights ~80 % of the budget


@dataclass
class Replica:
    model: str
    gpu: int
    bytes: int
    ready_at: float
    busy_until: list[float] = field(default_factory=list)
    last_used: float = 0.0

    def busy(self, t: float) -> int:
        self.busy_until = [u for u in self.busy_until if u > t]
        return len(self.busy_until)


def make_models(rng: random.Random) -> list[Model]:
    order = list(range(len(SIZES_GIB)))
    rng.shuffle(order)
    zipf = [1 / (rank + 1) ** 1.1 for rank in range(len(SIZES_GIB))]
    total = sum(zipf)
    return [Model(f"m{i:02d}-{SIZES_GIB[i]}g", SIZES_GIB[i] * GIB, zipf[order[i]] / total, 100 - order[i])
            for i in range(len(SIZES_GIB))]


def make_trace(models: list[Model], rng: random.Random, hours: float, node_rate_per_s: float) -> list[tuple]:
    """(arrival_s, model, service_s), sorted."""
    end, out = hours * 3600, []
    for m in models:
        t = rng.expovariate(1 / (1200 * (1 / len(models)) / m.weight))
        while t < end:
            burst_end = min(end, t + rng.expovariate(1 / 300))
            rate = node_rate_per_s * m.weight * 3
            t += rng.expovariate(rate)
            while t < burst_end:
                out.append((t, m.name, rng.expovariate(1 / 4)))
                t += rng.expovariate(rate)
            t = burst_end + rng.expovariate(1 / (1200 * (1 / len(models)) / m.weight))
    return sorted(out)


class Policy:
    name = "?"

    def __init__(self, models: list[Model]):
        self.models = {m.name: m for m in models}
        self.replicas: list[Replica] = []
        self.cold_starts = 0

    def free_bytes(self, gpu: int) -> int:
        return GPU_BYTES - sum(r.bytes for r in self.replicas if r.gpu == gpu)

    def start(self, model: str, gpu: int, t: float) -> None:
        m = self.models[model]
        self.replicas.append(Replica(model, gpu, m.bytes, t + m.start_s, last_used=t))
        self.cold_starts += 1

    def adjust(self, t: float, queues: dict[str, list]) -> None:
        """Change what is resident at time t, given the queued requests per model."""


class Static(Policy):
    name = "static (most popular resident)"

    def __init__(self, models: list[Model]):
        super().__init__(models)
        for m in sorted(models, key=lambda m: -m.weight):
            gpu = next((g for g in range(GPUS) if self.free_bytes(g) >= m.bytes), None)
            if gpu is not None:
                self.replicas.append(Replica(m.name, gpu, m.bytes, 0.0))


class WholeGpuSwap(Policy):
    name = "whole-GPU swapping (LRU)"

    def adjust(self, t, queues):
        for model, queue in queues.items():
            if not queue or any(r.model == model for r in self.replicas):
                continue
            used = {r.gpu for r in self.replicas}
            free = [g for g in range(GPUS) if g not in used]
            if not free:
                idle = [r for r in self.replicas if r.ready_at <= t and r.busy(t) == 0]
                if not idle:
                    continue
                victim = min(idle, key=lambda r: r.last_used)
                self.replicas.remove(victim)
                free = [victim.gpu]
            self.start(model, free[0], t)


class GpuSharing(Policy):
    name = "gpu-sharing (autoscaler, shared GPUs)"

    def __init__(self, models: list[Model]):
        super().__init__(models)
        self.autoscaler = Autoscaler()
        self.config = Config.model_validate({"version": "v1", "models": [
            {"name": m.name, "source": f"org/{m.name}", "priority": m.priority, "replicas": 0, "scaling": SCALING}
            for m in models]})
        self.unplaced: list[str] = []
        self.last_request: dict[str, float] = {}

    def adjust(self, t, queues):
        samples = {}
        for name in self.models:
            mine = [r for r in self.replicas if r.model == name]
            if queues.get(name):
                self.last_request[name] = t
            samples[name] = DemandSample(name, in_flight=sum(r.busy(t) for r in mine), held=len(queues.get(name, ())),
                                         last_request_at=self.last_request.get(name))
        self.autoscaler.decide(self.config, samples, t, self.unplaced)
        targets, self.unplaced = self.autoscaler.targets(), []
        for name, target in targets.items():
            mine = [r for r in self.replicas if r.model == name]
            for r in sorted(mine, key=lambda r: r.last_used)[: max(0, len(mine) - target)]:
                if r.ready_at > t or r.busy(t) == 0:  # never a busy replica
                    self.replicas.remove(r)
            for _ in range(target - len(mine)):
                m = self.models[name]
                fits = [g for g in range(GPUS) if self.free_bytes(g) >= m.bytes]
                if not fits:
                    self.unplaced.append(name)
                    break
                self.start(name, min(fits, key=self.free_bytes), t)  # best fit


def simulate(policy: Policy, trace: list[tuple], hours: float) -> dict:
    queues: dict[str, list] = {m: [] for m in policy.models}
    waits, served, dropped, mem_byte_s = [], 0, 0, 0.0
    i, t, end = 0, 0.0, hours * 3600
    while t < end or any(queues.values()):
        while i < len(trace) and trace[i][0] <= t:
            queues[trace[i][1]].append(trace[i])
            i += 1
        policy.adjust(t, queues)
        for model, queue in queues.items():
            while queue and t - queue[0][0] > QUEUE_TIMEOUT_S:
                queue.pop(0)
                dropped += 1
            for r in (r for r in policy.replicas if r.model == model and r.ready_at <= t):
                while queue and r.busy(t) < SLOTS:
                    arrival, _, service = queue.pop(0)
                    r.busy_until.append(t + service)
                    r.last_used = t
                    waits.append(t - arrival)
                    served += 1
        mem_byte_s += sum(r.bytes for r in policy.replicas) * DT_S
        t += DT_S
        if t > end + QUEUE_TIMEOUT_S:
            break
    waits.sort()

    def pct(p: float) -> float:
        return waits[min(len(waits) - 1, math.ceil(p * len(waits)) - 1)] if waits else float("nan")
    return {"policy": policy.name, "requests": len(trace), "served": served, "dropped": dropped + sum(map(len, queues.values())),
            "p50_wait_s": round(pct(0.50), 2), "p95_wait_s": round(pct(0.95), 2), "cold_starts": policy.cold_starts,
            "gpu_memory_gib_hours": round(mem_byte_s / GIB / 3600, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=4.0, help="node-wide mean request rate inside bursts (1/s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    models = make_models(rng)
    trace = make_trace(models, rng, args.hours, args.rate)
    total_gib = sum(m.bytes for m in models) / GIB
    rows = []
    for cls in (Static, WholeGpuSwap, GpuSharing):
        rows.append(simulate(cls(models), trace, args.hours))
        print(f"  {rows[-1]['policy']}: done", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"models": len(models), "model_gib_total": total_gib, "rows": rows}, indent=1))
        return 0
    print(f"{len(trace)} requests over {args.hours:g} h, 20 models ({total_gib:.0f} GiB at one replica each) "
          f"on 8 x MI300X ({GPUS * GPU_BYTES / GIB:.0f} GiB usable); seed {args.seed}\n")
    print("| policy | served | dropped | p50 wait s | p95 wait s | cold starts | GPU memory GiB-h |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['served']} | {r['dropped']} | {r['p50_wait_s']} | {r['p95_wait_s']} | "
              f"{r['cold_starts']} | {r['gpu_memory_gib_hours']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
