"""``gpu-sharing stage [MODEL...]``: put each model's weights on local disk and verify them.

Local paths are verified only; hub ids are downloaded with huggingface_hub
(``hub`` extra) unless HF_HUB_OFFLINE=1.  A progress line (bytes done/total,
rate) goes to stderr; exit 1 when any model failed.
"""

from __future__ import annotations

import argparse
import sys
import time

from gpu_sharing.cli import common
from gpu_sharing.errors import UserError
from gpu_sharing.runtime.staging import Progress, StageState, StagingManager


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage", help="download/verify model weights before they are placed")
    p.add_argument("models", nargs="*", metavar="MODEL", help="model names (default: all enabled)")
    common.add_config_flag(p)
    common.add_json_flag(p)
    p.add_argument("--budget-bytes", type=common.bounded_int(0, 1 << 62), help="refuse downloads larger than this")
    p.set_defaults(func=run)


def _progress_printer(stream):
    started = time.monotonic()

    def show(p: Progress) -> None:
        if p.state is StageState.DOWNLOADING and p.bytes_total:
            rate = p.bytes_done / max(time.monotonic() - started, 1e-6)
            stream.write(f"\r{p.model}: {p.bytes_done}/{p.bytes_total} bytes "
                         f"({p.bytes_done / p.bytes_total:.0%}, {rate / 2**20:.1f} MiB/s)")
        else:
            stream.write(f"\r{p.model}: {p.state.value}\n" if p.state in (StageState.READY, StageState.FAILED)
                         else f"\r{p.model}: {p.state.value}")
        stream.flush()
    return show


def run(args: argparse.Namespace) -> int:
    _path, cfg = common.load(args)
    by_name = {m.name: m for m in cfg.models}
    unknown = [n for n in args.models if n not in by_name]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; the config has: {', '.join(sorted(by_name))}")
    chosen = [by_name[n] for n in args.models] or [m for m in cfg.models if m.enabled]
    mgr = StagingManager(budget_bytes=args.budget_bytes,
                         on_progress=None if args.json else _progress_printer(sys.stderr))
    results = [mgr.ensure(m) for m in chosen]
    if args.json:
        common.print_json([{"model": r.model, "state": r.state.value, "path": r.path, "bytes_total": r.bytes_total,
                            "attempts": r.attempts, "error": r.error} for r in results])
    else:
        for r in results:
            print(f"{r.model}: {r.state.value}" + (f" ({r.bytes_total} bytes, {r.path})" if r.path else "")
                  + (f" - {r.error}" if r.error else ""))
    return 0 if all(r.state is StageState.READY for r in results) else 1
