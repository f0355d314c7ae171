"""Translate the node plan into KServe manifests (ServingRuntime + InferenceServices).

Why a custom ServingRuntime: KServe only treats ``nvidia.com/gpu`` and
``nvidia.com/mig*`` as a GPU (pkg/utils/utils.go ``IsGPUEnabled``).  With an
``amd.com/...`` resource its built-in vLLM runtime rewrites even a user-set
image to ``<repo>-cpu:<tag>`` (``UpdateImageTag``).  The rewrite is skipped
when the predictor sets ``runtimeVersion`` or the image is pinned by digest,
and it only targets the built-in runtimes.  So we emit our own runtime
(non-builtin name, no ``serving.kserve.io/server-type`` annotation) running
the ROCm image, and every InferenceService sets ``runtimeVersion``.

The argv is the one the daemon would use (``build_launch_spec``) with the
weights at KServe's storage mount ``/mnt/models``, host 0.0.0.0, port 8080;
GPU visibility env is dropped because the AMD device plugin assigns devices.

Objects are plain dicts in the CRDs' camelCase shape (no nulls), so the
kserve SDK is not needed to produce them; ``serialize`` round-trips through
the SDK's ``ApiClient().sanitize_for_serialization`` when it is installed.
Checked with kserve 0.21.0 + kubernetes 37.0.1: kserve's serializer passes
these dicts through unchanged and emits camelCase for SDK objects, whereas
``kubernetes.client.ApiClient().sanitize_for_serialization`` on SDK objects
emits snake_case keys and nulls (``api_version``, ``annotations: null``), so
it must not be used.  Building via the SDK's V1beta1ModelSpec also emits
``name: ''`` (its container-name default), one more reason for plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from gpu_sharing.config.schema import Config, ModelSettings
from gpu_sharing.hardware.inventory import LogicalPartition
from gpu_sharing.planner.types import Placement, Plan
from gpu_sharing.reconcile.kube_names import isvc_name, isvc_names
from gpu_sharing.runtime.launch_spec import build_launch_spec

ROCM_VLLM_IMAGE_REPO = "vllm/vllm-openai-rocm"
ROCM_VLLM_TAG = "v0.33.0"
RUNTIME_NAME = "gpu-sharing-vllm-rocm"
MODEL_FORMAT = "vllm-rocm"
KSERVE_MODEL_DIR = "/mnt/models"
KSERVE_PORT = 8080
_VISIBILITY_ENV = ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
DEFAULT_CPU_REQUEST = "4"
DEFAULT_MEMORY_REQUEST_BYTES = 32 * 2**30


class ResourceNaming(str, Enum):
    """AMD device plugin ``resource_naming_strategy``."""

    SINGLE = "single"
    MIXED = "mixed"


@dataclass(frozen=True)
class ExportOptions:
    naming: ResourceNaming = ResourceNaming.SINGLE
    namespace: str | None = None
    image_tag: str = ROCM_VLLM_TAG


def gpu_resource_name(naming: ResourceNaming, compute_mode: str, memory_mode: str) -> str:
    """``amd.com/gpu`` (single) or ``amd.com/cpx_nps4`` style (mixed)."""
    if naming is ResourceNaming.SINGLE:
        return "amd.com/gpu"
    return f"amd.com/{compute_mode.lower()}_{memory_mode.lower()}"


def _partitions(placement: Placement) -> list[LogicalPartition]:
    """Stand-ins for the planned partitions: only their size matters for the memory flags."""
    return [LogicalPartition(gpu=ref.gpu, index=i, hip_index=i, render_node="", cu_count=0, xcc_count=1,
                             vram_total_bytes=placement.partition_bytes, vram_used_bytes=0)
            for i, ref in enumerate(placement.partitions)]


def model_args(config: Config, model: ModelSettings, placement: Placement) -> tuple[list[str], dict[str, str]]:
    """The daemon's vLLM flags for this model, minus command, source, host and port."""
    spec = build_launch_spec(instance_id=placement.instance_id, model=model, vllm=config.vllm,
                             partitions=_partitions(placement), tp=placement.tp, port=KSERVE_PORT,
                             memory_bytes_per_rank=placement.memory_bytes_per_rank)
    argv = list(spec.argv[len(config.vllm.command) + 1:])  # drop "vllm serve <source>"
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        if arg in ("--host", "--port"):
            skip = 1
            continue
        out.append(arg)
    env = {k: v for k, v in dict(spec.env).items() if k not in _VISIBILITY_ENV}
    return out, env


