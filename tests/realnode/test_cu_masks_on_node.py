"""Issue 14 items 1, 2 and 7: CU masks land on the instance's own device and co-tenants never overlap.

A simulated 2 x MI300X in CPX: GPU 1's partitions are node devices 8-15. The masks are read from the
environment of the processes that hold the GPU (the fake vLLM's EngineCore children, /proc/<pid>/environ)
and resolved with ROCm's index rules (simulator/cu_mask_check.py D1-D4), not from the planner's intent.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.reconcile.reconciler import Reconciler
from gpu_sharing.runtime.spawner import group_pids
from simulator.cu_mask_check import effective_cu_masks, process_devices
from simulator.node import SimNode
from simulator.vllm_engine import accessible_devices

pytestmark = pytest.mark.integration

QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def config_text(port: int, shares: dict[str, float | None]) -> str:
    models = "\n".join(
        f"  - {{name: {n}, source: org/{n}, config_json: {QWEN}, max_model_len: 1024, gpus: [1]"
        + (f", limits: {{compute_share: {s}}}}}" if s is not None else "}") for n, s in shares.items())
    return f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}}}
gpus:
  - {{devices: [0, 1], compute_partition: CPX}}
models:
{models}
vllm: {{port_range: [{port}, {port + 20}], stop_grace_s: 5}}
"""


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def engine_masks(rec: Reconciler, node: SimNode) -> dict[str, tuple[list[int], dict[int, frozenset[int]]]]:
    """instance -> (node devices it computes on, {node device: CUs} its mask restricts), per GPU process."""
    holders = {p["pid"] for p in node.processes()}
    out = {}
    for st in rec.statuses():
        handle = rec.supervisor.handle_of(st.instance_id)
        pids = [p for p in group_pids(handle.pgid) if p in holders]
        assert pids, f"{st.instance_id}: no process of its group holds VRAM"
        env = environ(pids[0])
        acc = accessible_devices(env, node)
        out[st.instance_id] = (process_devices(env, acc), effective_cu_masks(env, acc))
    return out


def assert_own_and_disjoint(masks) -> None:
    for iid, (devices, cus) in masks.items():
        for d in devices:
            assert d in cus, f"{iid} computes on node device {d} but its HSA_CU_MASK restricts {sorted(cus)}"
        assert set(cus) <= set(devices), f"{iid}'s mask restricts another tenant's device: {sorted(cus)}"
    for (a, (da, ca)), (b, (db, cb)) in combinations(masks.items(), 2):
        for d in set(da) & set(db):
            assert not ca[d] & cb[d], f"{a} and {b} share CUs {sorted(ca[d] & cb[d])} on node device {d}"


def test_masks_apply_to_own_device_and_newcomer_gets_free_cus(tmp_path):
    SimNode.create(tmp_path / "sim", "MI300X", 2, compute_mode="CPX", reload_time_s=0)
    node = SimNode.open(tmp_path / "sim")
    port = 27100
    cfg = parse_config_text(config_text(port, {"qb": 0.5, "qc": 0.25}), "masks.yaml")
    rec = Reconciler(cfg, SimulatedBackend(node), state_dir=tmp_path / "state", simulate=True,
                     sim_state_dir=tmp_path / "sim")
    try:
        report = rec.reconcile_once()
        assert report.ok, report.errors
        assert rec.wait_settled(timeout_s=30)
        parts = {s.instance_id: s.partitions for s in rec.statuses()}
        assert parts["qb-0"] == parts["qc-0"] and parts["qb-0"][0].startswith("1."), parts
        assert_own_and_disjoint(engine_masks(rec, node))

        # A newcomer on the same partition: it gets CUs nobody running holds, or a neighbour restarts.
        before = {s.instance_id: s.pid for s in rec.statuses()}
        rec.update_config(parse_config_text(config_text(port, {"qb": 0.5, "qc": 0.25, "qa": 0.25}), "masks.yaml"))
        report = rec.reconcile_once()
        assert report.ok, report.errors
        assert rec.wait_settled(timeout_s=30)
        masks = engine_masks(rec, node)
        assert set(masks) == {"qa-0", "qb-0", "qc-0"}
        assert len({s.partitions for s in rec.statuses()}) == 1
        assert_own_and_disjoint(masks)
        assert {s.instance_id: s.pid for s in rec.statuses() if s.instance_id != "qa-0"} == before  # no restart
    finally:
        rec.stop_all(timeout_s=10)


def test_rebalance_is_shown_by_plan_and_restarts_only_the_named_neighbour(tmp_path, capsys):
    import json

    from gpu_sharing.cli.main import main as cli

    SimNode.create(tmp_path / "sim", "MI300X", 2, compute_mode="CPX", reload_time_s=0)
    node = SimNode.open(tmp_path / "sim")
    port = 27150
    alone = config_text(port, {"qa": None})  # qa alone, no limits: no mask, it holds every CU of its partition
    rec = Reconciler(parse_config_text(alone, "m.yaml"), SimulatedBackend(node), state_dir=tmp_path / "state",
                     simulate=True, sim_state_dir=tmp_path / "sim")
    try:
        assert rec.reconcile_once().ok and rec.wait_settled(timeout_s=30)
        pid = rec.statuses()[0].pid
        both = config_text(port, {"qa": None, "qb": 0.5})  # qa unchanged; qb needs half of qa's partition
        (tmp_path / "m.yaml").write_text(both)
        assert cli(["plan", "-c", str(tmp_path / "m.yaml"), "--simulate", "--sim-state", str(tmp_path / "sim"),
                    "--state-dir", str(tmp_path / "state"), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert list(shown["cu_mask_restarts"]) == ["qa-0"] and "qb-0" in shown["cu_mask_restarts"]["qa-0"]

        rec.update_config(parse_config_text(both, "m.yaml"))
        report = rec.reconcile_once()
        assert report.ok, report.errors
        assert report.apply.stopped == ("qa-0",) and set(report.apply.started) == {"qa-0", "qb-0"}
        assert rec.wait_settled(timeout_s=30)
        assert len({s.partitions for s in rec.statuses()}) == 1
        assert {s.instance_id: s.pid for s in rec.statuses()}["qa-0"] != pid
        assert_own_and_disjoint(engine_masks(rec, node))
    finally:
        rec.stop_all(timeout_s=10)
