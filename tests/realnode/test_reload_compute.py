"""Issue 14 item 5: after a memory-mode change and driver reload, every GPU of the hive gets its compute
mode set again (the simulated kernel comes back in its auto compute mode for the new NPS mode)."""

from __future__ import annotations

import pytest

from gpu_sharing.backends.simulated import SimulatedBackend
from gpu_sharing.config.loader import parse_config_text
from gpu_sharing.reconcile.reconciler import Reconciler
from simulator.node import SimNode

pytestmark = pytest.mark.integration
QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


def test_memory_only_change_reasserts_the_compute_mode_after_the_reload(tmp_path):
    SimNode.create(tmp_path / "sim", "MI300X", 2, compute_mode="CPX", memory_mode="NPS1", reload_time_s=0)
    node = SimNode.open(tmp_path / "sim")
    text = f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}, allow_driver_reload: true}}
gpus:
  - {{devices: [0, 1], compute_partition: CPX, memory_partition: NPS4}}
models:
  - {{name: m, source: org/m, config_json: {QWEN}, max_model_len: 1024}}
vllm: {{port_range: [27300, 27320], stop_grace_s: 5}}
"""
    rec = Reconciler(parse_config_text(text, "nps.yaml"), SimulatedBackend(node), state_dir=tmp_path / "state",
                     simulate=True, sim_state_dir=tmp_path / "sim")
    try:
        report = rec.reconcile_once()
        assert report.ok, report.errors
        # NPS4 on MI300X: the kernel's auto rule brings the GPUs up in QPX; CPX must be set again
        assert [(g["compute_mode"], g["memory_mode"]) for g in node.state()["gpus"]] == [("CPX", "NPS4")] * 2
        assert rec.wait_settled(timeout_s=20)
        assert [s.state.value for s in rec.statuses()] == ["READY"]
    finally:
        rec.stop_all(timeout_s=10)