def serving_runtime(options: ExportOptions) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": RUNTIME_NAME, "labels": {"app.kubernetes.io/managed-by": "gpu-sharing"}}
    if options.namespace:
        meta["namespace"] = options.namespace
    return {
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": meta,
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": True, "version": "1"}],
            "protocolVersions": ["v2"],
            "containers": [{
                "name": "kserve-container",
                "image": f"{ROCM_VLLM_IMAGE_REPO}:{options.image_tag}",
                "command": ["vllm", "serve", KSERVE_MODEL_DIR],
                "args": ["--host", "0.0.0.0", "--port", str(KSERVE_PORT)],
                "ports": [{"containerPort": KSERVE_PORT, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/v1/models", "port": KSERVE_PORT}, "periodSeconds": 10},
                "startupProbe": {"httpGet": {"path": "/v1/models", "port": KSERVE_PORT},
                                 "periodSeconds": 10, "failureThreshold": 180},
            }],
        },
    }


def storage_uri(model: ModelSettings) -> str:
    """``hf://org/model[:revision]`` (KServe's storage initializer takes the revision after ':',
    kserve python/storage/test/test_hf_storage.py), a URI as given, or a PVC for a local path."""
    source = model.source
    if "://" in source:
        return source
    if source.startswith("/"):
        return f"pvc://models{source}"  # a local path must be published as a PVC; named so users notice
    return f"hf://{source}:{model.revision}" if model.revision else f"hf://{source}"


SHM_BYTES = 8 * 2**30
"""/dev/shm for tensor parallelism: KServe's own vLLM templates mount a memory-backed ``dshm``
(kserve config/llmisvcconfig/config-llm-decode-worker-data-parallel.yaml, 8Gi)."""


def add_shm(predictor: dict[str, Any], container: dict[str, Any]) -> None:
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    predictor["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(SHM_BYTES)}}]


def inference_service(config: Config, model: ModelSettings, placement: Placement, plan: Plan,
                      options: ExportOptions, name: str | None = None) -> dict[str, Any]:
    args, env = model_args(config, model, placement)
    target = next((g for g in plan.gpus if g.gpu == placement.gpu), None)
    compute = target.compute_mode.value if target else "SPX"
    memory = target.memory_mode.value if target else "NPS1"
    resource = gpu_resource_name(options.naming, compute, memory)
    mem_bytes = model.limits.host_memory_bytes or DEFAULT_MEMORY_REQUEST_BYTES
    cpu = str(model.limits.cpu_cores) if model.limits.cpu_cores else DEFAULT_CPU_REQUEST
    requests = {"cpu": cpu, "memory": str(int(mem_bytes)), resource: str(placement.tp)}
    predictor_model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": RUNTIME_NAME,
        "runtimeVersion": options.image_tag,  # B1: stops KServe's -cpu image rewrite
        "storageUri": storage_uri(model),
        "args": ["--served-model-name", *model.served_names, *_without_served(args)],
        "resources": {"requests": requests, "limits": {resource: str(placement.tp), "memory": str(int(mem_bytes))}},
    }
    if env:
        predictor_model["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    meta: dict[str, Any] = {"name": name or isvc_name(model.name, options.namespace or "default"),
                            "labels": {"app.kubernetes.io/managed-by": "gpu-sharing"},
                            "annotations": {"gpu-sharing.io/model": model.name}}
    if options.namespace:
        meta["namespace"] = options.namespace
    predictor = {"minReplicas": max(model.replicas, 1), "model": predictor_model}
    if placement.tp > 1:
        add_shm(predictor, predictor_model)
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": predictor}}


def _without_served(args: list[str]) -> list[str]:
    """Drop ``--served-model-name n1 n2 ...`` (re-added first, explicitly)."""
    out: list[str] = []
    dropping = False
    for arg in args:
        if arg == "--served-model-name":
            dropping = True
            continue
        if dropping and not arg.startswith("--"):
            continue
        dropping = False
        out.append(arg)
    return out


def build_manifests(config: Config, plan: Plan, options: ExportOptions = ExportOptions()) -> list[dict[str, Any]]:
    """One ServingRuntime and one InferenceService per placed model (replicas -> minReplicas)."""
    objects = [serving_runtime(options)]
    seen: set[str] = set()
    by_name = {m.name: m for m in config.models}
    names = isvc_names(sorted({p.model for p in plan.placements if p.model in by_name}), options.namespace or "default")
    for placement in plan.placements:
        if placement.model in seen or placement.model not in by_name:
            continue
        seen.add(placement.model)
        objects.append(inference_service(config, by_name[placement.model], placement, plan, options,
                                         names[placement.model]))
    return objects


def serialize(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pass through kserve's ``sanitize_for_serialization`` when the SDK is present."""
    try:
        from kserve import ApiClient  # type: ignore[import-not-found]
    except ImportError:
        return objects
    return [ApiClient().sanitize_for_serialization(o) for o in objects]
