"""``gpu-sharing apply``: plan, confirm, apply once, and wait until every placed instance is READY.

Instances run in their own sessions and keep running after this command exits;
the state file (<state_dir>/instances.json) lets the next apply or the daemon
adopt them, so applying the same config twice gives zero actions and the same pids.
"""

from __future__ import annotations

import argparse
import sys

from gpu_sharing.cli import common
from gpu_sharing.cli.commands._runtime_common import add_runtime_flags, controller_lock, make_reconciler
from gpu_sharing.errors import UserError
from gpu_sharing.planner.types import ActionKind, Plan
from gpu_sharing.runtime.instance_state import InstanceState

SUMMARY_INTERVAL_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="apply the config once: repartition, start/stop instances, wait until READY")
    common.add_config_flag(p)
    common.add_simulate_flags(p)
    add_runtime_flags(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--timeout", type=common.bounded_float(0, 86400), metavar="SECONDS",
                   help="how long to wait for READY (default: vllm.startup_timeout_s + 60)")
    common.add_json_flag(p)
    p.set_defaults(func=run)


def _print_plan(plan: Plan) -> None:
    marks = {ActionKind.START: "+", ActionKind.STOP: "-", ActionKind.REPARTITION: "~", ActionKind.UNCHANGED: "="}
    if plan.actions:
        for a in plan.actions:
            print(f"{marks.get(a.kind, '?')} {a.kind.value} {a.target}{(': ' + a.detail) if a.detail else ''}")
    else:
        for p in plan.to_stop:
            print(f"- stop {p}")
        for t in plan.to_repartition:
            print(f"~ repartition gpu {t.gpu}: {t.compute_mode.value}+{t.memory_mode.value}")
        for p in plan.to_start:
            print(f"+ start {p.instance_id} on {', '.join(map(str, p.partitions))}")
    for u in plan.unplaceable:
        print(f"! unplaceable {u.model}-{u.replica}: {u.reason}")
    print(f"plan: {len(plan.to_start)} to start, {len(plan.to_stop)} to stop, "
          f"{len(plan.to_repartition)} GPUs to repartition, {len(plan.unchanged)} unchanged")


def _confirm(args: argparse.Namespace) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UserError("apply changes the node: pass --yes to confirm when stdin is not a terminal")
    answer = input("Apply these changes? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UserError("aborted: nothing was changed")


def run(args: argparse.Namespace) -> int:
    path, cfg = common.load(args)
    with controller_lock(args, cfg, "apply"):
        return _run_locked(args, path, cfg)


def _run_locked(args: argparse.Namespace, path: str, cfg) -> int:
    rec = make_reconciler(args, cfg, path)
    adopted = rec.adopt()
    plan, problems = rec.make_plan()
    if not args.json:
        if adopted:
            print(f"adopted {len(adopted)} running instance(s)")
        _print_plan(plan)
    if plan.has_changes:
        _confirm(args)
    report = rec.apply_plan(plan)
    seen: dict[str, InstanceState] = {}
    summary_at = [rec.clock() + SUMMARY_INTERVAL_S]

    def live_lines() -> None:
        if args.json:
            return
        statuses = rec.statuses()
        if rec.clock() >= summary_at[0]:  # a heartbeat while instances are still starting
            summary_at[0] = rec.clock() + SUMMARY_INTERVAL_S
            counts: dict[str, int] = {}
            for st in statuses:
                counts[st.state.value] = counts.get(st.state.value, 0) + 1
            print("  waiting: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr, flush=True)
        for st in statuses:
            if seen.get(st.instance_id) != st.state:
                seen[st.instance_id] = st.state
                elapsed = f"{max(0.0, rec.supervisor.wall_clock() - st.started_at):.1f}s" if st.started_at else "-"
                print(f"  {st.instance_id:<32} {st.state.value:<9} {elapsed}", file=sys.stderr, flush=True)

    timeout_s = args.timeout if args.timeout is not None else rec.config.vllm.startup_timeout_s + 60
    rec.wait_settled(timeout_s, on_tick=live_lines)
    rec.detach()
    return _finish(args, rec, plan, report, problems)


def _finish(args, rec, plan, report, problems) -> int:
    placed = {p.instance_id for p in plan.placements}
    statuses = [s for s in rec.statuses() if s.instance_id in placed]
    not_ready = [s for s in statuses if s.state != InstanceState.READY]
    missing = placed - {s.instance_id for s in statuses}
    reasons = [f"{s.instance_id}: {s.state.value}: {s.last_error or 'not ready in time'}" for s in not_ready]
    reasons += [f"{f.target}: {f.stage}: {f.message}" for f in report.failures]
    reasons += [f"{i}: not started" for i in sorted(missing) if not any(f.target == i for f in report.failures)]
    ok = not reasons
    if args.json:
        common.print_json({"ok": ok, "actions": report.actions, "stopped": report.stopped,
                           "repartitioned": report.repartitioned, "started": report.started,
                           "unchanged": report.unchanged, "failures": report.failures,
                           "unplaceable": list(plan.unplaceable) + list(problems), "instances": rec.statuses(),
                           "duration_s": report.duration_s})
    else:
        ready = sum(1 for s in statuses if s.state == InstanceState.READY)
        print(f"{ready}/{len(placed)} placed instances READY; {report.actions} actions")
        for r in reasons:
            print(f"  {r}", file=sys.stderr)
    return 0 if ok else 1
