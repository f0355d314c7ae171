"""The configuration model's partition fillings (mip._fillings) against a brute force written
apart from it: every maximal filling, and nothing else, whatever the pruning does."""

from __future__ import annotations

import itertools
import random

from test_planner import launcher_accepts

from gpu_sharing.planner.mip import _fillings, _Group
from gpu_sharing.planner.problem import SHARE_UNITS


def _accepted(counts, groups: list[_Group], cus: int) -> bool:
    """What the launcher says of these tenants on a partition of ``cus`` CUs."""
    return launcher_accepts(cus, {f"{j}-{n}": g.share for j, (c, g) in enumerate(zip(counts, groups)) for n in range(c)})


def _brute(groups: list[_Group], capacity: int, cus: int) -> set[tuple[int, ...]]:
    fits = []
    for counts in itertools.product(*(range(g.ranks + 1) for g in groups)):
        used = sum(c * g.bytes_per_rank for c, g in zip(counts, groups))
        share = sum(c * g.share_units for c, g in zip(counts, groups))
        if used <= capacity and share <= SHARE_UNITS and _accepted(counts, groups, cus):
            fits.append((counts, capacity - used, SHARE_UNITS - share))
    return {counts for counts, left, share_left in fits
            if not any(c < g.ranks and g.bytes_per_rank <= left and g.share_units <= share_left
                       and _accepted(tuple(x + (i == j) for i, x in enumerate(counts)), groups, cus)
                       for j, (c, g) in enumerate(zip(counts, groups)))}


def test_fillings_are_exactly_the_maximal_ones():
    rng = random.Random(7)
    for _ in range(150):
        shares = [rng.choice([None, None, 0.25, 0.5, 0.3]) for _ in range(rng.randint(1, 4))]
        groups = [_Group(1, rng.randint(1, 9), round((s or 0) * SHARE_UNITS), False, (i,), rng.randint(1, 4), s)
                  for i, s in enumerate(shares)]
        capacity, cus = rng.randint(1, 30), rng.choice([3, 4, 5, 8, 38])  # few CUs: the CU rule binds
        got = _fillings(groups, tuple(range(len(groups))), capacity, 10_000, cus)
        assert got is not None and len(got) == len(set(got))
        assert set(got) == _brute(groups, capacity, cus)
        want = len(got)
        if want > 1:  # the size limit: one filling fewer allowed gives None
            assert _fillings(groups, tuple(range(len(groups))), capacity, want - 1, cus) is None
