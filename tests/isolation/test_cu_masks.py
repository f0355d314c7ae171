"""XCC-spread disjoint CU masks, checked with the simulator's independent ROCm parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_sharing.errors import UserError
from gpu_sharing.isolation import assign_cu_masks, assign_cu_sets
from gpu_sharing.isolation.cu_masks import resolve_cu_counts, xcc_spread
from simulator.cu_mask_check import parse_hsa_cu_mask


def parsed(mask: str, cu_count: int) -> frozenset[int]:
    sets = parse_hsa_cu_mask(mask, 1, cu_count=cu_count)
    assert list(sets) == [0]
    return sets[0]


def test_cpx_two_halves_are_disjoint_19_each():
    masks = assign_cu_masks(cu_count=38, xcc_count=1, requests={"a": 0.5, "b": 0.5})
    a, b = parsed(masks["a"], 38), parsed(masks["b"], 38)
    assert len(a) == len(b) == 19
    assert not a & b


def test_dpx_three_way_split_spreads_over_four_xccs():
    masks = assign_cu_masks(cu_count=152, xcc_count=4, requests={"a": 0.5, "b": 0.25, "c": 0.25})
    sets = {k: parsed(v, 152) for k, v in masks.items()}
    assert {k: len(v) for k, v in sets.items()} == {"a": 76, "b": 38, "c": 38}
    assert xcc_spread(sets["a"], 4) == [19, 19, 19, 19]
    for k in ("b", "c"):
        spread = xcc_spread(sets[k], 4)
        assert max(spread) - min(spread) <= 1 and sum(spread) == 38
    assert sets["a"].isdisjoint(sets["b"]) and sets["b"].isdisjoint(sets["c"]) and sets["a"].isdisjoint(sets["c"])
    # Every XCC is fully used: 38 CUs per XCC in a 152-CU, 4-XCC partition.
    assert xcc_spread(sets["a"] | sets["b"] | sets["c"], 4) == [38, 38, 38, 38]


def test_alone_without_limits_gets_no_mask_and_tp_lists_all_gpus():
    assert assign_cu_masks(cu_count=38, xcc_count=1, requests={"solo": None}) == {}
    assert assign_cu_masks(cu_count=38, xcc_count=1, requests={"solo": 1.0}) == {}
    masks = assign_cu_masks(cu_count=76, xcc_count=2, requests={"a": 0.5, "b": None}, visible_gpus={"a": 4})
    assert masks["a"].startswith("0-3:")
    assert parse_hsa_cu_mask(masks["a"], 4).keys() == {0, 1, 2, 3}


def test_none_is_equal_split_of_the_rest_and_int_is_exact():
    counts = resolve_cu_counts(cu_count=38, requests={"a": 0.5, "b": None, "c": None})
    assert counts == {"a": 19, "b": 10, "c": 9}
    assert resolve_cu_counts(cu_count=304, requests={"a": 100, "b": None}) == {"a": 100, "b": 204}


def test_share_rounds_down_never_above_request():
    counts = resolve_cu_counts(cu_count=38, requests={"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert counts == {"a": 12, "b": 12, "c": 12}


@pytest.mark.parametrize("requests, fragment", [
    ({"a": 0.75, "b": 0.5}, "sum to 1.25 > 1"),
    ({"a": 0.01}, "rounds to 0 CUs"),
    ({"a": 39}, "cu_count 39 is larger than the partition (38 CUs)"),
    ({"a": 30, "b": 10}, "requested 40 CUs but the partition has 38"),
    ({f"i{n}": None for n in range(39)}, "39 instances cannot share 38 CUs"),
    ({"a": 37, "b": None, "c": None}, "1 CUs left"),
    ({"a": 0}, "at least 1"),
])
def test_impossible_sets_raise_user_error_with_numbers(requests, fragment):
    with pytest.raises(UserError) as info:
        assign_cu_masks(cu_count=38, xcc_count=1, requests=requests)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_same_input_same_masks():
    req = {"x": 0.3, "y": None, "z": 7}
    assert assign_cu_masks(cu_count=304, xcc_count=8, requests=req) == assign_cu_masks(
        cu_count=304, xcc_count=8, requests=dict(req))


SHAPES = [(38, 1), (76, 2), (152, 4), (304, 8), (228, 6), (256, 8), (128, 4), (32, 1), (64, 2)]


@st.composite
def share_sets(draw):
    cu_count, xcc_count = draw(st.sampled_from(SHAPES))
    n = draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from(["share", "count", "none"]), min_size=n, max_size=n))
    requests: dict[str, float | int | None] = {}
    for i, kind in enumerate(kinds):
        if kind == "share":
            requests[f"i{i}"] = draw(st.floats(0.001, 1.0, allow_nan=False))
        elif kind == "count":
            requests[f"i{i}"] = draw(st.integers(1, cu_count))
        else:
            requests[f"i{i}"] = None
    return cu_count, xcc_count, requests


@settings(max_examples=300, deadline=None)
@given(share_sets())
def test_every_mask_parses_is_nonempty_disjoint_and_spread(case):
    cu_count, xcc_count, requests = case
    try:
        sets = assign_cu_sets(cu_count=cu_count, xcc_count=xcc_count, requests=requests)
    except UserError as e:
        counts_ok = True
        try:
            resolve_cu_counts(cu_count=cu_count, requests=requests)
        except UserError:
            counts_ok = False
        assert not counts_ok, f"counts resolved but assignment failed: {e}"
        return
    masks = assign_cu_masks(cu_count=cu_count, xcc_count=xcc_count, requests=requests)
    seen: set[int] = set()
    for iid, cus in sets.items():
        assert cus, iid
        assert not cus & seen
        seen |= cus
        spread = xcc_spread(cus, xcc_count)
        assert max(spread) - min(spread) <= 1, (iid, spread)
        if iid in masks:
            assert parsed(masks[iid], cu_count) == cus
        else:
            assert len(cus) == cu_count
    assert seen <= set(range(cu_count))
    # The rounding rule never grants more than a float share asked for.
    for iid, req in requests.items():
        if isinstance(req, float):
            assert len(sets[iid]) <= req * cu_count + 1e-6


@pytest.mark.parametrize("model", ["MI300X", "MI325X", "MI350X", "MI300A"])
def test_every_catalog_partition_shape_takes_a_half_half_split(model):
    from gpu_sharing.hardware.catalog import get_spec

    spec = get_spec(model)
    for mode in spec.compute_modes():
        cus, xccs = spec.cus_per_partition(mode), spec.xccs_per_partition(mode)
        sets = assign_cu_sets(cu_count=cus, xcc_count=xccs, requests={"a": 0.5, "b": 0.5})
        assert not sets["a"] & sets["b"]
        for s in sets.values():
            spread = xcc_spread(s, xccs)
            assert max(spread) - min(spread) <= 1 and sum(spread) == cus // 2


def test_mi300x_dpx_partition_has_four_xccs_in_the_catalog():
    from gpu_sharing.hardware.catalog import get_spec
    from gpu_sharing.hardware.modes import ComputePartitionMode

    spec = get_spec("MI300X")
    assert (spec.cus_per_partition(ComputePartitionMode.DPX), spec.xccs_per_partition(ComputePartitionMode.DPX)) == (152, 4)
