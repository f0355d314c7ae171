"""``gpu-sharing partition show|set``: read and change compute/memory partition modes.

``set`` asserts first and applies only what differs (mig-parted's lesson): a GPU already
at the desired modes gets zero mutating backend calls. Memory first, then compute; a
memory change stays pending until ``--reload-driver`` (which stops nothing by itself:
the driver refuses while GPU processes exist).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._runtime_common import sim_state_dir
from gpu_sharing.config.schema import BackendKind, Config
from gpu_sharing.errors import OperationError, UserError
from gpu_sharing.hardware.backend import BackendError, PartitionBackend
from gpu_sharing.hardware.catalog import get_spec
from gpu_sharing.hardware.inventory import Inventory
from gpu_sharing.hardware.modes import ComputePartitionMode as C, MemoryPartitionMode as M
from gpu_sharing.runtime.controller_lock import ControllerLock, cli_hint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("partition", help="show or set partition modes")
    psub = p.add_subparsers(dest="partition_command", metavar="show|set")
    psub.required = True
    show = psub.add_parser("show", help="GPUs, modes, partitions, VRAM, processes")
    common.add_simulate_flags(show)
    common.add_json_flag(show)
    show.add_argument("--backend", choices=[b.value for b in BackendKind], default="auto")
    show.set_defaults(func=run_show)
    st = psub.add_parser("set", help="set modes on one or all GPUs (no-op when already there)")
    common.add_simulate_flags(st)
    common.add_json_flag(st)
    st.add_argument("--backend", choices=[b.value for b in BackendKind], default="auto")
    st.add_argument("--gpu", required=True, help="GPU index or 'all'")
    st.add_argument("--compute", type=str.upper, choices=[c.value for c in C])
    st.add_argument("--memory", type=str.upper, choices=[m.value for m in M if m != M.NPS8])
    st.add_argument("--reload-driver", action="store_true", help="reload amdgpu so a memory mode applies")
    st.add_argument("--state-dir", metavar="DIR", help="the daemon's state dir, whose controller lock this command "
                    "takes (default: <sim-state>/daemon with --simulate, else node.state_dir of the default config)")
    st.set_defaults(func=run_set)


def backend_for(args: argparse.Namespace) -> PartitionBackend:
    from gpu_sharing.backends.factory import make_backend_with_reason

    kind = BackendKind.SIMULATED if args.simulate else BackendKind(args.backend)
    try:
        backend, reason = make_backend_with_reason(kind, sim_state_dir=sim_state_dir(args) if args.simulate else None)
    except BackendError as e:
        raise OperationError(str(e)) from None
    if not getattr(args, "json", False):
        print(f"backend: {reason}", file=sys.stderr)
    return backend


def inventory_json(inv: Inventory) -> list[dict]:
    return [{"gpu": g.index, "bdf": g.bdf, "model": g.model, "hive_id": g.hive_id, "numa_node": g.numa_node,
             "compute_partition": g.compute_mode.value, "memory_partition": g.memory_mode.value,
             "pending_memory_partition": g.pending_memory_mode.value if g.pending_memory_mode else None,
             "partitions": [{"id": p.id, "hip_index": p.hip_index, "render_node": p.render_node, "cu_count": p.cu_count,
                             "xcc_count": p.xcc_count, "vram_total_bytes": p.vram_total_bytes,
                             "vram_used_bytes": p.vram_used_bytes,
                             "processes": [{"pid": x.pid, "name": x.name, "vram_bytes": x.vram_bytes} for x in p.processes]}
                            for p in g.partitions]} for g in inv.gpus]


def run_show(args: argparse.Namespace) -> int:
    inv = _observe(backend_for(args))
    if args.json:
        common.print_json({"gpus": inventory_json(inv)})
        return 0
    for g in inv.gpus:
        pending = f" (pending {g.pending_memory_mode.value} until driver reload)" if g.pending_memory_mode else ""
        print(f"GPU {g.index}  {g.model}  {g.bdf}  {g.compute_mode.value}+{g.memory_mode.value}{pending}")
        rows = [[p.id, p.hip_index, p.render_node, p.cu_count, f"{p.vram_used_bytes / 2**30:.1f}/{p.vram_total_bytes / 2**30:.1f} GiB",
                 ", ".join(f"{x.pid} {x.name}" for x in p.processes) or "-"] for p in g.partitions]
        common.print_table(["  PARTITION", "HIP", "RENDER", "CUS", "VRAM USED/TOTAL", "PROCESSES"],
                           [["  " + str(r[0]), *r[1:]] for r in rows])
    return 0


def _observe(backend: PartitionBackend) -> Inventory:
    try:
        return backend.inventory()
    except BackendError as e:
        raise OperationError(str(e)) from None


def run_set(args: argparse.Namespace) -> int:
    if not args.compute and not args.memory and not args.reload_driver:
        raise UserError("partition set: give --compute MODE and/or --memory MODE (or --reload-driver)")
    lock = _controller_lock(args)
    try:
        return _set_locked(args)
    finally:
        if lock is not None:
            lock.release()


def _controller_lock(args: argparse.Namespace) -> ControllerLock | None:
    """Changing modes under a running daemon would fight its plan: refuse while it holds the state dir."""
    if args.state_dir:
        sdir = Path(args.state_dir)
    elif args.simulate:
        sdir = sim_state_dir(args) / "daemon"
    else:
        try:
            sdir = Path(common.load(args)[1].node.state_dir)
        except UserError:
            sdir = Path(Config(version="v1").node.state_dir)
    if not sdir.is_dir():
        return None  # no daemon ever ran with this state dir
    return ControllerLock(sdir, "gpu-sharing partition set").acquire(hint=cli_hint("partition set"))


def _set_locked(args: argparse.Namespace) -> int:
    backend = backend_for(args)
    inv = _observe(backend)
    gpus = [g.index for g in inv.gpus] if args.gpu == "all" else [_gpu_index(args.gpu, inv)]
    results = []
    for idx in gpus:
        g = inv.gpu(idx)
        spec = get_spec(g.model)
        compute = C(args.compute) if args.compute else g.compute_mode
        memory = M(args.memory) if args.memory else (g.pending_memory_mode or g.memory_mode)
        if compute not in spec.compute_modes() or not spec.is_valid(compute, memory):
            raise UserError(f"GPU {idx} ({spec.name}): {compute.value}+{memory.value} is not a valid pair; "
                            f"allowed pairs: {spec.describe_valid_pairs()}")
        results.append(_apply_one(backend, g, compute, memory, args))
    if args.reload_driver and (any(r["memory_pending"] for r in results) or args.gpu == "all"):
        _reload(backend, args)
        inv = _observe(backend)
        for r in results:
            g = inv.gpu(r["gpu"])
            if args.compute and g.compute_mode.value != args.compute:
                _call(backend.set_compute_mode, r["gpu"], C(args.compute))
            r["memory_pending"] = False
    if args.json:
        common.print_json({"results": results})
    return 0


def _apply_one(backend, g, compute: C, memory: M, args) -> dict:
    effective_memory = g.pending_memory_mode or g.memory_mode
    changes = []
    if memory != effective_memory:
        _call(backend.set_memory_mode, g.index, memory)
        changes.append(f"memory {effective_memory.value} -> {memory.value} (pending until driver reload)")
    if compute != g.compute_mode and memory == g.memory_mode:
        _call(backend.set_compute_mode, g.index, compute)
        changes.append(f"compute {g.compute_mode.value} -> {compute.value}")
    elif compute != g.compute_mode:
        changes.append(f"compute {compute.value} after the driver reload")
    if not args.json:
        print(f"GPU {g.index}: already at desired {compute.value}+{memory.value}" if not changes
              else f"GPU {g.index}: " + "; ".join(changes))
    return {"gpu": g.index, "compute_partition": compute.value, "memory_partition": memory.value,
            "changed": bool(changes), "memory_pending": memory != g.memory_mode}


def _reload(backend, args) -> None:
    def progress(msg: str, frac: float) -> None:
        if not args.json:
            print(f"\r  {msg}: {frac:4.0%}", end="" if frac < 1 else "\n", file=sys.stderr, flush=True)
    _call(backend.reload_driver, progress)


def _call(fn, *a):
    try:
        return fn(*a)
    except BackendError as e:
        raise OperationError(str(e)) from None


def _gpu_index(text: str, inv: Inventory) -> int:
    try:
        idx = int(text)
        inv.gpu(idx)
        return idx
    except (ValueError, KeyError):
        raise UserError(f"--gpu must be 'all' or one of {', '.join(str(g.index) for g in inv.gpus)}, got {text!r}") from None
