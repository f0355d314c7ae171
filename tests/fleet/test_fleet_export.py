"""`kserve export --fleet` and `plan --fleet`: what the GPU Operator and KServe would accept.

Checks, each from its source (not from the emitter's code):
- every KServe document against the CRD schema parts in tests/data/kserve/crd-parts.json
  (kserve/kserve config/crd/full, commit inside the file), with unknown keys rejected as
  the API server's strict field validation does;
- InferenceService names against the webhook's rule and the host-label length limit;
- the DCM ConfigMap's profiles against DCM's checks for every labelled node;
- every pod's resource request against what the labelled nodes advertise (device plugin
  mixed naming, partitions per GPU from the catalog), packed onto nodes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import cli_process
import jsonschema
import pytest
import yaml

from fleet_fixtures import CONFIG, FLEET, write
from test_dcm_rules import parse

from gpu_sharing.cli.main import main
from gpu_sharing.config.fleet_schema import load_fleet
from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.dcm import profile_problems
from gpu_sharing.hardware.modes import ComputePartitionMode as C

CRD = json.loads((Path(__file__).resolve().parents[1] / "data" / "kserve" / "crd-parts.json").read_text())
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""kserve pkg/apis/serving/v1beta1/inference_service_validation.go IsvcNameFmt (commit 00ff0005)."""
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
"""k8s.io/apimachinery pkg/util/validation/validation.go IsValidLabelValue (<= 63 characters)."""


