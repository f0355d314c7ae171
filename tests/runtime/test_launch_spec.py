"""Launch spec: exact vLLM 0.33 argv/env, every emitted flag exists in the 0.33.0 flag list."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from pydantic import ValidationError

from gpu_sharing.config.schema import ModelSettings, VllmSettings
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_spec import build_launch_spec, utilization_for

FLAGS = {line.strip() for line in (Path(__file__).resolve().parents[1] / "data" / "vllm-0.33.0-serve-flags.txt")
         .read_text().splitlines() if line.startswith("-")}
"""The flag list copied from the real 0.33.0 `vllm serve --help` (independent of the generated metadata)."""
GIB = 1024**3


def parts(n: int, total: int = 24 * GIB) -> list[LogicalPartition]:
    return [LogicalPartition(0, k, 8 + k, f"renderD{136 + k}", 38, 1, total, 0) for k in range(n)]


def spec_for(model: dict, tp: int = 1, vllm: dict | None = None, **kw):
    return build_launch_spec(instance_id="m-0", model=ModelSettings(**{"name": "m", "source": "org/m", **model}),
                             vllm=VllmSettings(**(vllm or {})), partitions=parts(tp), tp=tp, port=8123,
                             memory_bytes_per_rank=kw.pop("budget", 20 * GIB), **kw)


def emitted_flags(argv) -> set[str]:
    return {a for a in argv if a.startswith("--")}


def test_basic_argv_and_env():
    s = spec_for({"max_model_len": 8192, "aliases": ["m2"]}, tp=2, cu_mask="0:0-18")
    assert s.argv[:3] == ("vllm", "serve", "org/m")
    a = list(s.argv)
    assert a[a.index("--served-model-name") + 1: a.index("--served-model-name") + 3] == ["m", "m2"]
    assert a[a.index("--tensor-parallel-size") + 1] == "2" and a[a.index("--port") + 1] == "8123"
    assert a[a.index("--host") + 1] == "127.0.0.1"
    assert s.env["HIP_VISIBLE_DEVICES"] == "8,9" and s.env["HSA_CU_MASK"] == "0:0-18"
    assert "CUDA_VISIBLE_DEVICES" not in s.env
    assert emitted_flags(s.argv) <= FLAGS


def test_utilization_rounds_up_so_vllm_reserves_at_least_the_budget():
    for budget in (1, 20 * GIB, 23 * GIB + 12345, 24 * GIB):
        f = utilization_for(budget, 24 * GIB)
        assert 24 * GIB * f >= budget and f <= 1


def test_kv_cache_bytes_mode_also_passes_the_budget_fraction():
    # vLLM 0.33 checks free >= ceil(total x gpu_memory_utilization) even with --kv-cache-memory-bytes
    # (vllm/v1/worker/gpu_worker.py:542 -> v1/worker/utils.py:716): without the fraction the default
    # 0.92 would refuse a second instance on the partition.
    s = spec_for({"kv_cache_bytes": "4GiB"}, budget=10 * GIB)
    assert s.argv[s.argv.index("--kv-cache-memory-bytes") + 1] == str(4 * GIB)
    util = float(s.argv[s.argv.index("--gpu-memory-utilization") + 1])
    assert 10 * GIB <= 24 * GIB * util < 10 * GIB + 24 * GIB * 1e-4


def test_conflicting_cuda_visible_devices_is_dropped_with_warning():
    s = spec_for({"env": {"CUDA_VISIBLE_DEVICES": "3"}})
    assert "CUDA_VISIBLE_DEVICES" not in s.env and any("CUDA_VISIBLE_DEVICES" in w for w in s.warnings)


@pytest.mark.parametrize("args,match", [({"not-a-flag": 1}, "not a vLLM 0.33.0"), ({"port": 1}, "set by gpu-sharing")])
def test_bad_vllm_args_name_the_key(args, match):
    with pytest.raises(ValidationError, match=match):
        spec_for({"vllm_args": args})


def test_merge_order_defaults_then_model():
    s = spec_for({"vllm_args": {"block-size": 32}}, vllm={"vllm_args": {"block-size": 16, "seed": 7}})
    assert s.argv[s.argv.index("--block-size") + 1] == "32" and s.argv[s.argv.index("--seed") + 1] == "7"


@settings(max_examples=60, deadline=None)
@given(tp=st.sampled_from([1, 2, 4, 8]), eager=st.booleans(), q=st.sampled_from([None, "fp8", "awq", "gptq"]),
       kv=st.sampled_from(["auto", "fp8"]), dtype=st.sampled_from(["auto", "bfloat16", "float16"]),
       lora=st.booleans(), spec=st.booleans(), trust=st.booleans(), kvb=st.booleans(),
       extra=st.dictionaries(st.sampled_from(["block-size", "seed", "enable-prefix-caching", "swap-space",
                                              "enable-chunked-prefill", "max-num-batched-tokens"]),
                             st.one_of(st.booleans(), st.integers(1, 64)), max_size=3))
def test_every_emitted_flag_exists_in_vllm_0_33(tp, eager, q, kv, dtype, lora, spec, trust, kvb, extra):
    extra = {k: v for k, v in extra.items() if f"--{k}" in FLAGS}
    model = {"tensor_parallel_size": tp, "enforce_eager": eager, "quantization": q, "kv_cache_dtype": kv, "dtype": dtype,
             "max_model_len": 4096, "max_num_batched_tokens": 2048, "trust_remote_code": trust, "revision": "main",
             "vllm_args": extra}
    if lora:
        model["lora"] = {"max_loras": 2, "max_lora_rank": 8, "modules": {"sql": "/adapters/sql"}}
    if spec:
        model["speculative"] = {"model": "org/draft", "num_speculative_tokens": 3}
    if kvb:
        model["kv_cache_bytes"] = 2 * GIB
    try:
        s = spec_for(model, tp=tp)
    except ValidationError as e:  # managed keys and switch/int mix-ups among the random extras are refused
        assert "set by gpu-sharing" in str(e) or "is a switch" in str(e) or "takes" in str(e)
        return
    assert emitted_flags(s.argv) <= FLAGS
