"""Kubernetes and KServe names made from model names: deterministic, valid, never colliding.

Rules, from the sources:
- KServe's admission webhook accepts an InferenceService name only if it matches
  ``[a-z]([-a-z0-9]*[a-z0-9])?`` (kserve/kserve commit 00ff000547e7fc8a98ef0edb165a5d7cd1610e94,
  pkg/apis/serving/v1beta1/inference_service_validation.go, ``IsvcNameFmt``). The CRD schema
  and the SDK accept dots, so ``llama-3.1-70b`` passes them and fails only there.
- The webhook checks no length, but the controller builds the host name label
  ``<name>-predictor-<namespace>`` and fails to reconcile when it exceeds a DNS label's 63
  characters (kserve/kserve#4807, "must be no more than 63 characters"; issue
  opendatahub-io/odh-dashboard#3062 shows the same failure). So the usable length is
  63 - len("-predictor-") - len(namespace): 45 in ``default``.
- Kubernetes object names are DNS-1123 labels/subdomains (k8s.io/apimachinery
  pkg/util/validation/validation.go); a name valid for KServe is also one.
A name that must be shortened keeps a prefix and gets ``-<6 hex of sha256>`` of the model
name, so it stays deterministic. Two models that map to one name are refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

from gpu_sharing.errors import UserError

ISVC_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_MAX = 63
PREDICTOR_HOST_INFIX = "-predictor-"


def isvc_name_limit(namespace: str) -> int:
    """Longest InferenceService name whose predictor host label fits 63 characters."""
    return min(DNS_LABEL_MAX, DNS_LABEL_MAX - len(PREDICTOR_HOST_INFIX) - len(namespace))


def isvc_name(model_name: str, namespace: str) -> str:
    """``llama-3.1-70b`` -> ``llama-3-1-70b``; ``Qwen2.5_7B`` -> ``qwen2-5-7b``; ``7b`` -> ``m-7b``."""
    limit = isvc_name_limit(namespace)
    if limit < 8:
        raise UserError(f"namespace {namespace!r} is too long: InferenceService names would get {limit} characters")
    text = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if not text or not text[0].isalpha():
        text = f"m-{text}".rstrip("-")
    if len(text) > limit:
        digest = hashlib.sha256(model_name.encode()).hexdigest()[:6]
        text = f"{text[: limit - 7].rstrip('-')}-{digest}"
    assert ISVC_NAME_RE.match(text) and len(text) <= limit, text
    return text


def isvc_names(model_names: Iterable[str], namespace: str) -> dict[str, str]:
    """Model name -> InferenceService name; a UserError when two models would share one."""
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in model_names:
        made = isvc_name(name, namespace)
        if made in owner and owner[made] != name:
            raise UserError(f"models {owner[made]!r} and {name!r} both become the InferenceService name {made!r} "
                            f"(KServe allows only [a-z]([-a-z0-9]*[a-z0-9])?); rename one of them")
        owner[made] = name
        out[name] = made
    return out
