"""Byte-size parsing for config values: ints, or strings like ``20GiB``, ``24G``, ``512MiB``.

Why both decimal and binary: operators copy numbers from model cards (GB) and from
amd-smi (MiB). ``G``/``GB`` are decimal (like vLLM's ``--kv-cache-memory-bytes 4G``
is not: vLLM treats ``G`` as GiB); we follow vLLM for bare ``K/M/G/T`` suffixes and
the SI meaning for ``KB/MB/GB/TB``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
MAX_BYTES = 2**50  # 1 PiB: anything larger is a typo, not a GPU


def parse_bytes(value: Any) -> int:
    """Parse a byte size. Raises ValueError with what is allowed."""
    if isinstance(value, bool):
        raise ValueError("expected a byte size such as 21474836480 or '20GiB', got a boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        m = _PATTERN.match(value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"expected a byte size such as '20GiB', '24G' or '512MB', got {value!r}")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ValueError(f"expected a byte size such as 21474836480 or '20GiB', got {type(value).__name__}")
    if n < 0 or n > MAX_BYTES:
        raise ValueError(f"byte size must be between 0 and {MAX_BYTES} (1 PiB), got {n}")
    return n


ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
