"""The launch contract: vLLM is passed exactly the numbers the plan sized; values are encoded as vLLM's parser reads them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from gpu_sharing.config.schema import ModelSettings, VllmSettings
from gpu_sharing.config.sizing_catalog import SizingCatalog
from gpu_sharing.config.vllm_flags import encode
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_spec import build_launch_spec
from gpu_sharing.sizing import size_model
from gpu_sharing.sizing.resolve import check_catalog

DATA = json.loads((Path(__file__).resolve().parents[1] / "data" / "published_sizes.json").read_text())
LLAMA8B = next(e["config"] for e in DATA if e["model_id"] == "meta-llama/Llama-3.1-8B")
MISTRAL7B = next(e["config"] for e in DATA if e["model_id"] == "mistralai/Mistral-7B-v0.1")
GIB = 1024**3


def parts(n: int, total: int) -> list[LogicalPartition]:
    return [LogicalPartition(0, k, k, f"renderD{128 + k}", 38, 1, total, 0) for k in range(n)]


def arg(argv, flag: str) -> str:
    return argv[argv.index(flag) + 1]


def launch(model: ModelSettings, budget: int, total: int = 48 * GIB, tp: int = 1, vllm: VllmSettings | None = None):
    return build_launch_spec(instance_id="m-0", model=model, vllm=vllm or VllmSettings(), partitions=parts(tp, total),
                             tp=tp, port=8100, memory_bytes_per_rank=budget)


@settings(max_examples=40, deadline=None)
@given(ctx=st.one_of(st.none(), st.integers(256, 131072)), seqs=st.integers(1, 64),
       batched=st.one_of(st.none(), st.integers(64, 16384)), tp=st.sampled_from([1, 2, 4, 8]),
       eager=st.booleans(), kv=st.sampled_from(["auto", "fp8"]))
def test_argv_carries_exactly_what_the_plan_sized(ctx, seqs, batched, tp, eager, kv):
    model = ModelSettings(name="m", source="org/m", config_json=LLAMA8B, max_model_len=ctx, max_num_seqs=seqs,
                          max_num_batched_tokens=max(batched, seqs) if batched else None, enforce_eager=eager,
                          kv_cache_dtype=kv)
    size = size_model(model, tp=tp)  # what the planner places: its total is the placement's budget
    partition = max(size.total_bytes_per_rank, 8 * GIB) + 3 * GIB
    s = launch(model, size.total_bytes_per_rank, total=partition, tp=tp)
    c = size.contract
    assert int(arg(s.argv, "--max-model-len")) == c.max_model_len == s.contract.max_model_len
    assert int(arg(s.argv, "--max-num-seqs")) == seqs
    assert int(arg(s.argv, "--max-num-batched-tokens")) == c.max_num_batched_tokens >= seqs
    util = float(arg(s.argv, "--gpu-memory-utilization"))
    # vLLM requests ceil(total x util) (vllm/v1/worker/utils.py:724): at least the budget minus the context it finds
    # already in use (HIP context, communicator), at most 1e-4 above; context + request = what the plan placed
    requested = size.total_bytes_per_rank - c.budget.context_bytes
    assert 0 < c.budget.context_bytes < size.total_bytes_per_rank
    assert requested <= math.ceil(partition * util) <= requested + partition * 1e-4
    assert ("--enforce-eager" in s.argv) == eager
    assert c.budget.total_bytes == size.total_bytes_per_rank
    assert s.contract.kv_needed_for(c.max_model_len, seqs) <= s.contract.budget.kv_bytes


def test_auto_context_grows_to_the_longest_that_fits_the_placement():
    model = ModelSettings(name="m", source="org/m", config_json=LLAMA8B, max_num_seqs=1)
    size = size_model(model)
    assert size.contract.max_model_len == 8192 and size.contract.max_model_len_auto
    s = launch(model, size.total_bytes_per_rank + 4 * GIB)
    c = s.contract
    mml = int(arg(s.argv, "--max-model-len"))
    assert mml == c.max_model_len > 8192 and mml % 16 == 0
    assert c.kv_needed_for(mml, 1) <= c.budget.kv_bytes < c.kv_needed_for(mml + 16, 1)
    huge = launch(model, size.total_bytes_per_rank + 200 * GIB, total=256 * GIB).contract
    assert huge.max_model_len == LLAMA8B["max_position_embeddings"]  # never above the model's maximum


def test_kv_cache_memory_bytes_mode_passes_the_sized_pool_and_the_fraction():
    model = ModelSettings(name="m", source="org/m", config_json=LLAMA8B, max_model_len=8192, max_num_seqs=4)
    size = size_model(model)
    s = launch(model, size.total_bytes_per_rank, vllm=VllmSettings(memory_flag="kv-cache-memory-bytes"))
    assert int(arg(s.argv, "--kv-cache-memory-bytes")) == size.contract.budget.kv_bytes == size.kv_bytes
    assert "--gpu-memory-utilization" in s.argv


def test_catalog_is_a_minimum_and_validate_refuses_an_entry_below_the_weights():
    model = ModelSettings(name="mistral", source="mistralai/Mistral-7B-v0.1", config_json=MISTRAL7B,
                          max_model_len=8192, max_num_seqs=4)
    low = SizingCatalog(models=[{"model_id": "mistralai/Mistral-7B-v0.1", "parameters": "7B", "memory_gb": 5}])
    with pytest.raises(UserError, match=r"5.0 GB is below the computed weights .*14\.\d+ GB"):
        check_catalog(model, low)
    computed = size_model(model).total_bytes_per_rank
    assert size_model(model, catalog=low).total_bytes_per_rank == computed  # never placed below what it needs
    trusted = SizingCatalog(models=[{"model_id": "mistralai/Mistral-7B-v0.1", "parameters": "7B", "memory_gb": 5,
                                     "trust_catalog": True}])
    check_catalog(model, trusted)
    assert size_model(model, catalog=trusted).total_bytes_per_rank == math.ceil(5e9)
    long_ctx = model.model_copy(update={"max_model_len": 32768})
    mid = SizingCatalog(models=[{"model_id": "mistralai/Mistral-7B-v0.1", "parameters": "7B", "memory_gb": 16}])
    with pytest.raises(UserError, match="needs for 32768 tokens"):
        check_catalog(long_ctx, mid)
    big = size_model(model, catalog=SizingCatalog(models=[{"model_id": "mistralai/Mistral-7B-v0.1",
                                                            "parameters": "7B", "memory_gb": 40}]))
    assert big.contract.budget.kv_bytes == big.total_bytes_per_rank - big.contract.budget.non_kv_bytes


def test_seed_catalog_shapes_load():
    cat = SizingCatalog.model_validate({"models": {"org/a": {"parameters": "8B", "memory_gb": 20,
                                                             "quantization": [None, "fp8"]}}})
    assert [(e.model_id, e.quantization) for e in cat.models] == [("org/a", None), ("org/a", "fp8")]


@pytest.mark.parametrize("key,value,expected", [
    ("enable-prefix-caching", False, ["--disable-prefix-caching"]),
    ("enable-prefix-caching", True, ["--enable-prefix-caching"]),
    ("disable-log-stats", True, ["--disable-log-stats"]),
    ("async-scheduling", False, ["--no-async-scheduling"]),
    ("middleware", ["a.b", "c.d"], ["--middleware", "a.b", "--middleware", "c.d"]),
    ("allowed-origins", ["https://x.example"], ["--allowed-origins", '["https://x.example"]']),
    ("compilation-config", {"level": 3}, ["--compilation-config", '{"level":3}']),
    ("block-size", 32, ["--block-size", "32"]),
])
def test_values_are_encoded_as_vllms_parser_reads_them(key, value, expected):
    assert encode(key, value, "vllm_args") == expected


@pytest.mark.parametrize("model", [
    {"vllm_args": {"middleware": ["ok", "--host=0.0.0.0"]}},
    {"vllm_args": {"seed": "--host"}},
    {"vllm_args": {"tokenizer": "-x"}},
    {"lora": {"modules": {"--host": "0.0.0.0"}}},
    {"lora": {"modules": {"a b": "/x"}}},
    {"lora": {"modules": {"sql": "--host=0.0.0.0"}}},
    {"lora": {"max_lora_rank": 24}},
    {"quantization": "bitsandbytes"},
    {"vllm_args": {"dtype": "float16"}},
    {"vllm_args": {"kv-cache-dtype": "nope"}},
    {"vllm_args": {"enable-prefix-caching": "yes"}},
])
def test_injection_and_invalid_values_are_refused_at_validate(model):
    with pytest.raises(ValidationError):
        ModelSettings(name="m", source="org/m", **model)
