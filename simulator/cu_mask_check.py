"""An independent, strict parser for ROCm's ``HSA_CU_MASK`` environment variable.

Why this exists: the fake vLLM server must reject a CU mask the way the real
ROCm runtime would *not silently accept* it, so that a daemon bug (an empty,
overlapping or malformed mask) shows up in the simulator instead of on a
customer's GPU.  It is written from the ROCm documentation
(rocm.docs.amd.com, reference/environment-variables "Setting the number of
CUs"), deliberately without importing anything from ``gpu_sharing`` so that
it checks the daemon's mask builder rather than agreeing with it by
construction.

Grammar (ROCm docs)::

    ID          = [0-9]+                      (base 10)
    ID_list     = (ID | ID-ID) [, (ID | ID-ID)]*
    GPU_list    = ID_list
    CU_list     = 0x[0-9a-fA-F]+ | ID_list     (hex: bit i enables CU i)
    CU_set      = GPU_list : CU_list
    HSA_CU_MASK = CU_set [; CU_set]*

Semantics: GPU indices count devices *after* ``ROCR_VISIBLE_DEVICES``
filtering; listed CUs are enabled on the listed GPUs, all others disabled;
unlisted GPUs are unaffected.  A mask of ``0x0`` is an error.

Where the real runtime is lenient we are strict, and say so in the error:
ROCm drops a CU set with a syntax error *and every later set* (with only a
log line), and ignores GPU indices beyond the visible devices.  Both mean the
instance would silently run on more CUs than the daemon intended, so here
they raise :class:`CuMaskError`.  A GPU listed in two sets is also rejected
(the result would depend on runtime merge order).  The optional ``cu_count``
rejects CU ids the device does not have (the runtime would drop those bits,
possibly leaving an empty mask).
"""

from __future__ import annotations

import re

__all__ = ["CuMaskError", "parse_hsa_cu_mask", "format_cu_list"]

_ID_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_HEX = re.compile(r"^0[xX]([0-9a-fA-F]+)$")
# Guard against absurd values (e.g. "0-99999999999") exhausting memory.
_MAX_ID = 1 << 16


class CuMaskError(ValueError):
    """The HSA_CU_MASK value is malformed or would not isolate as intended."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _parse_id_list(text: str, *, what: str, set_no: int, value: str) -> set[int]:
    """Parse ``ID | ID-ID`` items separated by commas into a set of ints."""
    if text == "":
        raise CuMaskError(f"HSA_CU_MASK={value!r}: set {set_no}: empty {what} list (ROCm would ignore this set and all later sets)")
    ids: set[int] = set()
    for item in text.split(","):
        match = _ID_RANGE.match(item)
        if match is None:
            raise CuMaskError(
                f"HSA_CU_MASK={value!r}: set {set_no}: bad {what} item {item!r}; "
                "expected a base-10 number or a range like 0-3 (ROCm would ignore this set and all later sets)"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise CuMaskError(f"HSA_CU_MASK={value!r}: set {set_no}: {what} range {item!r} is descending")
        if high >= _MAX_ID:
            raise CuMaskError(f"HSA_CU_MASK={value!r}: set {set_no}: {what} id {high} is out of range")
        ids.update(range(low, high + 1))
    return ids


def _parse_cu_list(text: str, *, set_no: int, value: str) -> set[int]:
    """A CU list is either a hex bitmask (bit i = CU i) or an ID list."""
    hex_match = _HEX.match(text)
    if hex_match is not None:
        bits = int(hex_match.group(1), 16)
        if bits == 0:
            raise CuMaskError(f"HSA_CU_MASK={value!r}: set {set_no}: CU mask 0x0 enables no CU (an error in ROCm)")
        if bits.bit_length() > _MAX_ID:
            raise CuMaskError(f"HSA_CU_MASK={value!r}: set {set_no}: CU bitmask is out of range")
        return {i for i in range(bits.bit_length()) if bits >> i & 1}
    return _parse_id_list(text, what="CU", set_no=set_no, value=value)


def parse_hsa_cu_mask(value: str, visible_gpu_count: int, *, cu_count: int | None = None) -> dict[int, frozenset[int]]:
    """Parse ``value`` into {visible GPU index: enabled CU ids}.

    ``visible_gpu_count`` is how many GPUs the process sees after
    ``ROCR_VISIBLE_DEVICES``/``HIP_VISIBLE_DEVICES`` filtering.  ``cu_count``
    (optional) is the CU count of each visible device.  Raises
    :class:`CuMaskError` on anything the runtime would reject, ignore or
    truncate.
    """
    if visible_gpu_count < 1:
        raise CuMaskError(f"HSA_CU_MASK={value!r}: the process sees no GPU (visible_gpu_count={visible_gpu_count})")
    if value == "":
        raise CuMaskError("HSA_CU_MASK is set but empty")
    result: dict[int, frozenset[int]] = {}
    for set_no, cu_set in enumerate(value.split(";"), start=1):
        gpu_text, sep, cu_text = cu_set.partition(":")
        if not sep:
            raise CuMaskError(
                f"HSA_CU_MASK={value!r}: set {set_no} {cu_set!r} has no ':' (expected GPU_list:CU_list; "
                "ROCm would ignore this set and all later sets)"
            )
        gpus = _parse_id_list(gpu_text, what="GPU", set_no=set_no, value=value)
        cus = _parse_cu_list(cu_text, set_no=set_no, value=value)
        beyond = sorted(g for g in gpus if g >= visible_gpu_count)
        if beyond:
            raise CuMaskError(
                f"HSA_CU_MASK={value!r}: set {set_no}: GPU index {beyond[0]} is not visible "
                f"(the process sees {visible_gpu_count} GPU(s), indices 0-{visible_gpu_count - 1}; ROCm would ignore it)"
            )
        if cu_count is not None:
            too_high = sorted(c for c in cus if c >= cu_count)
            if too_high:
                raise CuMaskError(
                    f"HSA_CU_MASK={value!r}: set {set_no}: CU {too_high[0]} does not exist "
                    f"(the device has {cu_count} CUs, ids 0-{cu_count - 1})"
                )
        for gpu in sorted(gpus):
            if gpu in result:
                raise CuMaskError(f"HSA_CU_MASK={value!r}: GPU {gpu} appears in more than one CU set")
            result[gpu] = frozenset(cus)
    return result


def format_cu_list(cus: frozenset[int] | set[int]) -> str:
    """Render CU ids as ROCm ranges, e.g. {0,1,2,3,8} -> '0-3,8' (for messages)."""
    parts: list[str] = []
    ordered = sorted(cus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
