"""Identical model entries share one vLLM process with several served names."""

from __future__ import annotations

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
