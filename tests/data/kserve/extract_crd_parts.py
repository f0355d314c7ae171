"""Cut the parts of KServe's CRD schemas that gpu-sharing's manifests use (run by hand).

    python tests/data/kserve/extract_crd_parts.py <kserve checkout> <commit> <manifest.yaml>...

Reads config/crd/full/serving.kserve.io_{inferenceservices,servingruntimes}.yaml at the
checkout and writes crd-parts.json here: each kind's openAPIV3Schema, where every object
keeps the names of all its properties but only the properties some given manifest sets
keep their schema; the others become {} (anything). Tests then reject unknown keys like
the API server's strict field validation, and check every value we set against the real
schema. The full CRDs are 2 MB; this keeps what the tests need.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

CRDS = {("serving.kserve.io/v1beta1", "InferenceService"): "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        ("serving.kserve.io/v1alpha1", "ServingRuntime"): "config/crd/full/serving.kserve.io_servingruntimes.yaml"}


def prune(schema: dict, samples: list) -> dict:
    out = {k: v for k, v in schema.items() if k not in ("properties", "items", "description")}
    if "properties" in schema:
        out["properties"] = {}
        for name, sub in schema["properties"].items():
            used = [s[name] for s in samples if isinstance(s, dict) and name in s]
            out["properties"][name] = prune(sub, used) if used else {}
    if "items" in schema:
        out["items"] = prune(schema["items"], [x for s in samples if isinstance(s, list) for x in s])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = prune(schema["additionalProperties"],
                                            [v for s in samples if isinstance(s, dict) for v in s.values()])
    return out


def main() -> None:
    root, commit, files = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    docs = [d for f in files for d in yaml.safe_load_all(Path(f).read_text()) if d]
    out = {}
    for (api, kind), path in CRDS.items():
        crd = yaml.safe_load((root / path).read_text())
        version = next(v for v in crd["spec"]["versions"] if f"{crd['spec']['group']}/{v['name']}" == api)
        samples = [d for d in docs if d.get("apiVersion") == api and d.get("kind") == kind]
        out[f"{api}/{kind}"] = {"source": {"repo": "kserve/kserve", "path": path, "commit": commit},
                                "openAPIV3Schema": prune(version["schema"]["openAPIV3Schema"], samples)}
    Path(__file__).with_name("crd-parts.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
