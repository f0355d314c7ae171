"""``gpu-sharing doctor [-c FILE] [--json] [--deep] [--simulate]``: qualify this node before trusting it.

Read-only by default. ``--deep`` starts short probes on idle GPUs (a KFD holder confined to one GPU
while another GPU's compute mode is switched and restored; a CU-masked kernel) and refuses while
any GPU process runs; it saves what it measured to <state_dir>/node-facts.json. Exit 0 when no
check FAILs, 1 otherwise, 2 for a bad config. Without ROCm the FAIL rows say what to install.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._runtime_common import sim_state_dir, state_dir
from gpu_sharing.config.schema import Config
from gpu_sharing.doctor import DoctorContext, Status, run_checks, running_processes, save_facts
from gpu_sharing.errors import OperationError, UserError

_ORDER = {Status.FAIL: 0, Status.WARN: 1, Status.PASS: 2, Status.SKIP: 3}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this node's stack against what gpu-sharing assumes (PASS/WARN/FAIL/SKIP)")
    common.add_config_flag(p)
    common.add_json_flag(p)
    p.add_argument("--deep", action="store_true", help="also run probes that start work on idle GPUs "
                   "(refused while instances run)")
    common.add_simulate_flags(p)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> tuple[str | None, Config]:
    try:
        return common.load(args)
    except UserError:
        if args.config:
            raise
        return None, Config(version="v1")


def _context(args: argparse.Namespace, cfg: Config, path: str | None) -> DoctorContext:
    config_dir = Path(path).resolve().parent if path else None
    if args.simulate:
        from gpu_sharing.doctor.simulated import SIMULATED_BACKEND_NOTE, SimulatedProbe, simulated_backend
        from simulator.node import SimNode

        node = SimNode.open_or_create(sim_state_dir(args))
        return DoctorContext(cfg, SimulatedProbe(node), lambda: simulated_backend(node, cfg.node.backend),
                             state_dir(args, cfg), simulate=True, deep=args.deep, config_dir=config_dir,
                             sim_state_dir=node.state_dir, backend_note=SIMULATED_BACKEND_NOTE)
    from gpu_sharing.backends.factory import make_backend
    from gpu_sharing.doctor.probe import RealProbe

    def open_backend():
        with contextlib.redirect_stdout(sys.stderr):  # `import amdsmi` prints when libamd_smi.so is missing
            return make_backend(cfg.node.backend)
    return DoctorContext(cfg, RealProbe(), open_backend, state_dir(args, cfg), deep=args.deep, config_dir=config_dir)


def run(args: argparse.Namespace) -> int:
    path, cfg = _config(args)
    if not args.simulate:
        return _run(args, path, cfg)
    from simulator.node import SimError

    try:
        return _run(args, path, cfg)
    except (SimError, FileNotFoundError) as e:
        raise OperationError(f"the simulated node cannot be read: {e} (recreate it: gpu-sharing simulator init)") from None


def _run(args: argparse.Namespace, path: str | None, cfg: Config) -> int:
    ctx = _context(args, cfg, path)
    if args.deep:
        busy = running_processes(ctx)
        if busy:
            print(f"error: doctor --deep starts probes on idle GPUs and switches a compute mode; refused while "
                  f"{len(busy)} GPU process(es) run: {'; '.join(busy[:5])}. Stop the instances "
                  "(gpu-sharing stop / systemctl stop gpu-sharing) or run without --deep.", file=sys.stderr)
            return 1
    results = run_checks(ctx)
    saved = save_facts(ctx) if args.deep else None
    failed = any(c.status == Status.FAIL for c in results)
    if args.json:
        common.print_json({"ok": not failed, "simulate": bool(args.simulate), "deep": bool(args.deep),
                           "config": path, "facts": ctx.facts, "facts_file": str(saved) if saved else None,
                           "checks": results})
        return 1 if failed else 0
    where = "the simulated node" if args.simulate else "this node"
    print(f"gpu-sharing doctor: {where}" + (f", config {path}" if path else ", default config") +
          (", deep probes" if args.deep else ""))
    common.print_table(["FAMILY", "CHECK", "STATUS", "MEASURED"],
                       [[c.family.value, c.name, c.status.value, _short(c.measured)] for c in results])
    todo = sorted((c for c in results if c.status in (Status.FAIL, Status.WARN)), key=lambda c: _ORDER[c.status])
    for c in todo:
        print(f"\n{c.status.value} {c.name}: {c.measured}\n  expected: {c.expected}\n  fix: {c.fix}\n  source: {c.source}")
    counts = {s: sum(c.status == s for c in results) for s in Status}
    print("\n" + ", ".join(f"{n} {s.value}" for s, n in counts.items()) +
          (f"; facts saved to {saved}" if saved else ""))
    return 1 if failed else 0


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
