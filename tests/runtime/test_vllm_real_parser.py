"""Generated argv parsed by vLLM 0.33.0's real parser (needs a separate venv; see tests/vllm_parser_check.py).

The argvs: every instance of the example config (config/gpu-sharing.yaml, sized with its catalog) and a
hypothesis-generated range of model settings; the parsed --max-model-len, --max-num-seqs,
--max-num-batched-tokens and --gpu-memory-utilization must equal the launch contract's numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from gpu_sharing.config.loader import load_config, load_sizing_catalog, resolve_relative
from gpu_sharing.config.schema import ModelSettings, VllmSettings
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_spec import build_launch_spec
from gpu_sharing.sizing import size_model

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = os.environ.get("GPU_SHARING_VLLM_PYTHON")
DATA = json.loads((ROOT / "tests" / "data" / "published_sizes.json").read_text())
CONFIGS = [e["config"] for e in DATA if e["config"].get("model_type") in ("llama", "qwen2", "mistral", "qwen3")]
GIB = 1024**3


def _item(model: ModelSettings, tp: int, budget: int, partition_bytes: int, vllm: VllmSettings | None = None) -> dict:
    parts = [LogicalPartition(0, k, k, f"renderD{128 + k}", 38, 1, partition_bytes, 0) for k in range(tp)]
    spec = build_launch_spec(instance_id="m-0", model=model, vllm=vllm or VllmSettings(), partitions=parts, tp=tp,
                             port=8100, memory_bytes_per_rank=budget, config_dir=ROOT / "config")
    c = spec.contract
    expect = {"max_num_seqs": c.max_num_seqs, "max_num_batched_tokens": c.max_num_batched_tokens,
              "gpu_memory_utilization": float(spec.argv[spec.argv.index("--gpu-memory-utilization") + 1])}
    if c.max_model_len:
        expect["max_model_len"] = c.max_model_len
    return {"argv": list(spec.argv), "expect": expect}


def example_config_items() -> list[dict]:
    path = ROOT / "config" / "gpu-sharing.yaml"
    cfg = load_config(path)
    catalog = load_sizing_catalog(resolve_relative(path, cfg.sizing.catalog)) if cfg.sizing.catalog else None
    out = []
    for model in cfg.models:
        for tp in (1, 2, 4, 8):
            size = size_model(model, tp=tp, catalog=catalog, config_dir=path.parent)
            if size.total_bytes_per_rank <= 190 * GIB:
                out.append(_item(model, tp, size.total_bytes_per_rank, 192 * GIB, cfg.vllm))
                break
    return out


def generated_items(n: int = 120) -> list[dict]:
    out: list[dict] = []

    @settings(max_examples=n, deadline=None, database=None)
    @given(cfg=st.sampled_from(CONFIGS), ctx=st.one_of(st.none(), st.integers(16, 32768)), seqs=st.integers(1, 512),
           batched=st.one_of(st.none(), st.integers(512, 16384)), tp=st.sampled_from([1, 2, 4]),
           eager=st.booleans(), kv=st.sampled_from(["auto", "fp8"]), kvflag=st.booleans(),
           q=st.sampled_from([None, "fp8"]), lora=st.booleans(), spare_gib=st.integers(0, 40),
           extra=st.dictionaries(st.sampled_from(["enable-prefix-caching", "enable-chunked-prefill", "block-size",
                                                  "middleware", "allowed-origins", "seed", "async-scheduling"]),
                                 st.booleans(), max_size=3))
    def collect(cfg, ctx, seqs, batched, tp, eager, kv, kvflag, q, lora, spare_gib, extra):
        args = {}
        for k, v in extra.items():
            args[k] = {"block-size": 32, "middleware": ["m.a", "m.b"], "allowed-origins": ["https://a.example"],
                       "seed": 7}.get(k, v)
        model = ModelSettings(name="m", aliases=["m2"], source="org/m", config_json=cfg, max_model_len=ctx,
                              max_num_seqs=seqs, max_num_batched_tokens=max(batched, seqs) if batched else None,
                              enforce_eager=eager, kv_cache_dtype=kv, quantization=q, vllm_args=args,
                              lora={"max_loras": 2, "max_lora_rank": 8, "modules": {"sql": "/a/sql"}} if lora else None)
        size = size_model(model, tp=tp)
        budget = size.total_bytes_per_rank + spare_gib * GIB
        vllm = VllmSettings(memory_flag="kv-cache-memory-bytes" if kvflag else "gpu-memory-utilization")
        out.append(_item(model, tp, budget, max(budget, 24 * GIB) + 2 * GIB, vllm))

    collect()
    return out


def test_generated_argv_carry_the_contract_numbers():
    """Without vLLM: each argv has the four contract flags once each."""
    for item in example_config_items() + generated_items(30):
        for flag in ("--max-model-len", "--max-num-seqs", "--max-num-batched-tokens", "--gpu-memory-utilization"):
            assert item["argv"].count(flag) == 1, (flag, item["argv"])


@pytest.mark.skipif(not VLLM_PYTHON, reason="set GPU_SHARING_VLLM_PYTHON to a python with vllm==0.33.0 installed "
                    "(see tests/vllm_parser_check.py); vLLM is not a test dependency")
def test_real_vllm_parser_accepts_generated_argv(tmp_path):
    items = example_config_items() + generated_items()
    path = tmp_path / "argvs.json"
    path.write_text(json.dumps(items))
    r = subprocess.run([VLLM_PYTHON, str(ROOT / "tests" / "vllm_parser_check.py"), str(path)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"})
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert f"accepted {len(items)} argv lists" in r.stdout
    print(r.stdout)
