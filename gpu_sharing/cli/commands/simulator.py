"""``gpu-sharing simulator init|show|set-fault|clear-faults|reset``: manage the simulated node."""

from __future__ import annotations

import argparse
import json
import shutil

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._runtime_common import sim_state_dir
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.catalog import CATALOG


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulator", help="create and inspect the simulated GPU node")
    ps = p.add_subparsers(dest="sim_command", metavar="init|show|set-fault|clear-faults|reset")
    ps.required = True
    init = ps.add_parser("init", help="create a simulated node (replaces an existing one)")
    init.add_argument("--gpu-model", default="MI300X", choices=list(CATALOG))
    init.add_argument("--gpus", type=common.bounded_int(1, 64), default=8)
    init.add_argument("--state", "--sim-state", dest="sim_state", metavar="DIR")
    init.add_argument("--compute", type=str.upper)
    init.add_argument("--memory", type=str.upper)
    init.add_argument("--reload-time-s", type=common.bounded_float(0, 3600), default=2.0)
    init.add_argument("--non-root", action="store_true", help="simulate a user without root (NO_PERM on changes)")
    init.set_defaults(func=run_init)
    show = ps.add_parser("show", help="print the node state")
    show.add_argument("--state", "--sim-state", dest="sim_state", metavar="DIR")
    common.add_json_flag(show)
    show.set_defaults(func=run_show)
    fault = ps.add_parser("set-fault", help="inject a failure into the next amd-smi operations, set a node knob "
                          "(what the node reports: versions, caps, permissions) or the KFD mode-switch behaviour")
    fault.add_argument("--state", "--sim-state", dest="sim_state", metavar="DIR")
    fault.add_argument("op", nargs="?", choices=["set_compute", "set_memory", "reload", "list", "process"])
    fault.add_argument("code", nargs="?", choices=["BUSY", "NO_PERM", "TIMEOUT", "GARBAGE", "RESTART_FAILED",
                                                    "NOT_SUPPORTED"])
    fault.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                       help="a node fact (simulator/node_facts.py), VALUE as JSON or a plain string, e.g. "
                       "version.amdsmi_wheel=7.9.0, device.memory_caps='[\"NPS1\"]', version.amdgpu=null")
    fault.add_argument("--kfd-mode-switch", choices=["strict", "cgroup_exclusion"],
                       help="when the KFD refuses a compute-mode change (strict: any /dev/kfd holder on the node)")
    fault.add_argument("--count", type=common.bounded_int(-1, 1_000_000), default=1, help="how many calls fail (-1 = all)")
    fault.set_defaults(func=run_fault)
    clear = ps.add_parser("clear-faults", help="remove injected failures")
    clear.add_argument("--state", "--sim-state", dest="sim_state", metavar="DIR")
    clear.set_defaults(func=lambda a: _node(a).clear_faults() or 0)
    reset = ps.add_parser("reset", help="delete the simulated node state")
    reset.add_argument("--state", "--sim-state", dest="sim_state", metavar="DIR")
    reset.set_defaults(func=run_reset)


def _node(args):
    from simulator.node import SimNode

    try:
        return SimNode.open(sim_state_dir(args))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def run_init(args: argparse.Namespace) -> int:
    from simulator.node import SimError, SimNode

    d = sim_state_dir(args)
    try:
        node = SimNode.create(d, args.gpu_model, args.gpus, compute_mode=args.compute, memory_mode=args.memory,
                              reload_time_s=args.reload_time_s)
    except (SimError, ValueError) as e:
        raise UserError(str(e)) from None
    if args.non_root:
        node.set_root(False)
    st = node.state()
    print(f"simulated node in {d}: {args.gpus} x {st['gpu_model']} "
          f"{st['gpus'][0]['compute_mode']}+{st['gpus'][0]['memory_mode']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    node = _node(args)
    st = node.state()
    if args.json:
        common.print_json({"state_dir": str(node.state_dir), **st, "partitions": node.partitions(st)})
        return 0
    print(f"{len(st['gpus'])} x {st['gpu_model']} in {node.state_dir} (root: {st['root']}, generation {st['generation']})")
    for g in st["gpus"]:
        print(f"  GPU {g['index']}: {g['compute_mode']}+{g['memory_mode']}"
              + (f" (pending {g['pending_memory_mode']})" if g.get("pending_memory_mode") else ""))
    print(f"  processes: {len(st['processes'])}; faults: {st['faults'] or 'none'}; "
          f"kfd_mode_switch: {st.get('kfd_mode_switch', 'strict')}; knobs: {st.get('knobs') or 'none'}")
    return 0


def run_fault(args: argparse.Namespace) -> int:
    node = _node(args)
    if bool(args.op) != bool(args.code):
        raise UserError("set-fault: give both OP and CODE (e.g. set_compute BUSY), or only --knob/--kfd-mode-switch")
    if not (args.op or args.knob or args.kfd_mode_switch):
        raise UserError("set-fault: nothing to set (OP CODE, --knob NAME=VALUE or --kfd-mode-switch MODE)")
    for item in args.knob:
        name, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--knob {item!r}: expected NAME=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        try:
            node.set_knob(name, value)
        except ValueError as e:
            raise UserError(f"--knob {name}: {e}") from None
    if args.kfd_mode_switch:
        node.set_kfd_mode_switch(args.kfd_mode_switch)
    if args.op:
        node.set_fault(args.op, args.code, args.count)
    return 0


def run_reset(args: argparse.Namespace) -> int:
    d = sim_state_dir(args)
    if (d / "node.json").exists():
        shutil.rmtree(d)
        print(f"removed {d}")
    return 0
