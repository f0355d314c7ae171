"""CU masks for instances sharing a partition, through gpu_sharing.isolation; config diff fingerprints."""

from __future__ import annotations

import pytest

from gpu_sharing.config.schema import Config
from gpu_sharing.errors import UserError
from gpu_sharing.hardware.modes import ComputePartitionMode as C
from gpu_sharing.isolation.cu_masks import mask_cus, xcc_spread
from gpu_sharing.reconcile.fingerprint import model_fingerprint
from gpu_sharing.reconcile.cu_sharing import cu_masks_for

from reconcile_fakes import RecordingBackend, make_plan, placement


def cfg(share_a=0.5, share_b=0.5):
    return Config.model_validate({"version": "v1", "models": [
        {"name": "a", "source": "org/a", "limits": {"compute_share": share_a}},
        {"name": "b", "source": "org/b", "limits": {"compute_share": share_b}},
        {"name": "c", "source": "org/c"}]})


def test_new_instance_gets_mask_disjoint_from_running_neighbour():
    inv = RecordingBackend({0: C.QPX}).inventory()  # 76 CUs, 2 XCCs per partition
    running, new, alone = placement("a-0", ((0, 1),)), placement("b-0", ((0, 1),)), placement("c-0", ((0, 2),))
    plan = make_plan(to_start=(new, alone))
    plan = plan.__class__(**{**plan.__dict__, "placements": (running, new, alone)})
    # a-0 runs with the CUs it got when it started (not what a recomputation would give it today).
    running_mask = "0:" + ",".join(str(c) for c in range(38, 76))
    result = cu_masks_for(plan, inv, cfg(), {"a-0": running_mask})
    assert set(result.masks) == {"b-0"} and result.restarts == ()  # an instance alone gets none
    gpu_part, _ = result.masks["b-0"].split(":")
    assert gpu_part == "0"
    new_cus, old_cus = mask_cus(result.masks["b-0"]), mask_cus(running_mask)
    assert len(new_cus) == 38 and not new_cus & old_cus
    assert xcc_spread(new_cus, 2) == [19, 19]


def test_newcomer_without_free_cus_restarts_the_running_neighbour_with_a_disjoint_mask():
    inv = RecordingBackend({0: C.QPX}).inventory()
    running, new = placement("a-0", ((0, 1),)), placement("b-0", ((0, 1),))
    plan = make_plan(to_start=(new,))
    plan = plan.__class__(**{**plan.__dict__, "placements": (running, new)})
    result = cu_masks_for(plan, inv, cfg(), {"a-0": None})  # a-0 ran alone: no mask, every CU
    assert result.restarts == ("a-0",) and "b-0" in result.reasons["a-0"]
    a, b = mask_cus(result.masks["a-0"]), mask_cus(result.masks["b-0"])
    assert len(a) == len(b) == 38 and not a & b


def test_newcomer_without_a_share_of_its_own_never_restarts_a_running_neighbour():
    """Admitting a small model (a demand-driven cold start) next to a running 70B must not restart the 70B:
    a newcomer with no compute_share shares the CUs unmasked."""
    inv = RecordingBackend({0: C.QPX}).inventory()
    running, new = placement("c-0", ((0, 1),)), placement("c-1", ((0, 1),))
    plan = make_plan(to_start=(new,))
    plan = plan.__class__(**{**plan.__dict__, "placements": (running, new)})
    result = cu_masks_for(plan, inv, cfg(), {"c-0": None})
    assert result.restarts == () and result.masks == {}


def test_impossible_shares_raise_user_error():
    inv = RecordingBackend({0: C.QPX}).inventory()
    a, b = placement("a-0", ((0, 1),)), placement("b-0", ((0, 1),))
    plan = make_plan(to_start=(a, b))
    with pytest.raises(UserError, match="0.1"):
        cu_masks_for(plan, inv, cfg(0.8, 0.8))


def test_fingerprint_changes_only_with_restart_relevant_settings():
    base = cfg()
    other = Config.model_validate({**base.model_dump(mode="json"), "vllm": {"log_backups": 9, "max_restarts": 9}})
    assert model_fingerprint(base.models[0], base) == model_fingerprint(other.models[0], other)
    changed = Config.model_validate({**base.model_dump(mode="json"), "vllm": {"vllm_args": {"block-size": 32}}})
    assert model_fingerprint(base.models[0], base) != model_fingerprint(changed.models[0], changed)
