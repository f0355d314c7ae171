"""Disjoint ``HSA_CU_MASK`` sets for instances that share one logical partition.

Why XCC-spread: on MI300-class GPUs (GFX 9.4.3 / 9.5) the kernel interleaves
CU-mask bits over the partition's XCCs: bit ``i`` selects a CU on XCC
``i mod xcc_count`` (amd-gfx "drm/amdkfd: Update CU masking for GFX 9.4.3").
A naive contiguous mask ``0-75`` on a 4-XCC partition therefore already
lands on all XCCs, but only by accident of the bit order; a mask built
without this knowledge (e.g. "every 4th bit") would pile one instance onto a
single XCC, starving it of that XCC's share of L2 and dispatch bandwidth
while another instance gets the rest.  So we choose bits per residue class:
an instance granted ``k`` CUs on an ``x``-XCC partition gets ``k // x`` CUs on
every XCC, and the ``k % x`` leftover CUs go to the XCCs with the most free
CUs at that point (ties: lowest XCC).  That keeps every instance within one
CU per XCC of perfectly even, and keeps the partition's free CUs balanced
over XCCs, so any request set whose total fits the partition also fits per
XCC (free counts never differ by more than one, so none can go negative
while the total is non-negative).

Rounding rule (documented, tested): a float share becomes
``floor(share * cu_count)`` CUs (never more than asked, with a 1e-9 tolerance
so 0.5 * 152 is exactly 76); an int is an exact CU count; ``None`` is an
equal split of what the explicit requests leave (the first ``left % n``
instances in mapping order get one extra CU).  Exact divisibility by the XCC
count is *not* required: 38 CUs on 4 XCCs is spread 10/10/9/9.  Impossible
sets raise :class:`gpu_sharing.errors.UserError` with the numbers: shares
summing above 1, more CUs requested than the partition has, a request that
rounds to 0 CUs, more instances than CUs.

Mapping order decides bit positions; the same input always yields the same
masks.  An instance that ends up with every CU of the partition (alone, or a
share of 1.0) gets no mask: a full mask restricts nothing and is one more
environment variable to get wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gpu_sharing.errors import UserError

CuRequest = float | int | None
"""float: share of the partition (0, 1]; int: exact CU count; None: equal split of the rest."""

_EPS = 1e-9


def resolve_cu_counts(*, cu_count: int, requests: Mapping[str, CuRequest]) -> dict[str, int]:
    """Turn share / count / None requests into CU counts per instance, or raise UserError."""
    if cu_count < 1:
        raise UserError(f"partition has {cu_count} CUs; cannot build CU masks")
    if len(requests) > cu_count:
        raise UserError(f"{len(requests)} instances cannot share {cu_count} CUs (each needs at least one CU)")
    shares = {k: v for k, v in requests.items() if isinstance(v, float)}
    share_sum = sum(shares.values())
    if share_sum > 1 + _EPS:
        listed = ", ".join(f"{k}={v:g}" for k, v in shares.items())
        raise UserError(f"compute shares sum to {share_sum:g} > 1 on one partition ({listed})")
    counts: dict[str, int] = {}
    for iid, req in requests.items():
        if req is None:
            continue
        if isinstance(req, bool) or not isinstance(req, (int, float)):
            raise UserError(f"instance {iid}: CU request {req!r} must be a share (float), a CU count (int) or None")
        if isinstance(req, float):
            if not 0 < req <= 1:
                raise UserError(f"instance {iid}: compute share {req:g} must be in (0, 1]")
            k = math.floor(req * cu_count + _EPS)
            if k < 1:
                raise UserError(f"instance {iid}: compute share {req:g} of {cu_count} CUs rounds to 0 CUs")
        else:
            k = req
            if k < 1:
                raise UserError(f"instance {iid}: cu_count {k} must be at least 1")
            if k > cu_count:
                raise UserError(f"instance {iid}: cu_count {k} is larger than the partition ({cu_count} CUs)")
        counts[iid] = k
    used = sum(counts.values())
    if used > cu_count:
        listed = ", ".join(f"{k}={v}" for k, v in counts.items())
        raise UserError(f"requested {used} CUs but the partition has {cu_count} ({listed})")
    rest = [iid for iid, req in requests.items() if req is None]
    if rest:
        left = cu_count - used
        if left < len(rest):
            raise UserError(
                f"{left} CUs left after explicit requests ({used} of {cu_count}) cannot be split "
                f"among {len(rest)} instance(s) without a limit ({', '.join(rest)})")
        base, extra = divmod(left, len(rest))
        for n, iid in enumerate(rest):
            counts[iid] = base + (1 if n < extra else 0)
    return {iid: counts[iid] for iid in requests}


def assign_cu_sets(*, cu_count: int, xcc_count: int, requests: Mapping[str, CuRequest]) -> dict[str, frozenset[int]]:
    """Disjoint CU bit sets per instance, each spread evenly over the XCCs (see module doc)."""
    if xcc_count < 1 or xcc_count > cu_count:
        raise UserError(f"partition with {cu_count} CUs cannot have {xcc_count} XCCs")
    counts = resolve_cu_counts(cu_count=cu_count, requests=requests)
    free: list[list[int]] = [list(range(r, cu_count, xcc_count)) for r in range(xcc_count)]
    sets: dict[str, frozenset[int]] = {}
    for iid, k in counts.items():
        base, extra = divmod(k, xcc_count)
        take = [base] * xcc_count
        # Leftover CUs go to the XCCs with the most free CUs *after* the base take.
        by_room = sorted(range(xcc_count), key=lambda r: (-(len(free[r]) - base), r))
        for r in by_room[:extra]:
            take[r] += 1
        bits: list[int] = []
        for r in range(xcc_count):
            if take[r] > len(free[r]):  # unreachable while the balance invariant holds
                raise UserError(f"instance {iid}: XCC {r} has {len(free[r])} free CUs, needs {take[r]}")
            bits += free[r][:take[r]]
            del free[r][:take[r]]
        sets[iid] = frozenset(bits)
    return sets


def format_cu_list(cus: Sequence[int] | frozenset[int]) -> str:
    """CU ids as ROCm ranges: {0,1,2,3,8} -> '0-3,8'."""
    ordered = sorted(cus)
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def format_hsa_cu_mask(cus: frozenset[int], visible_gpu_count: int = 1) -> str:
    """``0:<CUs>`` (or ``0-3:<CUs>`` for tp=4): the instance sees only its own partitions."""
    if not cus:
        raise UserError("refusing to build an empty CU mask (ROCm treats it as an error)")
    if visible_gpu_count < 1:
        raise UserError(f"an instance must see at least one GPU, not {visible_gpu_count}")
    gpus = "0" if visible_gpu_count == 1 else f"0-{visible_gpu_count - 1}"
    return f"{gpus}:{format_cu_list(cus)}"


def assign_cu_masks(*, cu_count: int, xcc_count: int, requests: Mapping[str, CuRequest],
                    visible_gpus: Mapping[str, int] | None = None) -> dict[str, str]:
    """Instance id -> HSA_CU_MASK value for instances sharing one partition.

    Instances granted the whole partition are omitted (no mask needed).
    ``visible_gpus`` gives the tp of multi-partition instances (default 1);
    their mask lists every visible index with the same CU set, which is right
    when the same group shares each of their partitions.
    """
    sets = assign_cu_sets(cu_count=cu_count, xcc_count=xcc_count, requests=requests)
    tp = visible_gpus or {}
    return {iid: format_hsa_cu_mask(cus, tp.get(iid, 1)) for iid, cus in sets.items() if len(cus) < cu_count}


def xcc_spread(cus: frozenset[int], xcc_count: int) -> list[int]:
    """CUs per XCC for a mask (bit i -> XCC i mod xcc_count); for status and tests."""
    spread = [0] * xcc_count
    for c in cus:
        spread[c % xcc_count] += 1
    return spread


def mask_cus(mask: str) -> frozenset[int]:
    """CU ids of one of our masks (``0:<ranges>`` or ``0-3:<ranges>``; every GPU in it has the same CUs)."""
    cu_text = mask.split(";")[0].partition(":")[2]
    cus: set[int] = set()
    for item in cu_text.split(","):
        low, _, high = item.partition("-")
        cus.update(range(int(low), int(high or low) + 1))
    return frozenset(cus)


def assign_free_cu_sets(*, cu_count: int, xcc_count: int, taken: frozenset[int],
                        counts: Mapping[str, int]) -> dict[str, frozenset[int]]:
    """CU sets for newcomers from the CUs running neighbours do not hold (``taken``), XCC-spread.

    One CU at a time from the XCC with the most free CUs (ties: lowest XCC), so each newcomer stays
    as even over XCCs as the free CUs allow. Raises UserError when the free CUs do not suffice: then
    the partition must be rebalanced (running neighbours restart with new masks).
    """
    free: list[list[int]] = [[c for c in range(r, cu_count, xcc_count) if c not in taken] for r in range(xcc_count)]
    left = sum(len(f) for f in free)
    need = sum(counts.values())
    if need > left:
        raise UserError(f"{need} CUs requested but only {left} of {cu_count} are free of running neighbours")
    sets: dict[str, frozenset[int]] = {}
    for iid, k in counts.items():
        bits: list[int] = []
        for _ in range(k):
            r = max(range(xcc_count), key=lambda x: (len(free[x]), -x))
            bits.append(free[r].pop(0))
        sets[iid] = frozenset(bits)
    return sets
