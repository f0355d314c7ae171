"""Helpers shared by subcommands: common flags, config discovery, JSON output.

Config discovery order: ``-c FILE``, ``$GPU_SHARING_CONFIG``,
``/etc/gpu-sharing/gpu-sharing.yaml``, ``./config/gpu-sharing.yaml``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from gpu_sharing.config import Config, load_config
from gpu_sharing.errors import UserError

DEFAULT_CONFIG_PATHS = ("/etc/gpu-sharing/gpu-sharing.yaml", "config/gpu-sharing.yaml")


def bounded_int(low: int, high: int):
    """argparse type: an integer in [low, high] (a bad value is a usage error, exit 2, never a traceback)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def bounded_float(low: float, high: float):
    """argparse type: a finite number in [low, high] (nan, inf and 1e308 are refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a finite number between {low:g} and {high:g}, got {text[:40]}")
        return value
    return parse


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="config file (default: $GPU_SHARING_CONFIG, "
                   "/etc/gpu-sharing/gpu-sharing.yaml, ./config/gpu-sharing.yaml)")


def add_simulate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulate", action="store_true", help="use the simulated node instead of real GPUs")
    p.add_argument("--sim-state", metavar="DIR", help="simulated node state dir (default: $GPU_SHARING_SIM_STATE "
                   "or ~/.local/state/gpu-sharing/sim)")


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def config_path(args: argparse.Namespace) -> str:
    explicit = getattr(args, "config", None) or os.environ.get("GPU_SHARING_CONFIG")
    if explicit:
        return explicit
    for candidate in DEFAULT_CONFIG_PATHS:
        if Path(candidate).is_file():
            return candidate
    raise UserError("no config file: pass -c FILE or set $GPU_SHARING_CONFIG "
                    f"(looked in {', '.join(DEFAULT_CONFIG_PATHS)})")


def load(args: argparse.Namespace) -> tuple[str, Config]:
    path = config_path(args)
    return path, load_config(path)


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


def print_json(obj: Any) -> None:
    json.dump(to_jsonable(obj), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
