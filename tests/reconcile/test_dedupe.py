"""Identical model entries share one vLLM process with several served names."""

from __future__ import annotations

import pytest

from gpu_sharing.config.schema import ModelSettings
from gpu_sharing.reconcile.dedupe import group_identical


def _model(name: str, **kw) -> ModelSettings:
    base = {"name": name, "source": "meta-llama/Llama-3.1-8B-Instruct"}
    base.update(kw)
    return ModelSettings(**base)


def test_two_names_same_weights_become_one_group_with_both_served_names():
    groups = group_identical([_model("chat", aliases=["assistant"]), _model("chat-b")])
    assert len(groups) == 1
    group = groups[0]
    assert group.name == "chat"
    assert group.member_names == ("chat", "chat-b")
    assert group.served_names == ("chat", "assistant", "chat-b")
    assert group.is_shared
    assert group.route_table() == {"chat": "chat", "assistant": "chat", "chat-b": "chat"}


def test_different_max_model_len_gives_two_groups():
    groups = group_identical([_model("a", max_model_len=4096), _model("b", max_model_len=8192)])
    assert [g.member_names for g in groups] == [("a",), ("b",)]
    assert not groups[0].is_shared


def test_other_process_options_split_groups():
    for option in ({"revision": "abc"}, {"quantization": "fp8"}, {"dtype": "float16"},
                   {"env": {"X": "1"}}, {"source": "other/model"}):
        groups = group_identical([_model("a"), _model("b", **option)])
        assert len(groups) == 2, option


def test_replicas_and_priority_take_the_max_not_the_sum():
    groups = group_identical([_model("a", replicas=2, priority=5), _model("b", replicas=3, priority=1),
                              _model("c", replicas=0, priority=9)])
    (group,) = groups
    assert group.replicas == 3
    assert group.priority == 9
    settings = group.settings()
    assert settings.name == "a" and settings.replicas == 3 and settings.priority == 9


def test_groups_keep_first_member_order():
    groups = group_identical([_model("x", max_model_len=1024), _model("y"), _model("z", max_model_len=1024)])
    assert [g.member_names for g in groups] == [("x", "z"), ("y",)]


@pytest.mark.integration
def test_two_names_one_process_both_answered_through_the_router(tmp_path):
    """Acceptance: two identical entries -> one fake vLLM serving both names; the router answers both."""
    import asyncio
    import json as _json

    from aiohttp.test_utils import TestClient, TestServer

    from gpu_sharing.backends.simulated import SimulatedBackend
    from gpu_sharing.config.loader import parse_config_text
    from gpu_sharing.daemon.http_api import make_app
    from gpu_sharing.daemon.service import Daemon
    from gpu_sharing.reconcile.reconciler import Reconciler
    from simulator.node import SimNode

    qwen = ("{model_type: qwen2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, "
            "num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true}")
    cfg = parse_config_text(f"""
version: v1
node: {{simulator: {{startup_time_s: 0.1}}}}
models:
  - {{name: chat-a, source: org/same, config_json: {qwen}, max_model_len: 2048}}
  - {{name: chat-b, source: org/same, config_json: {qwen}, max_model_len: 2048}}
vllm: {{port_range: [25300, 25320], stop_grace_s: 5}}
""", "t.yaml")
    SimNode.create(tmp_path / "sim", "MI300X", 1)
    rec = Reconciler(cfg, SimulatedBackend(SimNode.open(tmp_path / "sim")), state_dir=tmp_path / "state",
                     simulate=True, sim_state_dir=tmp_path / "sim")
    daemon = Daemon(str(tmp_path / "t.yaml"), rec)
    try:
        daemon.reconcile_pass()
        assert rec.wait_settled(timeout_s=20)
        daemon.tick_pass()
        statuses = rec.statuses()
        assert len(statuses) == 1 and set(statuses[0].served_names) == {"chat-a", "chat-b"}

        async def ask() -> list[str]:
            await daemon.router.start()
            app = make_app(cfg.api, status=daemon.status_json, registry=daemon.registry, router=daemon.router,
                           reload=daemon.reload, token=None)
            async with TestClient(TestServer(app)) as client:
                out = []
                for name in ("chat-a", "chat-b"):
                    r = await client.post("/v1/chat/completions", json={"model": name, "messages": [
                        {"role": "user", "content": "hi"}]})
                    assert r.status == 200
                    out.append(_json.loads(await r.text())["model"])
            await daemon.router.close()
            return out

        assert asyncio.run(ask()) == ["chat-a", "chat-a"]  # vLLM answers with its first served name
    finally:
        rec.stop_all(timeout_s=10)
