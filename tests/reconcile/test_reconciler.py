"""Reconciler over real (trivial) processes with the real planner and demand builder: converge, state file,
adopt with same pids, zero actions on re-apply, restart after a kill, config diff, stop_all. Only the launch
argv is replaced (a sleeping Python process instead of vLLM), through the constructor."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


from gpu_sharing.config.schema import Config
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.reconcile import observe
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.instance_state import InstanceState
from gpu_sharing.runtime.spawner import pid_alive
from gpu_sharing.runtime.state_file import read_state
from gpu_sharing.runtime.supervisor import InstanceLaunch

from reconcile_fakes import RecordingBackend

QWEN = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}


def fake_launch_builder(p, parts, port, cu_mask, inventory, *, config, fingerprint, config_dir=None):
    """A sleeping Python process per instance; everything else (placement, fingerprint) is the real one."""
    return InstanceLaunch(instance_id=p.instance_id, model=p.model, replica=p.replica,
                          fingerprint=fingerprint, served_names=(p.model,),
                          partitions=tuple(str(r) for r in p.partitions), hip_indices=tuple(x.hip_index for x in parts),
                          memory_bytes_per_rank=p.memory_bytes_per_rank, tp=p.tp,
                          argv=(sys.executable, "-c", "import time; time.sleep(300)", p.instance_id),
                          env=(("HIP_VISIBLE_DEVICES", ",".join(str(x.hip_index) for x in parts)),
                               *((("HSA_CU_MASK", cu_mask),) if cu_mask else ())),
                          port=port, url=f"http://127.0.0.1:{port}")


def config(max_model_len=1024):
    return Config.model_validate({
        "version": "v1",
        "models": [{"name": "a", "source": "org/a", "replicas": 2, "config_json": QWEN, "max_model_len": 1024},
                   {"name": "b", "source": "org/b", "config_json": QWEN, "max_model_len": max_model_len}],
        "vllm": {"port_range": [21100, 21199], "stop_grace_s": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.1,
                 "startup_timeout_s": 10}})


def new_reconciler(tmp_path, backend, cfg=None, **collaborators):
    collaborators.setdefault("launches", fake_launch_builder)
    return Reconciler(cfg or config(), backend, state_dir=tmp_path / "state", health_checker=lambda url: True,
                      **collaborators)


def tick_until(rec, pred, timeout_s=10.0):
    """Poll with a deadline (no fixed sleeps): tick the reconciler until pred() holds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec.tick()
        if pred():
            return True
        pause.wait(0.02)
    return pred()


def pids(rec):
    return {s.instance_id: s.pid for s in rec.statuses()}


def test_full_lifecycle(tmp_path):
    backend = RecordingBackend({0: C.CPX})
    rec = new_reconciler(tmp_path, backend)
    try:
        report = rec.reconcile_once()
        assert report.ok and sorted(report.apply.started) == ["a-0", "a-1", "b-0"]
        assert rec.wait_settled(10)
        assert {s.state for s in rec.statuses()} == {InstanceState.READY}
        first = pids(rec)
        entries = {e.instance_id: e for e in read_state(tmp_path / "state")}
        planned = {p.instance_id: tuple(map(str, p.partitions)) for p in report.plan.placements}
        assert {i: e.pid for i, e in entries.items()} == first
        assert {i: e.partitions for i, e in entries.items()} == planned
        assert len({e.port for e in entries.values()}) == 3
        running = observe.running_instances(config(), backend.inventory(), tmp_path / "state")
        assert [r.instance_id for r in running] == ["a-0", "a-1", "b-0"]
        rec.detach()

        # a second run (next apply / restarted daemon) adopts: same pids, zero actions
        rec2 = new_reconciler(tmp_path, backend)
        assert sorted(rec2.adopt()) == ["a-0", "a-1", "b-0"]
        backend.calls.clear()
        again = rec2.reconcile_once()
        assert again.ok and again.actions == 0 and backend.mutating() == []
        assert pids(rec2) == first

        # killing one: restarted (new pid) and READY again; the others keep their pids
        os.kill(first["a-0"], signal.SIGKILL)
        assert tick_until(rec2, lambda: pids(rec2)["a-0"] not in (None, first["a-0"]) and rec2.supervisor.all_settled())
        after = pids(rec2)
        assert after["a-0"] != first["a-0"] and after["a-1"] == first["a-1"] and after["b-0"] == first["b-0"]
        assert [s.restarts for s in rec2.statuses() if s.instance_id == "a-0"] == [1]

        # a config change touches only the changed model
        diff = rec2.update_config(config(max_model_len=2048))
        assert diff.changed == ("b",) and diff.unchanged == ("a",) and not diff.added
        changed = rec2.reconcile_once()
        assert changed.apply.stopped == ("b-0",) and changed.apply.started == ("b-0",)
        assert rec2.wait_settled(10)
        final = pids(rec2)
        assert final["a-1"] == first["a-1"] and final["b-0"] != first["b-0"]
        rec = rec2
    finally:
        stopped = rec.stop_all(timeout_s=10)
    assert sorted(stopped) == ["a-0", "a-1", "b-0"]
    assert not any(pid_alive(p) for p in final.values())
    assert read_state(tmp_path / "state") == []


