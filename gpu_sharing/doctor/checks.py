"""The result types of ``gpu-sharing doctor``: one ``Check`` per assumption, and the ``Fact`` a probe reads.

Why a Fact carries its source: the doctor's worth is in telling the operator *where* a value came
from (``uname -r``, ``/opt/rocm/.info/version``, a simulator rule and its upstream reference), so a
wrong answer can be traced to the reading or to our assumption, not guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


class Family(str, Enum):
    VERSIONS = "versions"
    HARDWARE = "hardware"
    PERMISSIONS = "permissions"
    KERNEL = "kernel-behaviour"
    DEEP = "deep"


@dataclass(frozen=True)
class Check:
    """One row of the report: what was measured, what gpu-sharing expects, and how to fix a gap."""

    name: str
    family: Family
    status: Status
    measured: str
    expected: str
    fix: str = ""
    source: str = ""


@dataclass(frozen=True)
class Fact:
    """A value read from the node (or the simulator), where it came from, or why it could not be read."""

    value: Any
    source: str
    error: str | None = None
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def missing(cls, source: str, error: str, fix: str = "") -> "Fact":
        return cls(None, source, error, fix)


def check(name: str, family: Family, status: Status, measured: Any, expected: str, *, fix: str = "",
          source: str = "") -> Check:
    return Check(name, family, status, str(measured), expected, fix if status in (Status.FAIL, Status.WARN) else "",
                 source)


def from_missing(name: str, family: Family, fact: Fact, expected: str, status: Status = Status.FAIL) -> Check:
    """The row for a fact that could not be read: its error is the measurement, its fix the fix."""
    return check(name, family, status, fact.error or "unreadable", expected, fix=fact.fix, source=fact.source)


def version_tuple(text: Any, parts: int = 3) -> tuple[int, ...] | None:
    """``6.8.0-60-generic`` -> (6, 8, 0); ``26.2.1+fc00`` -> (26, 2, 1); None when it has no leading number."""
    out: list[int] = []
    for piece in str(text or "").replace("-", ".").replace("+", ".").split(".")[:parts]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
    return tuple(out) if out else None
