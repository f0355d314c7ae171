"""Hardware facts (catalog), inventory types and the backend protocol.

Pure: nothing here talks to a device. Backends (gpu_sharing.backends) implement
``PartitionBackend`` and return ``Inventory`` values.
"""

from gpu_sharing.hardware.backend import BackendError, BackendErrorCode, PartitionBackend
from gpu_sharing.hardware.catalog import CATALOG, GpuModelSpec, get_spec
from gpu_sharing.hardware.inventory import GpuProcess, Inventory, LogicalPartition, PartitionRef, PhysicalGpu
from gpu_sharing.hardware.modes import ComputePartitionMode, MemoryPartitionMode

__all__ = [
    "BackendError", "BackendErrorCode", "PartitionBackend", "CATALOG", "GpuModelSpec", "get_spec",
    "GpuProcess", "Inventory", "LogicalPartition", "PartitionRef", "PhysicalGpu", "ComputePartitionMode",
    "MemoryPartitionMode",
]
