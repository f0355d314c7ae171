"""A fake ``vllm serve`` (0.33.0) for the simulated node: same argv, same endpoints, same failures.

Run as ``python -m simulator.vllm_server serve MODEL [flags]``. What it copies from vLLM
(docs: shared reference vllm-api-shapes.md):
- the ROCm visibility check (HIP vs CUDA_VISIBLE_DEVICES) before anything else, and an
  HSA_CU_MASK syntax check like ROCm's;
- memory: vLLM 0.33's start-up rules with vLLM's own texts and exit 1 (simulator/vllm_memory.py:
  free memory vs ceil(total x gpu_memory_utilization), weights that do not fit, a KV pool that
  cannot hold one max_model_len sequence, device-dependent batch defaults, scheduler limits);
  per rank it then holds what vLLM would (the requested share, or weights + overheads + the
  fixed KV pool with --kv-cache-memory-bytes);
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
import os
import signal
import sys
import time
from datetime import datetime

from aiohttp import web

from simulator import vllm_memory as mem
from simulator.node import SimNode, SimOutOfMemory, default_state_dir
from simulator.vllm_args import ServeArgs, parse_serve_args
from simulator.vllm_engine import attach, resolve_devices
from simulator.vllm_memory import StartupRefused
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


def parse_lora_modules(values: list[str]) -> dict[str, str]:
    """``--lora-modules name=path ...`` or JSON ``{"name": .., "path": ..}`` items, as vLLM's
    ``LoRAParserAction`` reads them (vllm/entrypoints/openai/cli_args.py)."""
    out: dict[str, str] = {}
    for v in values:
        if v.lstrip().startswith("{"):
            item = json.loads(v)
            out[item["name"]] = item["path"]
        else:
            name, _, path = v.partition("=")
            out[name] = path
    return out


class FakeVllm:
    def __init__(self, args: ServeArgs, devices: list[int], node: SimNode | None, cu_mask: str | None):
        self.args = args
        self.devices = devices
        self.node = node
        self.cu_mask = cu_mask
        self.names = args.names
        self.lora_modules = parse_lora_modules(args.raw.get("--lora-modules", []))
        """LoRA adapter name -> path (``--lora-modules``): accepted as ``model`` and listed in /v1/models."""
        self.max_model_len = args.max_model_len or 4096
        self.metrics = FakeMetrics(self.names[0], args, cu_mask)
        self.requests = 0
        self.crash_after = int(os.environ.get("GPU_SHARING_FAKE_CRASH_AFTER_REQUESTS", "0") or 0)
        self.delay_per_token_s = float(os.environ.get("GPU_SHARING_FAKE_DELAY_PER_TOKEN_S", "0") or 0)
        self.claimed: dict[int, int] = {}
        self.profile: mem.Profile | None = None
        self.kv_bytes = 0

    # ------------------------------------------------------------------ memory
    def claim(self) -> None:
        """vLLM 0.33's start-up memory path, rule by rule (simulator/vllm_memory.py cites each source line)."""
        a = self.args
        tp = a.tensor_parallel_size
        if self.node is not None and tp != len(self.devices):
            raise StartupRefused(f"tensor_parallel_size ({tp}) must equal the number of visible devices "
                                 f"({len(self.devices)})")
        kv_dtype_bytes = 1 if a.kv_cache_dtype.startswith("fp8") else None
        facts = mem.model_facts(a.model, tp, kv_dtype_bytes)
        infos = [self.node.partition_info(hip) for hip in self.devices] if self.node is not None else []
        total = min((i["vram_total_bytes"] for i in infos), default=192 * 2**30)
        tokens_default, seqs_default = mem.batch_defaults(total, "amd instinct mi300x")
        batched = a.max_num_batched_tokens or tokens_default  # vllm/engine/arg_utils.py:2973-3006
        seqs = a.max_num_seqs or seqs_default
        mem.check_scheduler(batched, seqs)
        self.max_model_len = mem.check_max_model_len(a.max_model_len, facts)
        self.profile = mem.profile_for(facts, tp=tp, batched_tokens=batched, enforce_eager=a.enforce_eager,
                                       max_num_seqs=seqs)
        log("INFO", "gpu_model_runner.py:5089",
            f"Model loading took {mem.format_gib(self.profile.weights_bytes)} GiB memory and 0.500000 seconds", "EngineCore")
        if self.node is None:
            return
        block = a.block_size or 16
        for rank, (hip, info) in enumerate(zip(self.devices, infos)):
            part_total = info["vram_total_bytes"]
            # the HIP context (and communicator) exists before vLLM's first snapshot: vLLM sees the memory
            # left after it (vllm/v1/worker/gpu_worker.py init snapshot -> utils.py request_memory)
            context = min(self.profile.context_bytes, part_total - info["vram_used_bytes"])
            free = part_total - info["vram_used_bytes"] - context
            requested = mem.request_memory(free, part_total, a.gpu_memory_utilization, rank)
            mem.check_weights_fit(self.profile.weights_bytes, free, part_total, rank)
            kv = mem.kv_pool(requested, self.profile, a.kv_cache_memory_bytes)
            if facts is not None and a.max_model_len_auto and facts.kv_bytes_per_token_per_rank and kv > 0:
                # --max-model-len auto: the longest that fits the pool (vllm/v1/core/kv_cache_planning.py:95)
                fit = kv // facts.kv_bytes_per_token_per_rank // block * block
                self.max_model_len = max(block, min(self.max_model_len, fit))
            if facts is not None:
                mem.check_kv(kv, self.max_model_len, facts.kv_bytes_per_token_per_rank, block)
            elif kv <= 0:
                mem.check_kv(kv, self.max_model_len, 0, block)
            use = requested if a.kv_cache_memory_bytes is None else self.profile.non_kv_bytes + kv
            if use > free:  # the fixed KV pool does not fit beside the weights: the KV allocation fails
                mem.check_weights_fit(use, free, part_total, rank)
            use += context
            try:
                self.node.claim_memory(hip, os.getpid(), "vllm", use)
            except SimOutOfMemory as e:  # another instance took the memory since we read it
                self.release()
                mem.request_memory(max(0, e.free_bytes - context), part_total, a.gpu_memory_utilization, rank)
                raise
            self.claimed[hip] = use
            self.kv_bytes = kv
            log("INFO", "gpu_worker.py:773", f"Available KV cache memory: {mem.format_gib(kv)} GiB", "EngineCore")
            if facts is not None and facts.kv_bytes_per_token_per_rank:
                tokens = kv // facts.kv_bytes_per_token_per_rank // block * block
                log("INFO", "kv_cache_utils.py:1149", f"GPU KV cache size: {tokens:,} tokens, Maximum concurrency for "
                    f"{self.max_model_len:,} tokens per request: {tokens / self.max_model_len:.2f}x", "EngineCore")

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
        except (StartupRefused, SimOutOfMemory) as e:
            # vLLM prints the root cause, then "Engine core initialization failed" (v1/engine/utils.py): exit 1
            fake.release()
            kind = getattr(e, "kind", "ValueError")
            log("ERROR", "core.py:1015", "EngineCore failed to start.", "EngineCore")
            print(f"{kind}: {e}", file=sys.stdout, flush=True)
            print("RuntimeError: Engine core initialization failed. See root cause above. "
                  "Failed core proc(s): {'EngineCore': 1}", file=sys.stderr, flush=True)
            return 1
        weights = fake.profile.weights_bytes if fake.profile else 0
        load_s, graph_s, startup_s = mem.startup_seconds(
            float(os.environ.get("GPU_SHARING_FAKE_STARTUP_S", "0.5") or 0), weights,
            float(os.environ.get("GPU_SHARING_FAKE_DISK_BYTES_PER_S", "0") or 0),
            float(os.environ.get("GPU_SHARING_FAKE_GRAPH_CAPTURE_S", "0") or 0), fake.args.enforce_eager)
        log("INFO", "gpu_model_runner.py:5089", f"Loading weights took {load_s:.6f} seconds", "EngineCore")
        if graph_s:
            log("INFO", "gpu_model_runner.py:4510", f"Graph capturing finished in {graph_s:.0f} secs", "EngineCore")
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
