"""Compute and memory partition modes as str Enums (values are what amd-smi prints)."""

from __future__ import annotations

from enum import Enum


class ComputePartitionMode(str, Enum):
    """Compute (accelerator) partition mode. The partition count of CPX depends on the
    XCD count of the GPU model (8 on MI300X, 6 on MI300A), so ask the catalog spec."""

    SPX = "SPX"
    DPX = "DPX"
    TPX = "TPX"
    QPX = "QPX"
    CPX = "CPX"

    def __str__(self) -> str:
        return self.value


class MemoryPartitionMode(str, Enum):
    """Memory (NPS) partition mode. A change applies to the whole XGMI hive and needs a
    driver reload (ROCm >= 7.0)."""

    NPS1 = "NPS1"
    NPS2 = "NPS2"
    NPS4 = "NPS4"
    NPS8 = "NPS8"

    @property
    def count(self) -> int:
        return int(self.value[3:])

    def __str__(self) -> str:
        return self.value


FIXED_PARTITION_COUNTS = {
    ComputePartitionMode.SPX: 1,
    ComputePartitionMode.DPX: 2,
    ComputePartitionMode.TPX: 3,
    ComputePartitionMode.QPX: 4,
}
