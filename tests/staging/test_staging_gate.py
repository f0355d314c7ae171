"""With vllm.stage_weights an instance stays in STAGING until its weights are downloaded and verified."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_staging import make_model  # noqa: E402

from gpu_sharing.backends.simulated import SimulatedBackend  # noqa: E402
from gpu_sharing.config.loader import parse_config_text  # noqa: E402
from gpu_sharing.reconcile.reconciler import Reconciler  # noqa: E402
from gpu_sharing.runtime.staging import StageState, StagingManager  # noqa: E402
from simulator.node import SimNode  # noqa: E402

QWEN = ('{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, '
        'num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true, torch_dtype: bfloat16}')


@pytest.mark.integration
def test_instance_waits_for_staging_then_starts(tmp_path):
    SimNode.create(tmp_path / "sim", "MI300X", 1)
    cfg = parse_config_text(f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}}}
models:
  - {{name: hub-model, source: org/hub-model, config_json: {QWEN}, max_model_len: 2048}}
vllm: {{port_range: [25600, 25620], stop_grace_s: 5, stage_weights: true}}
""", "t.yaml")
    release = threading.Event()
    model_dir = make_model(tmp_path / "hub" / "org--hub-model")

    def downloader(model, report):
        report(0, 8000)
        assert release.wait(timeout=20)
        report(8000, 8000)
        return model_dir

    rec = Reconciler(cfg, SimulatedBackend(SimNode.open(tmp_path / "sim")), state_dir=tmp_path / "state",
                     simulate=True, sim_state_dir=tmp_path / "sim",
                     staging_manager=StagingManager(downloader=downloader))
    try:
        rec.reconcile_once()
        rec.tick()  # the gate starts staging on the first STAGING tick
        assert rec.staging.manager.wait_ready("hub-model", timeout_s=0.5) is False  # held back by the test
        for _ in range(20):  # ticks while the download is held back
            rec.tick()
        st = rec.statuses()[0]
        assert st.state.value == "STAGING" and st.pid is None
        assert rec.staging.manager.state("hub-model") is StageState.DOWNLOADING
        release.set()
        assert rec.wait_settled(timeout_s=20)
        st = rec.statuses()[0]
        assert st.state.value == "READY" and st.pid is not None
    finally:
        release.set()
        rec.stop_all(timeout_s=10)
