"""gpu-sharing: share AMD Instinct GPUs between many vLLM instances.

The seed-compatible facade (ROCmPartitioner, ModelSizingConfig, ...) lives in
``gpu_sharing.api`` and is re-exported here lazily so that importing the package
stays cheap (the CLI imports only what a command needs).
"""

__version__ = "0.1.0"

_FACADE = {
    "ROCmPartitioner", "ModelSizingConfig", "ModelSizeInfo", "ModelScheduler", "ModelInstance",
    "ModelStatus", "ResourceIsolator", "ComputeLimits", "ComputePartitionMode",
    "MemoryPartitionMode", "MemoryPartition",
}


def __getattr__(name: str):
    if name in _FACADE:
        from gpu_sharing import api

        return getattr(api, name)
    raise AttributeError(f"module 'gpu_sharing' has no attribute {name!r}")
