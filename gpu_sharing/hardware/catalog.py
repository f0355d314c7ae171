"""Facts per AMD Instinct GPU model: XCDs, CUs, VRAM, valid (compute, memory) pairs.

Sources (see docs/hardware-facts.md, copied from the verified reference):
- CU and VRAM counts: ROCm docs gpu-specs.rst (SPECS).
- Valid pairs: amdsmi partition.md (SMI-P) and the amdgpu kernel aqua_vanjaram.c (KERN):
  SPX {NPS1}; DPX {NPS1, NPS2}; TPX {NPS1, NPS4}; QPX {NPS1, NPS4} (+NPS2 on gfx950);
  CPX {NPS1, NPS4} (+NPS2 on gfx950), intersected with what each model offers.
  Compute modes by XCC count: 8 -> SPX/DPX/QPX/CPX, 6 -> SPX/TPX/CPX.
- MI350X/MI355X: no NPS4 ("The MI350X doesn't support NPS4", RCCL usage tips).
- MI300A: SPX/TPX/CPX, NPS1 only, fixed at boot (amdgpu-docs mi300a overview).
  Its memory is unified with the host, and the per-partition sizes AMD documents
  (TPX ~32 GB, CPX 16 GB) do not sum to 128 GB; we use AMD's figures.
The seed's table was wrong (MI300X CPX is 38 CUs / 24 GB, MI300X has no TPX,
MI350X has 256 CUs and 288 GB and no NPS4): these facts replace it.
Unknown models are never guessed: get_spec raises, and backends report what they read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpu_sharing.hardware.modes import FIXED_PARTITION_COUNTS, ComputePartitionMode as C, MemoryPartitionMode as M

GIB = 1024**3


@dataclass(frozen=True)
class GpuModelSpec:
    """One GPU model's partitioning facts. Per-partition VRAM is the memory partition's
    size split over the compute partitions that share it, which for an even split is
    simply vram_bytes / partitions (kernel amdgpu_amdkfd_xcp_memory_size)."""

    name: str
    market_name: str
    gfx_target: str
    xcd_count: int
    cus_per_xcd: int
    vram_bytes: int
    valid_pairs: frozenset[tuple[C, M]]
    default_pair: tuple[C, M] = (C.SPX, M.NPS1)
    memory_mode_fixed: bool = False
    """True where NPS cannot be changed at all (MI300A: fixed at boot)."""
    vram_per_partition_override: dict[C, int] = field(default_factory=dict)

    @property
    def cu_count(self) -> int:
        return self.xcd_count * self.cus_per_xcd

    def compute_modes(self) -> list[C]:
        return [c for c in C if any(p[0] == c for p in self.valid_pairs)]

    def memory_modes(self) -> list[M]:
        return [m for m in M if any(p[1] == m for p in self.valid_pairs)]

    def is_valid(self, compute: C, memory: M) -> bool:
        return (compute, memory) in self.valid_pairs

    def describe_valid_pairs(self) -> str:
        return ", ".join(f"{c.value}+{m.value}" for c in C for m in M if (c, m) in self.valid_pairs)

    def partitions(self, compute: C) -> int:
        """Number of logical GPUs (compute partitions) in ``compute`` mode."""
        return self.xcd_count if compute == C.CPX else FIXED_PARTITION_COUNTS[compute]

    def xccs_per_partition(self, compute: C) -> int:
        return self.xcd_count // self.partitions(compute)

    def cus_per_partition(self, compute: C) -> int:
        return self.xccs_per_partition(compute) * self.cus_per_xcd

    def vram_per_partition_bytes(self, compute: C) -> int:
        if compute in self.vram_per_partition_override:
            return self.vram_per_partition_override[compute]
        return self.vram_bytes // self.partitions(compute)


def _pairs(*items: str) -> frozenset[tuple[C, M]]:
    out = set()
    for item in items:
        c, m = item.split("+")
        out.add((C(c), M(m)))
    return frozenset(out)


_MI300X_PAIRS = _pairs("SPX+NPS1", "DPX+NPS1", "DPX+NPS2", "QPX+NPS1", "QPX+NPS4", "CPX+NPS1", "CPX+NPS4")
_MI350_PAIRS = _pairs("SPX+NPS1", "DPX+NPS1", "DPX+NPS2", "QPX+NPS1", "QPX+NPS2", "CPX+NPS1", "CPX+NPS2")

CATALOG: dict[str, GpuModelSpec] = {
    spec.name: spec
    for spec in (
        GpuModelSpec("MI300X", "AMD Instinct MI300X", "gfx942", 8, 38, 192 * GIB, _MI300X_PAIRS),
        GpuModelSpec("MI325X", "AMD Instinct MI325X", "gfx942", 8, 38, 256 * GIB, _MI300X_PAIRS),
        GpuModelSpec("MI350X", "AMD Instinct MI350X", "gfx950", 8, 32, 288 * GIB, _MI350_PAIRS),
        GpuModelSpec("MI355X", "AMD Instinct MI355X", "gfx950", 8, 32, 288 * GIB, _MI350_PAIRS),
        GpuModelSpec(
            "MI300A", "AMD Instinct MI300A", "gfx942", 6, 38, 128 * GIB,
            _pairs("SPX+NPS1", "TPX+NPS1", "CPX+NPS1"), memory_mode_fixed=True,
            vram_per_partition_override={C.TPX: 32 * GIB, C.CPX: 16 * GIB},
        ),
    )
}


def get_spec(name: str) -> GpuModelSpec:
    """Spec for a model name (``MI300X``) or market name (``AMD Instinct MI300X``)."""
    key = name.strip()
    for spec in CATALOG.values():
        if key.upper() in (spec.name.upper(), spec.market_name.upper()):
            return spec
    raise KeyError(f"unknown GPU model {name!r}; known: {', '.join(CATALOG)}")


def spec_from_market_name(market_name: str) -> GpuModelSpec | None:
    """Best match for a market name read from a device (``AMD Instinct MI300X OAM``)."""
    upper = market_name.upper()
    for spec in sorted(CATALOG.values(), key=lambda s: -len(s.name)):
        if spec.name in upper:
            return spec
    return None
