"""The fake vLLM refuses, with vLLM 0.33's own text, each launch real vLLM refuses for memory reasons.

In-process (FakeVllm.claim on a simulated node) so each rule costs milliseconds; the end-to-end
exit code and stdout are covered by test_fake_vllm.py. Each test names the vLLM source line it copies.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gpu_sharing.config.schema import ModelSettings, VllmSettings
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_spec import build_launch_spec
from gpu_sharing.sizing import size_model
from simulator.node import SimNode
from simulator.vllm_args import parse_serve_args
from simulator.vllm_memory import CONTEXT_BYTES, StartupRefused, format_gib
from simulator.vllm_server import FakeVllm

GIB = 1024**3
DATA = json.loads((Path(__file__).resolve().parents[1] / "data" / "published_sizes.json").read_text())
LLAMA8B = next(e["config"] for e in DATA if e["model_id"] == "meta-llama/Llama-3.1-8B")
NO_OVERHEAD = json.dumps({"non_torch_bytes": 0, "activation_peak_bytes": 0, "graph_bytes": 0})


@pytest.fixture
def node(tmp_path):
    return SimNode.create(tmp_path / "sim", "MI300X", 1, compute_mode="CPX")  # 8 partitions of 24 GiB


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "llama8b"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA8B))
    return str(d)


def fake(node, *argv, hip=0):
    return FakeVllm(parse_serve_args(["serve", *argv]), [hip], node, None)


def test_free_memory_below_the_requested_share_is_refused(node, model_dir):
    # vllm/v1/worker/utils.py:762-770 (called from gpu_worker.py:542 on every start); the free memory vLLM sees is
    # what its own HIP context left (the init snapshot is taken after it)
    node.claim_memory(0, 999999, "other", 4 * GIB, synthetic=True)
    seen = format_gib(20 * GIB - CONTEXT_BYTES).replace(".", r"\.")
    with pytest.raises(StartupRefused, match=rf"Free memory on device cuda:0 \({seen}/24.0 GiB\) on startup is less "
                       r"than desired GPU memory utilization \(0.92, 22.08 GiB\)"):
        fake(node, model_dir, "--max-model-len", "4096").claim()


def test_kv_cache_memory_bytes_does_not_skip_the_free_memory_check(node, model_dir):
    # gpu_worker.py:542 request_memory runs before the kv_cache_memory_bytes branch (gpu_worker.py:656)
    node.claim_memory(0, 999999, "other", 4 * GIB, synthetic=True)
    with pytest.raises(StartupRefused, match="Free memory on device"):
        fake(node, model_dir, "--max-model-len", "4096", "--kv-cache-memory-bytes", "1G").claim()


def test_weights_that_do_not_fit_the_partition(node, model_dir, monkeypatch):
    # torch's caching allocator (c10/cuda/CUDACachingAllocator.cpp) while loading 14.96 GiB of weights
    node.claim_memory(0, 999999, "other", 12 * GIB, synthetic=True)
    with pytest.raises(StartupRefused, match=r"HIP out of memory. Tried to allocate 14.96 GiB"):
        fake(node, model_dir, "--max-model-len", "4096", "--gpu-memory-utilization", "0.4").claim()


def test_kv_pool_smaller_than_one_max_model_len_sequence(node, model_dir):
    # vllm/v1/core/kv_cache_planning.py:78: the model's 131072 tokens need 16 GiB of KV on one rank
    with pytest.raises(StartupRefused, match=r"To serve at least one request with the model's max seq len "
                       r"\(131072\), \(16.0 GiB KV cache is needed, which is larger than the available KV cache "
                       r"memory \(\d+\.\d+ GiB\)\. Based on the available memory, the estimated maximum model length"):
        fake(node, model_dir).claim()  # no --max-model-len: vLLM uses max_position_embeddings


def test_no_memory_left_for_the_cache_blocks(node, model_dir, monkeypatch):
    # vllm/v1/core/kv_cache_planning.py:56-64: requested - non-KV <= 0
    with pytest.raises(StartupRefused, match="No available memory for the cache blocks"):
        fake(node, model_dir, "--max-model-len", "4096", "--gpu-memory-utilization", "0.63").claim()


def test_activation_peak_grows_with_the_device_dependent_batched_tokens(tmp_path, model_dir):
    # vllm/engine/arg_utils.py:2973-3006: unset --max-num-batched-tokens/--max-num-seqs are 16384/1024 on a 192 GiB
    # device, 2048/256 on 24 GiB; the profile run's peak follows them and the KV pool gets what is left
    big = SimNode.create(tmp_path / "spx", "MI300X", 1, compute_mode="SPX")
    whole = fake(big, model_dir, "--max-model-len", "8192")
    whole.claim()
    small = SimNode.create(tmp_path / "cpx", "MI300X", 1, compute_mode="CPX")
    part = fake(small, model_dir, "--max-model-len", "8192")
    part.claim()
    assert whole.profile.activation_peak_bytes > 3 * part.profile.activation_peak_bytes
    explicit = fake(small, model_dir, "--max-model-len", "8192", "--max-num-batched-tokens", "16384", hip=1)
    explicit.claim()
    grown = explicit.profile.activation_peak_bytes - part.profile.activation_peak_bytes
    assert grown > GIB and part.kv_bytes - explicit.kv_bytes == grown


def test_scheduler_refuses_fewer_batched_tokens_than_sequences(node, model_dir):
    # vllm/config/scheduler.py:331
    with pytest.raises(StartupRefused, match=r"max_num_batched_tokens \(64\) must be greater than or equal to "
                       r"max_num_seqs \(128\)"):
        fake(node, model_dir, "--max-num-batched-tokens", "64", "--max-num-seqs", "128").claim()


def test_max_model_len_above_the_models_maximum(node, model_dir):
    # vllm/config/model.py:2663
    with pytest.raises(StartupRefused, match=r"User-specified max_model_len \(200000\) is greater than the derived"):
        fake(node, model_dir, "--max-model-len", "200000").claim()


def test_a_second_instance_fits_beside_the_first_when_launched_as_sized(tmp_path, model_dir):
    """The contract's argv (budget fraction + explicit numbers) starts two instances on one 96 GiB partition;
    vLLM's default 0.92 would refuse the second (the issue's kv-cache-memory-bytes case)."""
    node = SimNode.create(tmp_path / "dpx", "MI300X", 1, compute_mode="DPX")
    total = node.partition_info(0)["vram_total_bytes"]
    model = ModelSettings(name="m", source=model_dir, max_model_len=8192, max_num_seqs=4)
    size = size_model(model)
    argvs = []
    for mode in ("gpu-memory-utilization", "kv-cache-memory-bytes"):
        spec = build_launch_spec(instance_id="m-0", model=model, vllm=VllmSettings(memory_flag=mode),
                                 partitions=[LogicalPartition(0, 0, 0, "renderD128", 152, 4, total, 0)], tp=1,
                                 port=8100, memory_bytes_per_rank=size.total_bytes_per_rank)
        argvs.append(list(spec.argv[2:]))
    first, second = fake(node, *argvs[0]), fake(node, *argvs[1])
    first.claim()
    second.claim()  # vLLM's default 0.92 would have been refused here
    assert first.claimed[0] <= size.total_bytes_per_rank + total * 1e-4  # utilization mode holds its share
    assert first.kv_bytes > 0 and second.kv_bytes == size.contract.budget.kv_bytes
    with pytest.raises(StartupRefused, match="Free memory on device"):
        fake(node, model_dir, "--max-model-len", "8192").claim()


def test_invalid_request_bodies_get_vllms_400(node, model_dir):
    # vllm/entrypoints/serve/exception_handling/handlers/validation.py:149-195
    f = fake(node, model_dir, "--max-model-len", "4096", "--served-model-name", "m")

    async def run():
        async with TestClient(TestServer(f.app())) as client:
            bad = await client.post("/v1/chat/completions", json={"model": "m", "messages": "bad"})
            body = await bad.json()
            ok = await client.post("/v1/chat/completions", json={"model": "m",
                                                                 "messages": [{"role": "user", "content": "hi"}]})
            worse = await client.post("/v1/completions", json={"model": "m", "prompt": 5, "max_tokens": "x"})
            return bad.status, body, ok.status, worse.status, await worse.json()

    status, body, ok, worse, wbody = asyncio.run(run())
    assert status == 400 and ok == 200 and worse == 400
    assert body["error"]["type"] == "Bad Request" and body["error"]["param"] == "body.messages"
    assert body["error"]["message"].startswith("1 validation error:\n  {'type': 'list_type', 'loc': 'body.messages'")
    assert wbody["error"]["message"].startswith("2 validation errors:")


def test_the_daemon_reports_vllms_refusal_text_as_the_cause(tmp_path, node, model_dir):
    """The supervisor's cause (runtime/logs.failure_reason) is vLLM's root-cause line, not the wrapper after it."""
    import subprocess
    import sys

    from gpu_sharing.runtime.logs import failure_reason

    log = tmp_path / "m-0.log"
    env = {"GPU_SHARING_SIM_STATE": str(tmp_path / "sim"), "HIP_VISIBLE_DEVICES": "0", "PATH": "/usr/bin:/bin"}
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-m", "simulator.vllm_server", "serve", model_dir, "--port", "1"],
                            stdout=out, stderr=subprocess.STDOUT, env=env, timeout=60).returncode
    assert rc == 1
    cause = failure_reason(log)
    assert cause.startswith("ValueError: To serve at least one request with the model's max seq len (131072)")
