"""Bounded load through the router to 16 fake vLLM instances (loopback only; stops by itself).

    python benchmarks/load.py [--seconds 10] [--concurrency 32]

Starts `gpu-sharing run --simulate` on a private simulated node with 16 tiny models, waits for
READY, then drives chat requests (a) through the router and (b) directly to the instances, for
the same time and concurrency. Then it changes one model's max_model_len on disk (the daemon
reloads and restarts only that model) while load continues, and counts how that model's
requests were answered: 200 or 503 with Retry-After, never a hang (every request has a 10 s
timeout). Prints a table: requests/s, p50/p99 latency, added latency, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

QWEN = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drive(session, urls_models, seconds: float, concurrency: int):
    lat, codes, deadline = [], {}, time.monotonic() + seconds

    async def worker(i: int):
        n = i
        while time.monotonic() < deadline:
            url, model = urls_models[n % len(urls_models)]
            n += concurrency
            t0 = time.perf_counter()
            try:
                async with session.post(url + "/v1/chat/completions", json={
                        "model": model, "messages": [{"role": "user", "content": "load test"}], "max_tokens": 4},
                        timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    key = r.status if r.status != 503 or r.headers.get("Retry-After") else "503-no-retry-after"
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                key = type(e).__name__
            codes[key] = codes.get(key, 0) + 1
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    lat.sort()
    return {"requests": len(lat), "rps": len(lat) / seconds, "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000, "codes": codes}


async def main_async(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="gs-load-"))
    api_port, base = free_port(), 26000 + os.getpid() % 500 * 2
    cfg = {"version": "v1", "node": {"simulator": {"startup_time_s": 0.2}},
           "models": [{"name": f"m{i:02d}", "source": f"org/m{i:02d}", "config_json": QWEN, "max_model_len": 2048}
                      for i in range(16)],
           "vllm": {"port_range": [base, base + 60], "stop_grace_s": 3}, "api": {"port": api_port},
           "reconcile": {"interval_s": 300}}
    path = work / "gpu-sharing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    daemon = subprocess.Popen([sys.executable, "-m", "gpu_sharing.cli.main", "run", "--simulate", "--sim-state",
                               str(work / "sim"), "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{api_port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            status = None
            for _ in range(300):
                try:
                    async with s.get(api + "/status") as r:
                        status = await r.json()
                    if len(status["instances"]) == 16 and all(i["state"] == "READY" for i in status["instances"]):
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            direct = [(i["url"], i["served_names"][0]) for i in status["instances"]]
            routed = [(api, m) for _, m in direct]
            via_direct = await drive(s, direct, args.seconds, args.concurrency)
            via_router = await drive(s, routed, args.seconds, args.concurrency)
            cfg["models"][0]["max_model_len"] = 1024  # restart only m00 while load continues
            path.write_text(yaml.safe_dump(cfg))
            during = await drive(s, [(api, "m00")] * 4 + routed[1:5], args.seconds, args.concurrency)
        print(f"{'path':<22} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  codes")
        for name, r in (("direct", via_direct), ("router", via_router), ("router, m00 restart", during)):
            print(f"{name:<22} {r['requests']:>9} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  {r['codes']}")
        print(f"\nadded latency through the router: p50 {via_router['p50_ms'] - via_direct['p50_ms']:.2f} ms, "
              f"p99 {via_router['p99_ms'] - via_direct['p99_ms']:.2f} ms; errors (non-200) under steady load: "
              f"{sum(v for k, v in via_router['codes'].items() if k != 200)}")
        bad = sum(v for k, v in via_router["codes"].items() if k != 200) + \
            sum(v for k, v in during["codes"].items() if k not in (200, 503))
        return 1 if bad else 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
