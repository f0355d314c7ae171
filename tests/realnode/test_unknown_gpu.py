"""Issue 14 item 6: a GPU whose readings fail is left as it is: what runs there keeps running, the
others are reconciled, and the report names the GPU and the reason."""

from __future__ import annotations

import pytest

from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.reconcile.reconciler import Reconciler
from simulator.node import SimNode

pytestmark = pytest.mark.integration
QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def test_instances_on_an_unreadable_gpu_keep_running(tmp_path):
    SimNode.create(tmp_path / "sim", "MI300X", 2, reload_time_s=0)
    node = SimNode.open(tmp_path / "sim")
    text = f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}}}
models:
  - {{name: a, source: org/a, config_json: {QWEN}, max_model_len: 1024, gpus: [0]}}
  - {{name: b, source: org/b, config_json: {QWEN}, max_model_len: 1024, gpus: [1]}}
vllm: {{port_range: [27350, 27370], stop_grace_s: 5}}
"""
    rec = Reconciler(parse_config_text(text, "u.yaml"), SimulatedBackend(node), state_dir=tmp_path / "state",
                     simulate=True, sim_state_dir=tmp_path / "sim")
    try:
        assert rec.reconcile_once().ok
        assert rec.wait_settled(timeout_s=20)
        before = {s.instance_id: s.pid for s in rec.statuses()}
        node.set_failing_reading(1)
        report = rec.reconcile_once()
        assert any(e.startswith("gpu 1 (0000:22:00.0): readings failed") for e in report.errors), report.errors
        assert report.apply.stopped == () and {s.instance_id: s.pid for s in rec.statuses()} == before
        node.set_failing_reading(1, False)
        again = rec.reconcile_once()
        assert again.ok and again.apply.actions == 0
    finally:
        rec.stop_all(timeout_s=10)
