"""InferenceService names: KServe's webhook rule, the host-label length limit, determinism, collisions."""

from __future__ import annotations

import re

import pytest

from gpu_sharing.errors import UserError
from gpu_sharing.reconcile.kube_names import isvc_name, isvc_name_limit, isvc_names

WEBHOOK = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # kserve inference_service_validation.go IsvcNameFmt


@pytest.mark.parametrize("model, expect", [
    ("llama-3.1-70b", "llama-3-1-70b"),
    ("qwen2.5-7b", "qwen2-5-7b"),
    ("Qwen2.5_7B", "qwen2-5-7b"),
    ("7b-chat", "m-7b-chat"),
    ("a:b", "a-b"),
    ("x--", "x"),
])
def test_names_from_model_names(model, expect):
    assert isvc_name(model, "default") == expect


def test_long_names_are_cut_with_a_hash_and_fit_the_host_label():
    long = "meta-llama.Llama-3.1-405B-Instruct-FP8-dynamic-with-a-very-long-suffix"
    for ns in ("default", "a-much-longer-namespace-name"):
        name = isvc_name(long, ns)
        assert WEBHOOK.match(name) and isvc_name_limit(ns) - 1 <= len(name) <= isvc_name_limit(ns)
        assert len(f"{name}-predictor-{ns}") <= 63  # kserve/kserve#4807
        assert name == isvc_name(long, ns)  # deterministic
    assert isvc_name(long + "x", "default") != isvc_name(long, "default")
    assert isvc_name_limit("default") == 45


def test_collisions_are_refused_and_distinct_names_kept():
    assert isvc_names(["a.b", "a-c"], "default") == {"a.b": "a-b", "a-c": "a-c"}
    with pytest.raises(UserError, match="'a.b' and 'a_b' both become"):
        isvc_names(["a.b", "a_b"], "default")
