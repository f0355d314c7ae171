"""``gpu-sharing kserve export``: the node plan as KServe manifests.

Writes one ServingRuntime (ROCm vLLM image, safe from KServe's CPU-image
rewrite) and one InferenceService per placed model, to stdout as multi-doc
YAML or to ``--out DIR`` as one file per object.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from gpu_sharing.cli import common
from gpu_sharing.cli.commands import _fleet
from gpu_sharing.cli.commands._runtime_common import add_runtime_flags, plan_from_flags
from gpu_sharing.errors import OperationError, UserError
from gpu_sharing.hardware.backend import BackendError
from gpu_sharing.reconcile.kserve_export import ExportOptions, ResourceNaming, build_manifests, serialize


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kserve", help="KServe integration")
    ksub = p.add_subparsers(dest="kserve_cmd", required=True)
    e = ksub.add_parser("export", help="write a ServingRuntime + InferenceServices for the planned models")
    common.add_config_flag(e)
    common.add_simulate_flags(e)
    add_runtime_flags(e)
    e.add_argument("--out", metavar="DIR", help="write one YAML file per object here (default: stdout)")
    e.add_argument("--resource-naming", choices=[n.value for n in ResourceNaming], default="single",
                   help="AMD device plugin resource naming: amd.com/gpu (single) or amd.com/<cpx>_<nps> (mixed)")
    e.add_argument("--namespace", type=dns_label, help="metadata.namespace for every object")
    _fleet.add_fleet_flag(e)  # --fleet: see _fleet.py
    e.set_defaults(func=run)


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def dns_label(text: str) -> str:
    """A Kubernetes namespace is an RFC 1123 label (kubernetes.io/docs/concepts/overview/working-with-objects/names)."""
    if not DNS_LABEL.match(text):
        raise argparse.ArgumentTypeError(f"{text[:70]!r} is not a namespace name (RFC 1123 label: lower-case "
                                         "letters, digits and '-', at most 63, starting and ending alphanumeric)")
    return text


def run(args: argparse.Namespace) -> int:
    if args.fleet:  # a fleet of Kubernetes nodes: no local GPU needed (_fleet.py)
        return _fleet.export(args)
    path, cfg = common.load(args)
    try:
        result = plan_from_flags(args, cfg, path, simulated_command=False)
    except BackendError as e:
        raise UserError(f"kserve export plans against this node, and no GPU backend is available ({e}); "
                        "run it on the GPU node, pass --simulate, or plan a fleet with --fleet FILE") from None
    options = ExportOptions(naming=ResourceNaming(args.resource_naming), namespace=args.namespace)
    objects = serialize(build_manifests(result.desired.config, result.plan, options))
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
            for obj in objects:
                name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
                (out / name).write_text(yaml.safe_dump(obj, sort_keys=False))
                print(out / name)
        except OSError as e:
            raise OperationError(f"--out {out}: cannot write the manifests: {e.strerror or e}") from None
    else:
        print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0