def test_reconcile_errors_are_values(tmp_path):
    from gpu_sharing.errors import OperationError

    def broken(config, **kw):
        raise OperationError("sizing failed: models[0].config_json missing")
    rec = new_reconciler(tmp_path, RecordingBackend({0: C.CPX}), demands=broken)
    report = rec.reconcile_once()
    assert not report.ok and "config_json" in report.errors[0] and rec.last_report is report


def test_adopt_leaves_unidentifiable_pids_alone(tmp_path):
    import subprocess
    from gpu_sharing.runtime.state_file import StateEntry, write_state
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        write_state(tmp_path / "state", [StateEntry(
            instance_id="a-0", model="a", replica=0, fingerprint="x", served_names=("a",), partitions=("0.0",),
            hip_indices=(0,), memory_bytes_per_rank=1, tp=1, pid=stranger.pid, pgid=stranger.pid, port=21150,
            url="http://127.0.0.1:21150", argv=("vllm", "serve", "a"), started_at=0.0, state="READY")])
        rec = new_reconciler(tmp_path, RecordingBackend({0: C.CPX}))
        assert rec.adopt() == [] and rec.statuses() == []
        rec.stop_all(timeout_s=1)
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_running_instances_skips_dead_and_foreign_entries(tmp_path):
    import subprocess
    from gpu_sharing.runtime.state_file import StateEntry, write_state
    argv = (sys.executable, "-c", "import time; time.sleep(60)", "ours")
    ours = subprocess.Popen(list(argv), start_new_session=True)
    try:
        def e(iid, pid, argv, gpu=0):
            return StateEntry(instance_id=iid, model="a", replica=0, fingerprint="f", served_names=("a",),
                              partitions=(f"{gpu}.1",), hip_indices=(1,), memory_bytes_per_rank=7, tp=1, pid=pid,
                              pgid=pid, port=21190, url="http://127.0.0.1:21190", argv=argv, started_at=0.0,
                              state="READY")
        write_state(tmp_path, [e("live-0", ours.pid, argv), e("foreign-0", ours.pid, ("other",)),
                               e("dead-0", None, argv), e("gone-gpu-0", ours.pid, argv, gpu=9)])
        got = observe.running_instances(config(), RecordingBackend({0: C.CPX}).inventory(), tmp_path)
        assert [(r.instance_id, str(r.partitions[0]), r.memory_bytes_per_rank) for r in got] == [("live-0", "0.1", 7)]
    finally:
        ours.kill()
        ours.wait()


class RecordingStore:
    """A MeasuredStore that keeps what it is told (the file store has its own tests in tests/sizing)."""

    def __init__(self):
        self.recorded = []

    def load(self):
        return None

    def version(self):
        return len(self.recorded)

    def record(self, model, tp, bytes_per_rank):
        self.recorded.append((model.name, tp, bytes_per_rank))


def test_measured_size_recorded_from_backend_process_list(tmp_path):
    from gpu_sharing.hardware.inventory import GpuProcess
    store = RecordingStore()
    backend = RecordingBackend({0: C.CPX})
    cfg = Config.model_validate({"version": "v1", "models": [{"name": "b", "source": "org/b", "config_json": QWEN,
                                                              "max_model_len": 1024}],
                                 "vllm": {"port_range": [21300, 21399], "stop_grace_s": 2}})

    def health(url):  # READY only once the backend lists the process's VRAM, like a loaded vLLM
        st = rec.statuses()[0]
        backend.processes[0] = (GpuProcess(st.pid, "python", 6 << 30), GpuProcess(999999, "stranger", 1 << 30))
        return True
    rec = Reconciler(cfg, backend, state_dir=tmp_path / "state", health_checker=health, measured=store,
                     launches=fake_launch_builder)
    try:
        assert rec.reconcile_once().ok and rec.wait_settled(10)
        rec.tick()
        assert store.recorded == [("b", 1, 6 << 30)]
    finally:
        rec.stop_all(timeout_s=5)
