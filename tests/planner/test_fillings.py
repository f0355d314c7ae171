"""The configuration model's partition fillings (mip._fillings) against a brute force written
apart from it: every maximal filling, and nothing else, whatever the pruning does."""

from __future__ import annotations

import itertools
import random

from gpu_sharing.planner.mip import _fillings, _Group
from gpu_sharing.planner.problem import SHARE_UNITS


def _brute(groups: list[_Group], capacity: int) -> set[tuple[int, ...]]:
    fits = []
    for counts in itertools.product(*(range(g.ranks + 1) for g in groups)):
        used = sum(c * g.bytes_per_rank for c, g in zip(counts, groups))
        share = sum(c * g.share_units for c, g in zip(counts, groups))
        if used <= capacity and share <= SHARE_UNITS:
            fits.append((counts, capacity - used, SHARE_UNITS - share))
    return {counts for counts, left, share_left in fits
            if not any(c < g.ranks and g.bytes_per_rank <= left and g.share_units <= share_left
                       for c, g in zip(counts, groups))}


def test_fillings_are_exactly_the_maximal_ones():
    rng = random.Random(7)
    for _ in range(150):
        groups = [_Group(1, rng.randint(1, 9), rng.choice([0, 0, SHARE_UNITS // 4, SHARE_UNITS // 2]), False, (i,),
                         rng.randint(1, 4)) for i in range(rng.randint(1, 4))]
        capacity = rng.randint(1, 30)
        got = _fillings(groups, tuple(range(len(groups))), capacity, 10_000)
        assert got is not None and len(got) == len(set(got))
        assert set(got) == _brute(groups, capacity)
        want = len(got)
        if want > 1:  # the size limit: one filling fewer allowed gives None
            assert _fillings(groups, tuple(range(len(groups))), capacity, want - 1) is None
