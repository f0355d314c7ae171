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

__all__ = ["CuMaskError", "VisibilityError", "parse_hsa_cu_mask", "format_cu_list", "rocr_devices",
           "process_devices", "effective_cu_masks"]

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

    ``visible_gpu_count`` is how many GPUs ROCr exposes to the process: after
    ``ROCR_VISIBLE_DEVICES`` filtering, NOT after ``HIP_VISIBLE_DEVICES`` (rule D4 below).  ``cu_count``
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


# ---------------------------------------------------------------- device numbering (ROCm's index rules)
#
# Rule D1 (ROCr enumeration): the ROCm thunk enumerates only the GPUs whose render node the process may
#   open; under a device cgroup allowing one render node (systemd-run DevicePolicy=closed + DeviceAllow)
#   that partition is ROCr device 0. Source: shared reference real-stack-findings.md, "With a device cgroup
#   that allows one render node ... the instance's partition is device 0" (ROCT topology enumeration;
#   unverified on hardware).
# Rule D2 (ROCR_VISIBLE_DEVICES): filters and reorders the enumerated devices; its indices count the
#   enumerated devices. Source: rocm.docs.amd.com/projects/HIP/en/docs-6.4.0/reference/env_variables.html
#   ("ROCR_VISIBLE_DEVICES: a list of device indices ... exposed to applications").
# Rule D3 (HIP_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES): filter at the HIP layer only, indices count the
#   devices left AFTER ROCr filtering (amd-partitioning.md section 4: "HIP indices apply after ROCR
#   filtering", SwarmUI issue #565; ROCm/pytorch PR #2268 test_hip_device_count).
# Rule D4 (HSA_CU_MASK device index): "The GPU indices are taken post ROCR_VISIBLE_DEVICES reordering"
#   (rocm.docs.amd.com/en/latest/reference/environment-variables/setting-cus.html); HIP_VISIBLE_DEVICES
#   does not renumber them. "Unlisted GPUs are not affected, and their CUs are enabled."


class VisibilityError(ValueError):
    """A visibility variable names a device the runtime does not have (ROCm would hide devices)."""


def _index_list(name: str, text: str) -> list[int]:
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit():
            raise VisibilityError(f"{name}={text!r}: {item!r} is not a device index (UUIDs are not modelled)")
        out.append(int(item))
    return out


def rocr_devices(env: dict[str, str], accessible: list[int]) -> list[int]:
    """Node device indices ROCr exposes, in ROCr order (rules D1, D2).

    ``accessible`` are the node indices whose render node the process may open, in node order.
    """
    return _pick("ROCR_VISIBLE_DEVICES", env.get("ROCR_VISIBLE_DEVICES"), accessible, "the process can open")


def process_devices(env: dict[str, str], accessible: list[int]) -> list[int]:
    """Node device indices the process computes on, in HIP order (rules D1-D3): HIP device i = entry i."""
    text = env.get("HIP_VISIBLE_DEVICES") or env.get("CUDA_VISIBLE_DEVICES")
    return _pick("HIP_VISIBLE_DEVICES", text, rocr_devices(env, accessible), "visible to ROCr after its filtering")


def _pick(name: str, text: str | None, devices: list[int], what: str) -> list[int]:
    """``devices`` filtered and reordered by the index list ``text`` (all of them when unset)."""
    if not text:
        return list(devices)
    picked = _index_list(name, text)
    bad = [i for i in picked if i >= len(devices)]
    if bad:
        raise VisibilityError(f"{name}={text!r}: index {bad[0]} does not exist ({len(devices)} device(s) {what})")
    return [devices[i] for i in picked]


def effective_cu_masks(env: dict[str, str], accessible: list[int], *,
                       cu_count: int | None = None) -> dict[int, frozenset[int]]:
    """{node device index: enabled CUs} for every device the process's HSA_CU_MASK restricts (rule D4).

    The mask's GPU indices count ROCr's devices, so a mask ``0:...`` with ``HIP_VISIBLE_DEVICES=8`` and no
    ROCR_VISIBLE_DEVICES restricts node device 0, not device 8. Devices not in the result run on all CUs.
    """
    mask = env.get("HSA_CU_MASK")
    if mask is None:
        return {}
    rocr = rocr_devices(env, accessible)
    parsed = parse_hsa_cu_mask(mask, len(rocr), cu_count=cu_count)
    return {rocr[i]: cus for i, cus in parsed.items()}
