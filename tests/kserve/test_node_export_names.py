"""`kserve export` for this node: webhook-valid names, the pinned revision, /dev/shm for tp > 1."""

from __future__ import annotations

import re

import yaml

from gpu_sharing.cli.main import main

QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "max_position_embeddings": 32768}
WEBHOOK = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # kserve inference_service_validation.go IsvcNameFmt


def test_dotted_names_revision_and_shm(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"version": "v1", "models": [
        {"name": "qwen2.5-0.5b", "source": "Qwen/Qwen2.5-0.5B-Instruct", "config_json": QWEN_05B,
         "revision": "abc123", "max_model_len": 2048},
        {"name": "qwen-tp2", "source": "org/q", "config_json": QWEN_05B, "tensor_parallel_size": 2,
         "max_model_len": 2048}]}))
    assert main(["kserve", "export", "--simulate", "--sim-state", str(tmp_path / "sim"), "-c", str(cfg)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    isvcs = {d["metadata"]["annotations"]["gpu-sharing.io/model"]: d for d in docs if d["kind"] == "InferenceService"}
    assert all(WEBHOOK.match(d["metadata"]["name"]) for d in isvcs.values())
    assert isvcs["qwen2.5-0.5b"]["metadata"]["name"] == "qwen2-5-0-5b"
    assert isvcs["qwen2.5-0.5b"]["spec"]["predictor"]["model"]["storageUri"] == "hf://Qwen/Qwen2.5-0.5B-Instruct:abc123"
    tp2 = isvcs["qwen-tp2"]["spec"]["predictor"]
    assert tp2["model"]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert tp2["volumes"][0]["emptyDir"]["medium"] == "Memory"
    assert "volumes" not in isvcs["qwen2.5-0.5b"]["spec"]["predictor"]
