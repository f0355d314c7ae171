"""Daemon overheads with 64 fake vLLM instances on a simulated 8 x MI300X node.

    python benchmarks/daemon.py [--instances 64] [--idle-s 60] [--requests 300]

Starts `gpu-sharing run --simulate` (startup_time_s 0) as a subprocess on loopback, waits
until every instance is READY, then measures:
- converged reconcile pass: mean of passes triggered with SIGHUP on an unchanged config
  (from the daemon's own gpu_sharing_reconcile_duration_seconds sum/count);
- idle CPU % and RSS of the daemon process over --idle-s (from /proc, no load);
- /metrics scrape time (median of 50, keep-alive);
- router overhead: the same chat request through the router vs directly to the instance,
  alternated on keep-alive connections, medians; difference in ms and ratio.
Prints a table with the issue's targets. Stops the daemon (on_exit: stop) at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

QWEN_05B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAUSE = threading.Event()  # never set: Event.wait as an interruptible pause between polls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, n_instances: int, api_port: int) -> None:
    replicas = 4  # distinct max_model_len per model: identical entries would share one vLLM (reconcile/dedupe.py)
    models = [{"name": f"qwen-{m:02d}", "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN_05B,
               "replicas": replicas, "max_model_len": 2048 + 16 * m, "max_num_seqs": 4, "dtype": "bfloat16"}
              for m in range(n_instances // replicas)]
    cfg = {"version": "v1",
           "node": {"backend": "simulated", "simulator": {"gpu_model": "MI300X", "gpus": 8, "startup_time_s": 0}},
           "gpus": [{"devices": "all", "compute_partition": "CPX", "memory_partition": "NPS1"}],
           "models": models,
           "vllm": {"port_range": [24000, 24999], "startup_timeout_s": 60, "stop_grace_s": 5},
           "api": {"port": api_port}, "reconcile": {"interval_s": 30}, "on_exit": "stop"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


class Http:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.read()

    def post(self, path: str, body: dict) -> tuple[int, bytes]:
        self.conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, r.read()


def metric(text: str, name: str) -> float:
    for ln in text.splitlines():
        if ln.startswith(name + " ") or ln.startswith(name + "{"):
            return float(ln.split()[-1])
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) / 1024
    return 0.0


def wait_for(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = pred()
        except OSError:
            got = None
        if got:
            return got
        PAUSE.wait(0.1)
    raise SystemExit(f"timed out after {timeout_s}s waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=64)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--reconciles", type=int, default=10)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gpu-sharing-bench-"))
    port = free_port()
    cfg = tmp / "gpu-sharing.yaml"
    write_config(cfg, args.instances, port)
    log = (tmp / "daemon.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    proc = subprocess.Popen([sys.executable, "-m", "gpu_sharing.cli.main", "run", "--simulate", "--sim-state",
                             str(tmp / "sim"), "-c", str(cfg), "--api-port", str(port), "--log-level", "WARNING"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rows: list[tuple[str, str, str]] = []
    try:
        t0 = time.monotonic()

        def ready():
            st = json.loads(Http(port).get("/status"))
            n = sum(i["state"] == "READY" for i in st["instances"])
            return st if n >= args.instances else None

        st = wait_for(ready, 300, f"{args.instances} READY instances")
        rows.append(("instances READY", f"{len(st['instances'])} in {time.monotonic() - t0:.1f} s", ""))
        api = Http(port)

        # converged reconcile passes (SIGHUP on an unchanged file -> reload -> reconcile)
        m0 = api.get("/metrics").decode()
        c0, s0 = (metric(m0, "gpu_sharing_reconcile_duration_seconds_count"),
                  metric(m0, "gpu_sharing_reconcile_duration_seconds_sum"))
        for k in range(1, args.reconciles + 1):
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: metric(api.get("/metrics").decode(), "gpu_sharing_reconcile_duration_seconds_count")
                     >= c0 + k, 30, "a reconcile pass")
        m1 = api.get("/metrics").decode()
        c1, s1 = (metric(m1, "gpu_sharing_reconcile_duration_seconds_count"),
                  metric(m1, "gpu_sharing_reconcile_duration_seconds_sum"))
        pass_ms = (s1 - s0) / (c1 - c0) * 1000
        rows.append(("converged reconcile pass", f"{pass_ms:.2f} ms (mean of {int(c1 - c0)})", "< 20 ms"))

        # idle CPU and RSS
        PAUSE.wait(2.0)  # let the reload settle before the idle window
        cpu0, w0 = cpu_s(proc.pid), time.monotonic()
        rss_samples = []
        while time.monotonic() - w0 < args.idle_s:
            rss_samples.append(rss_mb(proc.pid))
            PAUSE.wait(1.0)
        cpu_pct = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - w0) * 100
        rows.append((f"idle CPU over {args.idle_s:.0f} s", f"{cpu_pct:.2f} %", "< 1 %"))
        rows.append(("RSS (max during idle)", f"{max(rss_samples):.0f} MB", "< 150 MB"))

        # /metrics scrape
        times = []
        for _ in range(50):
            t = time.perf_counter()
            api.get("/metrics")
            times.append(time.perf_counter() - t)
        rows.append(("/metrics scrape (median of 50)", f"{statistics.median(times) * 1000:.2f} ms", "< 10 ms"))

        # router overhead vs direct
        inst = next(i for i in json.loads(api.get("/status"))["instances"] if i["state"] == "READY")
        direct = Http(inst["port"])
        body = {"model": inst["model"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        via, dir_ = [], []
        for _ in range(args.requests):
            for client, out in ((api, via), (direct, dir_)):
                t = time.perf_counter()
                code, _ = client.post("/v1/chat/completions", body)
                out.append(time.perf_counter() - t)
                assert code == 200, code
        mv, md = statistics.median(via) * 1000, statistics.median(dir_) * 1000
        rows.append(("chat direct (median)", f"{md:.2f} ms", ""))
        rows.append(("chat via router (median)", f"{mv:.2f} ms", ""))
        rows.append(("router overhead", f"{mv - md:.2f} ms/request, ratio {mv / md:.2f}", "< 2 ms"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'value'.ljust(v)}  target")
    for name, value, target in rows:
        print(f"{name.ljust(w)}  {value.ljust(v)}  {target}")
    print(f"(daemon log: {tmp / 'daemon.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
