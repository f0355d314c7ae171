"""Soak: 64 fake instances for N minutes with random crashes; daemon RSS and fd counts over time.

    python benchmarks/soak.py [--minutes 10] [--crash-every-s 5]

Starts `gpu-sharing run --simulate` (8 x MI300X, 8 models x 8 replicas of a tiny model), waits
for READY, then SIGKILLs a random instance every --crash-every-s seconds (the daemon must restart
it with backoff). Samples the daemon's RSS and open fds every 10 s; prints the samples, the
restarts counted by the daemon, and the growth from the first sample after warm-up to the last.
Loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

QWEN = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def status(api: str) -> dict:
    with urllib.request.urlopen(api + "/status", timeout=5) as r:
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--crash-every-s", type=float, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gs-soak-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"version": "v1", "node": {"simulator": {"startup_time_s": 0.2}},
           "models": [{"name": f"m{i}", "source": f"org/m{i}", "config_json": QWEN, "max_model_len": 2048, "replicas": 8}
                      for i in range(8)],
           "vllm": {"port_range": [27000, 27199], "stop_grace_s": 3, "backoff_initial_s": 0.5, "backoff_max_s": 5,
                    "max_restarts": 1000},
           "api": {"port": port}, "reconcile": {"interval_s": 30}}
    path = work / "gpu-sharing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    daemon = subprocess.Popen([sys.executable, "-m", "gpu_sharing.cli.main", "run", "--simulate", "--sim-state",
                               str(work / "sim"), "-c", str(path), "--log-level", "WARNING"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}"
    rng = random.Random(0)
    samples = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                st = status(api)
                if len(st["instances"]) == 64 and all(i["state"] == "READY" for i in st["instances"]):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        start = time.monotonic()
        end = start + args.minutes * 60
        next_crash, next_sample, crashes = start, start, 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_crash:
                live = [i for i in status(api)["instances"] if i["state"] == "READY" and i["pid"]]
                if live:
                    os.kill(rng.choice(live)["pid"], signal.SIGKILL)
                    crashes += 1
                next_crash = now + args.crash_every_s
            if now >= next_sample:
                st = status(api)
                samples.append((round(now - start), rss_kib(daemon.pid), len(os.listdir(f"/proc/{daemon.pid}/fd")),
                                sum(i["restarts"] for i in st["instances"]),
                                sum(1 for i in st["instances"] if i["state"] == "READY")))
                next_sample = now + 10
            time.sleep(0.2)
        print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5} {'restarts':>9} {'READY':>6}")
        for t, rss, fds, restarts, ready in samples:
            print(f"{t:>6} {rss / 1024:>8.1f} {fds:>5} {restarts:>9} {ready:>6}")
        warm = samples[min(1, len(samples) - 1)]
        last = samples[-1]
        growth = (last[1] - warm[1]) / warm[1] * 100 if warm[1] else 0
        print(f"\n{crashes} crashes injected; RSS growth after warm-up {growth:+.1f}% ({warm[1] / 1024:.1f} -> "
              f"{last[1] / 1024:.1f} MiB); fds {warm[2]} -> {last[2]}")
        return 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=90)
        except subprocess.TimeoutExpired:
            daemon.kill()


if __name__ == "__main__":
    sys.exit(main())
