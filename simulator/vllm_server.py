"""A fake ``vllm serve`` (0.33.0) for the simulated node: same argv, same endpoints, same failures.

Run as ``python -m simulator.vllm_server serve MODEL [flags]``. What it copies from vLLM
(docs: shared reference vllm-api-shapes.md):
- the ROCm visibility check (HIP vs CUDA_VISIBLE_DEVICES) before anything else, and an
  HSA_CU_MASK syntax check like ROCm's;
- memory: per rank it claims ceil(total x gpu_memory_utilization) of its partition on the
  simulated node (vLLM does not subtract other processes) and fails with vLLM's own
  "Free memory on device ..." text and exit 1 when the partition lacks it;
- the port does not listen until the (simulated) engine is ready: connections are refused;
- /health, /ping, /version, /v1/models, /v1/completions, /v1/chat/completions (also SSE
  streaming), /metrics with vllm:* names; vLLM's error JSON;
- SIGTERM/SIGINT: shutdown log lines, VRAM released, exit 0.
Knobs (env): GPU_SHARING_FAKE_STARTUP_S, GPU_SHARING_FAKE_CRASH_AFTER_REQUESTS,
GPU_SHARING_FAKE_CRASH_AFTER_S, GPU_SHARING_FAKE_HANG_ON_STOP, GPU_SHARING_FAKE_GROW_BYTES,
GPU_SHARING_FAKE_DELAY_PER_TOKEN_S. Output text is deterministic and cheap (an echo).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from datetime import datetime

from aiohttp import web

from simulator.node import SimNode, SimOutOfMemory, default_state_dir
from simulator.vllm_args import ServeArgs, parse_serve_args
from simulator.vllm_engine import attach, resolve_devices
from simulator.vllm_metrics import FakeMetrics

VERSION = "0.33.0"


def log(level: str, where: str, msg: str, proc: str = "APIServer") -> None:
    stamp = datetime.now().strftime("%m-%d %H:%M:%S")
    print(f"({proc} pid={os.getpid()}) {level} {stamp} [{where}] {msg}", flush=True)


def check_visibility(env: dict[str, str]) -> list[int]:
    hip = env.get("HIP_VISIBLE_DEVICES") or ""
    cuda = env.get("CUDA_VISIBLE_DEVICES") or ""
    if hip and cuda and hip != cuda:
        raise ValueError(f"Inconsistent GPU visibility env vars: HIP_VISIBLE_DEVICES='{hip}' vs "
                         f"CUDA_VISIBLE_DEVICES='{cuda}'. Please set only one, or ensure they match.")
    visible = hip or cuda
    return [int(x) for x in visible.split(",") if x.strip()] if visible else [0]


class FakeVllm:
    def __init__(self, args: ServeArgs, devices: list[int], node: SimNode | None, cu_mask: str | None):
        self.args = args
        self.devices = devices
        self.node = node
        self.cu_mask = cu_mask
        self.names = args.names
        self.max_model_len = args.max_model_len or 4096
        self.metrics = FakeMetrics(self.names[0], args, cu_mask)
        self.requests = 0
        self.crash_after = int(os.environ.get("GPU_SHARING_FAKE_CRASH_AFTER_REQUESTS", "0") or 0)
        self.delay_per_token_s = float(os.environ.get("GPU_SHARING_FAKE_DELAY_PER_TOKEN_S", "0") or 0)
        self.claimed: dict[int, int] = {}

    # ------------------------------------------------------------------ memory
    def claim(self) -> None:
        if self.node is None:
            return
        tp = self.args.tensor_parallel_size
        if tp != len(self.devices):
            raise ValueError(f"tensor_parallel_size ({tp}) must equal the number of visible devices ({len(self.devices)})")
        for rank, hip in enumerate(self.devices):
            info = self.node.partition_info(hip)
            total = info["vram_total_bytes"]
            requested = math.ceil(total * self.args.gpu_memory_utilization)
            try:
                self.node.claim_memory(hip, os.getpid(), "vllm", requested)
            except SimOutOfMemory as e:
                self.release()
                free_gib, total_gib = round(e.free_bytes / 2**30, 2), round(total / 2**30, 2)
                raise ValueError(
                    f"Free memory on device cuda:{rank} ({free_gib}/{total_gib} GiB) on startup is less than desired "
                    f"GPU memory utilization ({self.args.gpu_memory_utilization}, {round(requested / 2**30, 2)} GiB). "
                    "Decrease GPU memory utilization or reduce GPU memory used by other processes.") from None
            self.claimed[hip] = requested
        kv_gib = sum(self.claimed.values()) * 0.6 / 2**30
        log("INFO", "gpu_worker.py:330", f"Available KV cache memory: {kv_gib:.2f} GiB", "EngineCore")

    def release(self) -> None:
        if self.node is not None:
            try:
                self.node.release_process(os.getpid())
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        self.claimed.clear()

    def grow(self, extra: int) -> None:
        if self.node is not None and self.claimed:
            hip = next(iter(self.claimed))
            self.claimed[hip] += extra
            self.node.set_process_memory(os.getpid(), hip, self.claimed[hip])

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        from simulator.vllm_http import routes

        app = web.Application()
        app["fake"] = self
        app.add_routes(routes)
        return app

    def count_request(self) -> None:
        self.requests += 1
        if self.crash_after and self.requests >= self.crash_after:
            log("ERROR", "core.py:1010", "EngineCore encountered a fatal error (injected crash).", "EngineCore")
            os._exit(1)  # abrupt: VRAM is left for the node's pid reaper, like a real crash


async def serve(fake: FakeVllm, host: str | None, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    hang = os.environ.get("GPU_SHARING_FAKE_HANG_ON_STOP") == "1"

    def on_signal() -> None:
        if hang:
            log("INFO", "launcher.py:112", "[shutdown] API server: shutdown triggered (hanging: injected)")
            return
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    runner = web.AppRunner(fake.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or "0.0.0.0", port, reuse_address=True)
    await site.start()
    shown = host or "0.0.0.0"
    log("INFO", "api_server.py:1812", f"Starting vLLM server on http://{shown}:{port}")
    print("INFO:     Application startup complete.", file=sys.stderr, flush=True)
    crash_after_s = float(os.environ.get("GPU_SHARING_FAKE_CRASH_AFTER_S", "0") or 0)
    grow = int(os.environ.get("GPU_SHARING_FAKE_GROW_BYTES", "0") or 0)
    if grow:
        fake.grow(grow)
    try:
        if crash_after_s:
            try:
                await asyncio.wait_for(stop.wait(), crash_after_s)
            except asyncio.TimeoutError:
                log("ERROR", "core.py:1010", "EngineCore encountered a fatal error (injected crash).", "EngineCore")
                os._exit(1)
        await stop.wait()
    finally:
        log("INFO", "launcher.py:112", "[shutdown] API server: shutdown triggered")
        log("INFO", "launcher.py:118", "[shutdown] API server: stopping engine client mode=abort timeout=0s")
        fake.release()
        log("INFO", "launcher.py:131", "[shutdown] API server: engine client stopped")
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    try:
        devices = check_visibility(env)
    except ValueError as e:
        print(f"ValueError: {e}", file=sys.stderr, flush=True)
        return 1
    args = parse_serve_args(argv)
    log("INFO", "utils.py:253", f"vLLM server version {VERSION}, serving model {args.model}")
    log("INFO", "utils.py:254", f"non-default args: {{'model': {args.model!r}, 'port': {args.port}}}")
    try:
        devices, cu_mask = resolve_devices(env, log)  # ROCm's device numbering, V1 layout: vllm_engine.py
    except Exception as e:  # noqa: BLE001 - CuMaskError: ROCm refuses to start the queue
        print(f"RuntimeError: HSA_CU_MASK rejected: {e}", file=sys.stderr, flush=True)
        return 1
    state = os.environ.get("GPU_SHARING_SIM_STATE")
    node = SimNode.open_or_create(state or default_state_dir()) if state is not None or default_state_dir().exists() else None
    fake = FakeVllm(args, devices, node, cu_mask)
    attach(fake, env)
    stopping = {"flag": False}

    def early_term(signum, frame):  # before serving, SIGTERM aborts start-up (vLLM: KeyboardInterrupt)
        stopping["flag"] = True
        fake.release()
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, early_term)
    try:
        try:
            fake.claim()
        except ValueError as e:
            log("ERROR", "core.py:1015", "EngineCore failed to start.", "EngineCore")
            print(f"ValueError: {e}", file=sys.stdout, flush=True)
            print("RuntimeError: Engine core initialization failed. See root cause above. "
                  "Failed core proc(s): {'EngineCore': 1}", file=sys.stderr, flush=True)
            return 1
        startup_s = float(os.environ.get("GPU_SHARING_FAKE_STARTUP_S", "0.5") or 0)
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        log("INFO", "core.py:95", f"init engine (profile, create kv cache, warmup model) took {startup_s:.2f} s", "EngineCore")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return asyncio.run(serve(fake, args.host, args.port))
    except KeyboardInterrupt:
        fake.release()
        return 130
    except OSError as e:
        fake.release()
        print(f"OSError: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
