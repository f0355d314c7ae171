"""The simulator's strict HSA_CU_MASK parser (ROCm docs grammar)."""

from __future__ import annotations

import pytest

from simulator.cu_mask_check import CuMaskError, format_cu_list, parse_hsa_cu_mask


def test_docs_examples_parse():
    assert parse_hsa_cu_mask("0,2-4,7:0-15,32-47", 8) == {
        g: frozenset(list(range(16)) + list(range(32, 48))) for g in (0, 2, 3, 4, 7)
    }
    assert parse_hsa_cu_mask("3-5:0x337F", 8) == {g: frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 12, 13}) for g in (3, 4, 5)}


def test_multiple_sets_are_independent():
    got = parse_hsa_cu_mask("0:0-3;1:4,6", 2)
    assert got == {0: frozenset({0, 1, 2, 3}), 1: frozenset({4, 6})}


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("", "empty"),
        ("0-3", "no ':'"),
        ("0:", "empty CU list"),
        (":0-3", "empty GPU list"),
        ("0:0x0", "0x0"),
        ("0:3-1", "descending"),
        ("0:0-3;", "no ':'"),
        ("0:a", "bad CU item"),
        ("0: 1", "bad CU item"),
        ("1:0-3", "GPU index 1 is not visible"),
        ("0:0-3;0:4", "more than one CU set"),
        ("0:0-99999999", "out of range"),
    ],
)
def test_rejects_what_rocm_would_drop_or_refuse(value, fragment):
    with pytest.raises(CuMaskError) as info:
        parse_hsa_cu_mask(value, 1)
    assert fragment in info.value.message


def test_cu_count_bounds_checked():
    assert parse_hsa_cu_mask("0:0-37", 1, cu_count=38)[0] == frozenset(range(38))
    with pytest.raises(CuMaskError, match="CU 38 does not exist"):
        parse_hsa_cu_mask("0:0-38", 1, cu_count=38)


def test_no_visible_gpu_is_an_error():
    with pytest.raises(CuMaskError, match="sees no GPU"):
        parse_hsa_cu_mask("0:0", 0)


def test_format_round_trips():
    cus = frozenset({0, 1, 2, 3, 8, 10, 11})
    text = format_cu_list(cus)
    assert text == "0-3,8,10-11"
    assert parse_hsa_cu_mask(f"0:{text}", 1)[0] == cus
