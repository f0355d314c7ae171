"""`gpu-sharing validate` exits 2, naming the key, for the memory-contract inputs vLLM 0.33 would refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gpu_sharing.cli.main import main

DATA = json.loads((Path(__file__).resolve().parents[1] / "data" / "published_sizes.json").read_text())
MISTRAL = next(e["config"] for e in DATA if e["model_id"] == "mistralai/Mistral-7B-v0.1")


def write(tmp_path: Path, model: dict, catalog: list | None = None) -> Path:
    cfg = {"version": "v1", "models": [{"name": "m", "source": "mistralai/Mistral-7B-v0.1", "config_json": MISTRAL,
                                        "max_model_len": 8192, "max_num_seqs": 4, **model}]}
    if catalog is not None:
        (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"version": "v1", "models": catalog}))
        cfg["sizing"] = {"catalog": "catalog.yaml"}
    path = tmp_path / "gs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("model,catalog,needle", [
    ({}, [{"model_id": "mistralai/Mistral-7B-v0.1", "parameters": "7B", "memory_gb": 5}],
     "5.0 GB is below the computed weights"),
    ({"lora": {"max_lora_rank": 24}}, None, "max_lora_rank"),
    ({"quantization": "bitsandbytes"}, None, "not run by vLLM 0.33 on ROCm"),
    ({"lora": {"modules": {"--host": "0.0.0.0"}}}, None, "lora.modules"),
    ({"vllm_args": {"middleware": ["a.b", "--host=0.0.0.0"]}}, None, "would be read as another vLLM flag"),
])
def test_validate_exits_2_naming_the_problem(tmp_path, capsys, model, catalog, needle):
    assert main(["validate", "-c", str(write(tmp_path, model, catalog))]) == 2
    assert needle in capsys.readouterr().err


def test_trusted_catalog_entry_and_sane_settings_validate(tmp_path):
    catalog = [{"model_id": "mistralai/Mistral-7B-v0.1", "parameters": "7B", "memory_gb": 5, "trust_catalog": True}]
    assert main(["validate", "-c", str(write(tmp_path, {"lora": {"max_lora_rank": 32}}, catalog))]) == 0