def strict(schema):
    """Reject unknown keys where the schema lists properties (server-side strict validation)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


ROOT = Path(__file__).resolve().parents[2]


def export(tmp_path, config=None, fleet=None, paths=None):
    cfg, flt = paths or write(tmp_path, config, fleet)
    out = tmp_path / "out"
    assert main(["kserve", "export", "-c", str(cfg), "--fleet", str(flt), "--out", str(out)]) == 0
    docs = {f.name: list(yaml.safe_load_all(f.read_text())) for f in sorted(out.glob("*.yaml"))}
    return out, {name: d[0] for name, d in docs.items()}


def node_labels(script: str) -> dict[str, str]:
    labels = {}
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words[1:3] == ["label", "node"]:
            key, value = words[4].split("=")
            assert key == "dcm.amd.com/gpu-config-profile" and "--overwrite" in words
            labels[words[3]] = value
    return labels


@pytest.mark.parametrize("shipped", [False, True], ids=["fixture", "shipped-example"])
def test_export_writes_what_the_operator_and_kserve_accept(tmp_path, capsys, shipped):
    """The acceptance: config/gpu-sharing.yaml + config/fleet.yaml without ROCm, and a fixture
    with a pinned CPX+NPS4 pool, tp > 1 and a pinned revision."""
    paths = (ROOT / "config" / "gpu-sharing.yaml", ROOT / "config" / "fleet.yaml") if shipped else None
    out, docs = export(tmp_path, paths=paths)
    fleet = load_fleet(paths[1]) if shipped else None
    if not shipped:
        assert sorted(docs) == ["dcm-configmap.yaml", "inferenceservice-llama-3-1-8b.yaml",
                                "inferenceservice-qwen2-5-0-5b.yaml", "servingruntime-gpu-sharing-vllm-rocm.yaml"]
    else:
        assert len([d for d in docs if d.startswith("inferenceservice-")]) == 4
    assert os.access(out / "label-nodes.sh", os.X_OK)
    ran = subprocess.run(["sh", str(out / "label-nodes.sh")], env={**os.environ, "KUBECTL": "echo kubectl"},
                         capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count(" label node ") == len(node_labels((out / "label-nodes.sh").read_text()))
    kserve = [d for d in docs.values() if d["apiVersion"].startswith("serving.kserve.io/")]
    for doc in kserve:
        schema = CRD[f"{doc['apiVersion']}/{doc['kind']}"]["openAPIV3Schema"]
        jsonschema.validate({k: v for k, v in doc.items() if k != "metadata"}, strict(schema))
    # DCM: every labelled node gets a profile from the ConfigMap that passes DCM's checks for it
    cm = docs["dcm-configmap.yaml"]
    assert (cm["apiVersion"], cm["kind"], cm["metadata"]["namespace"]) == ("v1", "ConfigMap", "kube-amd-gpu")
    profiles = json.loads(cm["data"]["config.json"])["gpu-config-profiles"]
    labels = node_labels((out / "label-nodes.sh").read_text())
    pool_list = [p.model_dump() for p in fleet.pools] if fleet else FLEET["pools"]
    pools = {n: p for p in pool_list
             for n in (p.get("node_names") or [f"{p['name']}-{i}" for i in range(p.get("nodes") or 0)])}
    assert sorted(labels) == sorted(pools)
    for node, profile in labels.items():
        assert LABEL_VALUE.match(profile) and len(profile) <= 63
        pool = pools[node]
        assert profile_problems(parse(profiles[profile]), pool["gpus_per_node"], get_spec(pool["gpu_model"])) == []
    if not shipped:
        assert labels["n-1"] == labels["n-2"] and "cpx-nps4" in labels["n-1"]  # the pool's pin
    # Resources: each pod's request is a mixed-strategy partition type that its nodes advertise
    advertised = {}
    for node, profile in labels.items():
        spec = get_spec(pools[node]["gpu_model"])
        for e in profiles[profile]["profiles"]:
            res = f"amd.com/{e['computePartition'].lower()}_{e['memoryPartition'].lower()}"
            advertised.setdefault(node, {}).setdefault(res, 0)
            advertised[node][res] += e["numGPUsAssigned"] * spec.partitions(C(e["computePartition"]))
    pods = []
    for doc in (d for d in kserve if d["kind"] == "InferenceService"):
        name = doc["metadata"]["name"]
        assert ISVC_NAME.match(name) and len(name) <= 63 - len("-predictor-") - len(doc["metadata"]["namespace"])
        pred = doc["spec"]["predictor"]
        res = pred["model"]["resources"]
        gpu = {k: v for k, v in res["limits"].items() if k.startswith("amd.com/")}
        assert res["requests"] == res["limits"] and len(gpu) == 1 and "amd.com/gpu" not in gpu
        (resource, count), = gpu.items()
        (term,) = pred["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        (expr,) = term["matchExpressions"]
        nodes = [n for n, p in labels.items() if p in expr["values"]]
        assert nodes and all(advertised[n].get(resource, 0) >= int(count) for n in nodes)
        pods += [(int(count), resource, nodes)] * pred["minReplicas"]
    free = {n: dict(r) for n, r in advertised.items()}
    for count, resource, nodes in sorted(pods, key=lambda p: -p[0]):  # tp 1/2/4/8: first fit decreasing is exact
        node = next((n for n in nodes if free[n].get(resource, 0) >= count), None)
        assert node is not None, f"no room for {count} x {resource}"
        free[node][resource] -= count


def test_the_schema_check_can_fail(tmp_path):
    _out, docs = export(tmp_path)
    isvc = json.loads(json.dumps(docs["inferenceservice-llama-3-1-8b.yaml"]))
    schema = strict(CRD["serving.kserve.io/v1beta1/InferenceService"]["openAPIV3Schema"])
    isvc["spec"]["predictor"]["model"]["resources"]["limits"]["amd.com/cpx_nps4"] = "4 GPUs"  # not a quantity
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in isvc.items() if k != "metadata"}, schema)
    isvc["spec"]["predictor"]["model"]["resources"]["limits"]["amd.com/cpx_nps4"] = "4"
    isvc["spec"]["predictor"]["model"]["storageURI"] = "hf://x/y"  # a typo the CRD does not know
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in isvc.items() if k != "metadata"}, schema)


def test_revision_shm_env_and_argv(tmp_path):
    _out, docs = export(tmp_path)
    qwen = docs["inferenceservice-qwen2-5-0-5b.yaml"]["spec"]["predictor"]
    llama = docs["inferenceservice-llama-3-1-8b.yaml"]["spec"]["predictor"]
    assert qwen["model"]["storageUri"] == "hf://Qwen/Qwen2.5-0.5B-Instruct:a1b2c3d"
    assert "--revision" not in qwen["model"]["args"]  # the storage initializer fetched that revision
    assert {"name": "VLLM_ROCM_USE_AITER", "value": "1"} in qwen["model"]["env"]
    assert "volumes" not in qwen and qwen["minReplicas"] == qwen["maxReplicas"] == 3
    tp = int(llama["model"]["args"][llama["model"]["args"].index("--tensor-parallel-size") + 1])
    assert tp > 1 and llama["model"]["resources"]["limits"]["amd.com/cpx_nps4"] == str(tp)
    assert llama["model"]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert llama["volumes"][0]["emptyDir"]["medium"] == "Memory"
    flags = {line.split()[0] for line in (Path(__file__).resolve().parents[1] / "data" / "vllm-0.33.0-serve-flags.txt")
             .read_text().splitlines() if line.startswith("-")}
    for pred in (qwen, llama):
        assert pred["model"]["args"][0] == "--served-model-name"
        assert all(a in flags for a in pred["model"]["args"] if a.startswith("--"))
        assert not any(a in ("--host", "--port") for a in pred["model"]["args"])


def test_name_collisions_are_refused(tmp_path, capsys):
    config = json.loads(json.dumps(CONFIG))
    config["models"].append(dict(config["models"][1], name="llama_3.1-8b", replicas=1))
    cfg, flt = write(tmp_path, config)
    assert main(["kserve", "export", "-c", str(cfg), "--fleet", str(flt), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'llama-3.1-8b'" in err and "'llama_3.1-8b'" in err and "llama-3-1-8b" in err


@pytest.mark.parametrize("pool, expect", [
    ({"profile": "CPX+NPS4", "gpu_model": "MI355X"}, "not a valid pair on MI355X"),
    ({"profile": "SPX+NPS4"}, "NPS4 is supported only with CPX"),
    ({"nodes": 2}, "exactly one of `nodes`"),
    ({"node_names": ["Bad_Name"]}, "not a Kubernetes node name"),
])
def test_bad_fleet_is_exit_2_naming_the_key(tmp_path, capsys, pool, expect):
    fleet = json.loads(json.dumps(FLEET))
    fleet["pools"][0].update(pool)
    cfg, flt = write(tmp_path, fleet=fleet)
    assert main(["plan", "-c", str(cfg), "--fleet", str(flt)]) == 2
    err = capsys.readouterr().err
    assert str(flt) in err and "pools[0]" in err and expect in err


def test_plan_fleet_view_and_json(tmp_path, capsys):
    cfg, flt = write(tmp_path)
    assert main(["plan", "-c", str(cfg), "--fleet", str(flt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {m["model"]: m["replicas"] for m in out["models"]} == {"Qwen2.5_0.5B": 3, "llama-3.1-8b": 2}
    assert sum(len(p["nodes"]) for p in out["profiles"]) == 3 and out["solver"]["gap"] == 0.0
    assert main(["plan", "-c", str(cfg), "--fleet", str(flt)]) == 0
    text = capsys.readouterr().out
    assert "Profiles:" in text and "llama-3.1-8b" in text and "gap 0.00%" in text


def test_schema_fleet_is_json_schema(capsys):
    assert main(["schema", "--fleet"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "gpu-sharing fleet v1" and "pools" in schema["properties"]
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "fleet.yaml").read_text())
    jsonschema.validate(example, schema)


def test_export_without_fleet_or_backend_is_exit_2_without_traceback(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "node": {"backend": "amd-smi-cli"}}))
    env = {**os.environ, "PATH": str(tmp_path)}  # no amd-smi on PATH: the CLI backend is unavailable
    run = cli_process.run(["kserve", "export", "-c", str(cfg)], tmp_path, env=env, timeout=120)
    assert run.poll() == 2, run.stderr
    assert "Traceback" not in run.stderr and "--fleet" in run.stderr and "no GPU backend" in run.stderr


@pytest.mark.parametrize("extra, expect", [([], "pass --out DIR"), (["--out", "o", "--namespace", "x"], "kserve.namespace")])
def test_export_fleet_flag_errors_are_exit_2(tmp_path, capsys, extra, expect):
    cfg, flt = write(tmp_path)
    assert main(["kserve", "export", "-c", str(cfg), "--fleet", str(flt), *extra]) == 2
    assert expect in capsys.readouterr().err
