"""A config rewritten in place in two writes 1.5 s apart is never applied half-written: the daemon reloads only
once the content has been stable for reconcile.config_settle_s (injected clock, no sleeps)."""

from __future__ import annotations

import asyncio

from gpu_sharing.config.intake import SettleWatch
from gpu_sharing.config.loader import load_config
from gpu_sharing.daemon.service import Daemon
from gpu_sharing.hardware.modes import ComputePartitionMode as C

from reconcile_fakes import RecordingBackend
from test_reconciler import new_reconciler

ORIGINAL = "version: v1\nreconcile: {interval_s: 30, config_settle_s: 2}\nmodels: []\n"
CHANGED = "version: v1\nreconcile: {interval_s: 45, config_settle_s: 2}\nmodels: []\n"


def test_settle_watch_state_machine():
    w = SettleWatch("a", settle_s=2.0)
    assert not w.ready("b", 0.0) and not w.ready("b", 1.9) and w.ready("b", 2.0)
    assert not w.ready("c", 2.5)  # changed again: the clock restarts
    assert not w.ready("a", 3.0) and not w.ready("c", 3.1)  # back to the applied content: nothing pending
    w2 = SettleWatch("a", settle_s=0.0)
    assert w2.ready("b", 0.0)


def test_two_writes_apart_apply_nothing_and_a_real_change_applies_once_stable(tmp_path):
    path = tmp_path / "gs.yaml"
    path.write_text(ORIGINAL)
    now = [0.0]
    rec = new_reconciler(tmp_path, RecordingBackend({0: C.CPX}), cfg=load_config(path))
    daemon = Daemon(str(path), rec, clock=lambda: now[0])

    async def scenario() -> list[int]:
        seen = []
        path.write_text(ORIGINAL[:20])  # first write: half the file
        for t in (0.5, 1.0):
            now[0] = t
            await daemon.watch()
            seen.append(daemon.generation)
        path.write_text(ORIGINAL)  # second write, 1.5 s later: the same content as before
        for t in (1.6, 4.0, 9.0):
            now[0] = t
            await daemon.watch()
            seen.append(daemon.generation)
        path.write_text(CHANGED)
        for t in (10.0, 11.9, 12.0, 15.0):
            now[0] = t
            await daemon.watch()
            seen.append(daemon.generation)
        return seen

    try:
        seen = asyncio.run(scenario())
    finally:
        daemon._executor.shutdown(wait=True)  # noqa: SLF001
    assert seen == [1, 1, 1, 1, 1, 1, 1, 2, 2]
    reloads = {r: daemon.registry.get_sample_value("gpu_sharing_config_reload_total", {"result": r}) for r in ("ok", "error")}
    assert reloads == {"ok": 1.0, "error": 0.0}
    assert rec.config.reconcile.interval_s == 45
