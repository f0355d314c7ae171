"""Issue 14 item 4: a compute-partition change under the kernel's KFD rule (simulator/node_modes.py kfd_blockers).

2 x MI300X: on-spx serves on GPU 0; a config change puts GPU 1 in CPX for a second model.
- strict kernel (default), or launcher direct: every instance holds a KFD context on every GPU, so the
  change needs a node-wide drain: `plan` says so, apply stops on-spx, repartitions, starts both.
- cgroup_exclusion kernel with launcher systemd-run (DeviceAllow of the instance's render node; the
  fake systemd-run on PATH): on-spx keeps serving, same pid, while GPU 1 is repartitioned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.cli.main import main as cli
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.reconcile.reconciler import Reconciler
from simulator.node import SimNode

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def config_text(port: int, kfd: str, launcher: str, with_cpx: bool) -> str:
    cpx_gpu = "\n  - {devices: [1], compute_partition: CPX}" if with_cpx else "\n  - {devices: [1], compute_partition: SPX}"
    cpx_model = (f"\n  - {{name: on-cpx, source: org/b, config_json: {QWEN}, max_model_len: 1024, gpus: [1]}}"
                 if with_cpx else "")
    return f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}, kfd_mode_switch: {kfd}, launcher: {launcher}}}
gpus:
  - {{devices: [0], compute_partition: SPX}}{cpx_gpu}
models:
  - {{name: on-spx, source: org/a, config_json: {QWEN}, max_model_len: 2048, gpus: [0]}}{cpx_model}
vllm: {{port_range: [{port}, {port + 20}], stop_grace_s: 5}}
"""


@pytest.mark.parametrize("kfd, launcher, drains", [
    ("strict", "direct", True), ("cgroup_exclusion", "direct", True), ("cgroup_exclusion", "systemd-run", False)])
def test_compute_change_drains_only_when_the_kernel_needs_it(tmp_path, monkeypatch, capsys, kfd, launcher, drains):
    monkeypatch.setenv("PATH", f"{ROOT / 'simulator' / 'bin'}:{__import__('os').environ['PATH']}")
    SimNode.create(tmp_path / "sim", "MI300X", 2, reload_time_s=0, kfd_mode_switch=kfd)
    node = SimNode.open(tmp_path / "sim")
    port = 27200 + 30 * ["direct", "systemd-run"].index(launcher) + 60 * (kfd == "strict")
    rec = Reconciler(parse_config_text(config_text(port, kfd, launcher, False), "kfd.yaml"), SimulatedBackend(node),
                     state_dir=tmp_path / "state", simulate=True, sim_state_dir=tmp_path / "sim")
    try:
        assert rec.reconcile_once().ok
        assert rec.wait_settled(timeout_s=20)
        before = {s.instance_id: s.pid for s in rec.statuses()}
        # systemd-run's DeviceAllow leaves the engine a KFD context on GPU 0's render node only
        assert [p["device_cgroup"] for p in node.processes()] == ([[0]] if launcher == "systemd-run" else [None])
        text = config_text(port, kfd, launcher, True)
        cfg_path = tmp_path / "kfd.yaml"
        cfg_path.write_text(text)

        # `plan` shows the drain before anything is touched
        rc = cli(["plan", "-c", str(cfg_path), "--simulate", "--sim-state", str(tmp_path / "sim"),
                  "--state-dir", str(tmp_path / "state"), "--json"])
        shown = json.loads(capsys.readouterr().out)
        assert rc == 0 and bool(shown["drain"]) == drains, shown["drain"]

        rec.update_config(parse_config_text(text, "kfd.yaml"))
        report = rec.reconcile_once()
        assert report.ok, report.errors
        assert node.state()["gpus"][1]["compute_mode"] == "CPX"
        assert report.apply.stopped == (("on-spx-0",) if drains else ())
        assert rec.wait_settled(timeout_s=20)
        after = {s.instance_id: (s.state.value, s.pid) for s in rec.statuses()}
        assert {i: st for i, (st, _) in after.items()} == {"on-spx-0": "READY", "on-cpx-0": "READY"}
        assert (after["on-spx-0"][1] == before["on-spx-0"]) is (not drains)
    finally:
        rec.stop_all(timeout_s=10)


@pytest.mark.parametrize("kfd", ["strict", "cgroup_exclusion"])
def test_a_simulated_node_is_created_with_the_configs_kernel(tmp_path, capsys, kfd):
    """`--simulate` on an empty sim dir creates the node the config describes, kfd_mode_switch included."""
    cfg = tmp_path / "kfd.yaml"
    cfg.write_text(config_text(27400, kfd, "direct", False))
    assert cli(["plan", "--simulate", "--sim-state", str(tmp_path / "sim"), "-c", str(cfg)]) == 0
    assert SimNode.open(tmp_path / "sim").state()["kfd_mode_switch"] == kfd
