"""`gpu-sharing kserve export` against the simulated node: valid KServe objects on the ROCm image."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from gpu_sharing.cli.main import main

QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
            "torch_dtype": "bfloat16", "max_position_embeddings": 32768}


def _flags() -> set[str]:
    text = resources.files("gpu_sharing.data").joinpath("vllm-0.33.0-serve-flags.txt").read_text()
    return {line.split()[0] for line in text.splitlines() if line.strip().startswith("--")}


def _walk(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + "." + k, k, v
            yield from _walk(v, path + "." + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield f"{path}[{i}]", None, v
            yield from _walk(v, f"{path}[{i}]")


def _export(tmp_path, capsys, *extra):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "version": "v1",
        "models": [{"name": "tiny", "source": "org/tiny", "aliases": ["small"], "config_json": QWEN_05B,
                    "replicas": 2, "max_model_len": 2048, "dtype": "bfloat16"},
                   {"name": "other", "source": "org/other", "config_json": QWEN_05B, "max_model_len": 4096}]}))
    rc = main(["kserve", "export", "--simulate", "--sim-state", str(tmp_path / "sim"), "-c", str(cfg), *extra])
    assert rc == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def test_export_objects_are_valid_kserve(tmp_path, capsys):
    docs = _export(tmp_path, capsys)
    kinds = [(d["apiVersion"], d["kind"]) for d in docs]
    assert kinds[0] == ("serving.kserve.io/v1alpha1", "ServingRuntime")
    assert sorted(d["metadata"]["name"] for d in docs[1:]) == ["other", "tiny"]
    assert all(k == ("serving.kserve.io/v1beta1", "InferenceService") for k in kinds[1:])
    for doc in docs:
        for where, key, value in _walk(doc):
            assert value is not None, where
            if key and "/" not in key:
                assert "_" not in key and "-" not in key, f"not camelCase: {where}"
    runtime = docs[0]
    container = runtime["spec"]["containers"][0]
    assert container["image"].startswith("vllm/vllm-openai-rocm:")
    assert "serving.kserve.io/server-type" not in runtime["metadata"].get("annotations", {})
    known = _flags()
    for isvc in docs[1:]:
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert model["runtimeVersion"]  # B1: without it KServe rewrites the image to -cpu
        assert model["resources"]["limits"]["amd.com/gpu"] == "1"
        args = [a for a in model["args"] + container["args"] if a.startswith("--")]
        unknown = [a for a in args if a.split("=")[0] not in known]
        assert not unknown
        assert "HIP_VISIBLE_DEVICES" not in {e["name"] for e in model.get("env", [])}
    tiny = next(d for d in docs if d["metadata"]["name"] == "tiny")["spec"]["predictor"]
    assert tiny["minReplicas"] == 2
    assert tiny["model"]["args"][:3] == ["--served-model-name", "tiny", "small"]
    assert "--max-model-len" in tiny["model"]["args"] and tiny["model"]["storageUri"] == "hf://org/tiny"


def test_mixed_naming_uses_partition_mode_resource(tmp_path, capsys):
    docs = _export(tmp_path, capsys, "--resource-naming", "mixed")
    for isvc in docs[1:]:
        limits = isvc["spec"]["predictor"]["model"]["resources"]["limits"]
        names = [k for k in limits if k.startswith("amd.com/")]
        assert len(names) == 1 and names[0] != "amd.com/gpu"
        assert names[0].split("/")[1].split("_")[0] in {"spx", "dpx", "tpx", "qpx", "cpx"}


def test_out_dir_writes_one_file_per_object(tmp_path, capsys):
    out = tmp_path / "out"
    _ = _export(tmp_path, capsys, "--out", str(out))
    files = sorted(p.name for p in out.iterdir())
    assert files == ["inferenceservice-other.yaml", "inferenceservice-tiny.yaml",
                     "servingruntime-gpu-sharing-vllm-rocm.yaml"]


@pytest.mark.parametrize("bad", [["--resource-naming", "weird"]])
def test_bad_naming_is_exit_2(tmp_path, bad):
    with pytest.raises(SystemExit) as e:
        main(["kserve", "export", "--simulate", *bad])
    assert e.value.code == 2
