"""The root cause of a vLLM start failure, from the traceback chain in its log.

Why: real vLLM 0.33 ends a failed start with a wrapper, not the cause. The EngineCore
process logs its traceback ending in e.g. ``ValueError: Free memory on device cuda:0 ...``;
with TP>1 it re-raises ``Exception: WorkerProc initialization failed due to an exception
in a background process. See stack trace for root cause.`` (v1/executor/multiproc_executor.py);
the API process then raises ``RuntimeError: Engine core initialization failed. See root
cause above. Failed core proc(s): {'EngineCore': 1}`` (v1/engine/utils.py). Lines may carry
vLLM's process prefix ``(EngineCore pid=123)`` / ``(APIServer pid=1)`` (vllm/logger.py).
``LAST ERROR`` must show the cause, so wrappers are skipped and the last real exception wins.
"""

from __future__ import annotations

import re

PROCESS_PREFIX = re.compile(r"^\(\w+ pid=\d+\)\s*")
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Interrupt)|Exception): (.+)$")
WRAPPERS = ("See root cause above", "See stack trace for root cause",
            "initialization failed due to an exception in a background process")


def strip_prefix(line: str) -> str:
    return PROCESS_PREFIX.sub("", line.strip())


def root_cause(lines: list[str]) -> str | None:
    """The last exception line that is not one of vLLM's wrappers, or None when there is none."""
    found = None
    for raw in lines:
        line = strip_prefix(raw)
        if EXCEPTION_LINE.match(line) and not any(w in line for w in WRAPPERS):
            found = line
    return found
