"""Generated argv parsed by vLLM 0.33.0's real parser (needs a separate venv; see tests/vllm_parser_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gpu_sharing.config.schema import ModelSettings, VllmSettings
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.runtime.launch_spec import build_launch_spec

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = os.environ.get("GPU_SHARING_VLLM_PYTHON")


def argvs() -> list[list[str]]:
    out = []
    for tp in (1, 2, 8):
        for extra in ({}, {"quantization": "fp8", "kv_cache_dtype": "fp8", "enforce_eager": True},
                      {"lora": {"max_loras": 2, "max_lora_rank": 8, "modules": {"sql": "/a/sql"}}},
                      {"speculative": {"model": "org/draft", "num_speculative_tokens": 3}, "kv_cache_bytes": 2**31},
                      {"vllm_args": {"block-size": 32, "enable-prefix-caching": True, "seed": 1}}):
            model = ModelSettings(name="m", aliases=["m2"], source="org/m", max_model_len=4096,
                                  max_num_batched_tokens=2048, dtype="bfloat16", revision="main", **extra)
            parts = [LogicalPartition(0, k, k, f"renderD{128 + k}", 38, 1, 24 * 2**30, 0) for k in range(tp)]
            spec = build_launch_spec(instance_id="m-0", model=model, vllm=VllmSettings(), partitions=parts, tp=tp,
                                     port=8100, memory_bytes_per_rank=20 * 2**30)
            out.append(list(spec.argv))
    return out


@pytest.mark.skipif(not VLLM_PYTHON, reason="set GPU_SHARING_VLLM_PYTHON to a python with vllm==0.33.0 installed "
                    "(see tests/vllm_parser_check.py); vLLM is not a test dependency")
def test_real_vllm_parser_accepts_generated_argv(tmp_path):
    path = tmp_path / "argvs.json"
    path.write_text(json.dumps(argvs()))
    r = subprocess.run([VLLM_PYTHON, str(ROOT / "tests" / "vllm_parser_check.py"), str(path)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"})
    assert r.returncode == 0, r.stdout + r.stderr
