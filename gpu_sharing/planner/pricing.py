"""Pricing: the pattern of one partition type worth most at given prices per rank (pure).

Why: column generation (pattern_master.py) adds the pattern that earns most at the LP's
prices; a pattern must obey every rule a partition has, or the master's bound and its plans
are wrong. A partition holds ranks within its usable bytes and by the launcher's CU rule
(problem.cu_cost, isolation/cu_masks.resolve_cu_counts): compute shares summing to at most 1,
and the ranks' CUs (floor(share x CUs) for a share, 1 for a rank without one) at most the
partition's. Neither of the two share rules implies the other (eleven 0.1 shares take 33 of a
CPX partition's 38 CUs; 0.5 + 0.25 + 0.25 takes 37 and a tenant without a share then has none
left).

How, exactly and small: shares summing to at most 1 take at most the partition's CUs
(floor(share x CUs) <= share x CUs), so the CUs bind only where ranks without a share could
outnumber what the shares leave. Where they cannot (every partition of the benchmark's
families), one table over (share units, bytes), as before the CU rule. Where they can: ranks
with a share are few (at most 1 / the smallest share), so their (share units, CUs) sums take
few values: a table over those reachable sums x bytes; ranks without a share only count: a
second table over (ranks, bytes); the two combine at the end (the shares' CUs leave so many
ranks). Bytes (and share units, beyond MAX_SHARE_CELLS rows) are rounded only when
no common unit fits MAX_TABLE_CELLS: up for patterns that fit for sure, down for a bound.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from gpu_sharing.planner.patterns import Pattern, Space, most_ranks
from gpu_sharing.planner.problem import SHARE_UNITS, cu_cost

MAX_TABLE_CELLS = 4096
"""Cells of one pricing table (rows: share sums or counts; columns: bytes). When the ranks'
byte sizes have no common unit that fits, sizes are rounded (up for the columns, so every
pattern fits; down for the bound, so it stays a bound). Measured on the benchmark: exact
tables of 41 x 2,049 cells made the pricing of the shares family 0.5-1.5 s per plan; CPX
partitions (190-250 byte cells) and shareless SPX ones (2,049) stay exact."""
MIN_BYTE_CELLS = 256
"""Byte columns at least, however many rows."""
MAX_SHARE_CELLS = 40
"""Share-unit steps of one partition at most (exact for shares that are multiples of 0.025),
rounded likewise beyond this."""
_NEG = -np.inf


def _grid(sizes: list[int], capacity: int, cells: int, up: bool) -> tuple[list[int], int, bool]:
    """Sizes and capacity in a unit that gives at most ``cells`` columns: the sizes' common
    divisor when it does (exact), else capacity / cells with sizes rounded up or down."""
    unit = math.gcd(*sizes) if sizes else 1
    if unit and capacity // unit <= cells:
        return [s // unit for s in sizes], capacity // unit, True
    unit = -(-capacity // cells)
    return [(-(-s // unit) if up else s // unit) for s in sizes], capacity // unit, False


def _pieces(most: dict[int, int], cls: list[int]) -> list[tuple[int, int]]:
    """Each class's bounded count (``most``) split into powers of two: (class, ranks) 0-1 pieces."""
    return list(_split(tuple((ci, most[ci]) for ci in cls)))


@functools.lru_cache(maxsize=4096)
def _split(counts: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """_pieces of ((class, most), ...), cached (a plan's rounds ask the same few again)."""
    out = []
    for ci, most in counts:
        left, piece = most, 1
        while left > 0:
            out.append((ci, min(piece, left)))
            left -= min(piece, left)
            piece *= 2
    return tuple(out)


@dataclass
class _Shared:
    """Ranks with a share: best value per reachable (share units, CUs) sum and bytes."""

    states: tuple[tuple[int, int], ...]
    values: np.ndarray
    steps: list[tuple[int, int, int, dict[int, tuple[int, int]], np.ndarray]]
    """Per piece: (class, ranks, bytes, {state after: (row of take, state before)}, take)."""


def _shared(pieces, sizes: dict[int, int], shares: dict[int, int], cus: dict[int, int],
            states: tuple[tuple[int, int], ...], cap: int, value: dict[int, float]) -> tuple[_Shared, int]:
    """The table over ``states`` (every sum the pieces reach, _reachable) x bytes at most:
    -inf where a sum is not reached. Returns (it, cells)."""
    index = {key: i for i, key in enumerate(states)}
    table = np.full((len(states), cap + 1), _NEG)
    table[index[0, 0]] = 0.0
    steps, cells = [], 0
    for ci, n in pieces:
        wb = n * sizes[ci]
        if wb > cap:
            continue
        dst, src, back = _links(states, n * shares[ci], n * cus[ci])
        cand = table[src, : cap + 1 - wb] + n * value[ci]
        old = table[dst, wb:]
        take = cand > old + 1e-12
        table[dst, wb:] = np.maximum(old, cand)
        cells += len(dst) * (cap + 1 - wb)
        steps.append((ci, n, wb, back, take))
    return _Shared(states, table, steps), cells


@functools.lru_cache(maxsize=1024)
def _links(states: tuple[tuple[int, int], ...], dr: int, du: int):
    """The rows a step of (``dr`` share units, ``du`` CUs) links: (after, before, {after: (row,
    before)}), cached (a plan's rounds ask the same few)."""
    index = {key: i for i, key in enumerate(states)}
    pairs = [(index[r + dr, u + du], i) for (r, u), i in index.items() if (r + dr, u + du) in index]
    return (np.array([d for d, _s in pairs], dtype=np.intp), np.array([s for _d, s in pairs], dtype=np.intp),
            {d: (row, s) for row, (d, s) in enumerate(pairs)})


def _dense(pieces, sizes: dict[int, int], rows: int, cap: int, value: dict[int, float]):
    """Best value per (rows at most, bytes at most), each piece (class, ranks, rows it takes):
    share units when the CUs cannot bind, else ranks without a share counted. Returns
    (table, steps, cells)."""
    if rows == 0:
        return _dense_row(pieces, sizes, cap, value)
    table = np.zeros((rows + 1, cap + 1))
    steps, cells = [], 0
    for ci, n, wr in pieces:
        wb = n * sizes[ci]
        if wb > cap or wr > rows:
            continue
        cand = table[: rows + 1 - wr, : cap + 1 - wb] + n * value[ci]
        old = table[wr:, wb:]  # a view: updated in place below
        take = cand > old + 1e-12
        np.maximum(old, cand, out=old)
        cells += table.size
        steps.append((ci, n, wr, wb, take))
    return table, steps, cells


class _Taken:
    """``take`` of one step of a one-row table, computed only where _back looks: from the
    table before the step (``before``), exactly as _dense computes the whole of it."""

    __slots__ = ("before", "wb", "gain")

    def __init__(self, before: np.ndarray, wb: int, gain: float) -> None:
        self.before, self.wb, self.gain = before, wb, gain

    def __getitem__(self, at: tuple[int, int]) -> bool:
        b = at[1]
        return bool(self.before[b] + self.gain > self.before[b + self.wb] + 1e-12)


def _dense_row(pieces, sizes: dict[int, int], cap: int, value: dict[int, float]):
    """_dense with no rows to count (no compute shares: most pricing calls), same table, steps
    and cells: each step keeps the table before it instead of its comparison (three array
    operations a piece instead of four; _back compares the few cells it walks)."""
    table = np.zeros(cap + 1)
    steps, cells = [], 0
    for ci, n, wr in pieces:
        wb = n * sizes[ci]
        if wb > cap or wr > 0:
            continue
        gain = n * value[ci]
        after = table.copy()
        tail = after[wb:]
        np.maximum(tail, table[: cap + 1 - wb] + gain, out=tail)
        cells += cap + 1
        steps.append((ci, n, wr, wb, _Taken(table, wb, gain)))
        table = after
    return table.reshape(1, cap + 1), steps, cells


def _back(steps, r: int, b: int, counts: dict[int, int]) -> None:
    """Walk a _dense table back from (``r``, ``b``), adding what it took to ``counts``."""
    for ci, n, wr, wb, take in reversed(steps):
        if r >= wr and b >= wb and take[r - wr, b - wb]:
            counts[ci] = counts.get(ci, 0) + n
            r, b = r - wr, b - wb


def price(space: Space, t: int, value: dict[int, float], up: bool = True,
          table_cells: int | None = None) -> tuple[float, Pattern, bool, int]:
    """The pattern of type ``t`` with the highest total ``value`` (per rank of each class).
    Returns (its value, the pattern, exact, cells: the table cells computed, the work done).
    With ``up`` the pattern fits for sure; without, the value is an upper bound (sizes
    rounded down). ``table_cells``: the cells one table may have (None: MAX_TABLE_CELLS)."""
    table_cells = MAX_TABLE_CELLS if table_cells is None else table_cells
    pt = space.types[t]
    cls = [ci for ci in pt.admits if value.get(ci, 0.0) > 1e-9]
    if not cls:
        return 0.0, (), True, 0
    ranks = {ci: most_ranks(space, ci, t) for ci in cls}
    shared = [ci for ci in cls if space.classes[ci].share_units or space.classes[ci].demand.cu_count]  # CUs of their own
    free = [ci for ci in cls if ci not in shared]
    scap, exact_s, shares = 0, True, {}
    if shared:
        units = [space.classes[ci].share_units for ci in shared]
        grid, scap, exact_s = _grid(units + [SHARE_UNITS], SHARE_UNITS, MAX_SHARE_CELLS, up)
        shares = dict(zip(shared, grid))
    cus = {ci: cu_cost(space.classes[ci].demand.cu_request, pt.cus) for ci in shared}
    spieces, fpieces = _pieces(ranks, shared), _pieces(ranks, free)
    states = _reachable(spieces, shares, cus, scap, pt.cus)
    most_free = min(sum(n for _ci, n in fpieces),  # ranks without a share one partition may hold
                    pt.capacity_bytes // min((space.classes[ci].bytes_per_rank for ci in free), default=1))
    rows = min(most_free, pt.cus) if most_free > pt.cus - max(u for _r, u in states) else 0
    if not rows:  # the CUs cannot bind: shares alone (shares summing to 1 take at most the CUs)
        return _by_shares(space, cls, spieces + fpieces, shares, scap, pt.capacity_bytes, value, up, exact_s,
                          table_cells)
    byte_cells = max(MIN_BYTE_CELLS, table_cells // (len(states) + rows + 1))
    grid, cap, exact_b = _grid([space.classes[ci].bytes_per_rank for ci in cls], pt.capacity_bytes, byte_cells, up)
    sizes = dict(zip(cls, grid))
    sh, cells = _shared(spieces, sizes, shares, cus, states, cap, value)
    counted, fsteps, fcells = _dense([(ci, n, n) for ci, n in fpieces], sizes, rows, cap, value)
    krow = np.array([min(pt.cus - u, rows) for _r, u in states], dtype=np.intp)
    total = sh.values + counted[krow][:, ::-1]  # ranks with shares in b bytes, the rest in what they leave
    first = int(np.flatnonzero(total.ravel() >= total.max() - 1e-9)[0])  # of the best, the least shares and bytes
    s, b = (int(i) for i in np.unravel_index(first, total.shape))
    best, k, fb = float(total[s, b]), int(krow[s]), cap - b
    counts: dict[int, int] = {}
    for ci, n, wb, back, take in reversed(sh.steps):
        if s in back and b >= wb and take[back[s][0], b - wb]:
            counts[ci] = counts.get(ci, 0) + n
            s, b = back[s][1], b - wb
    _back(fsteps, k, fb, counts)
    return best, tuple(sorted(counts.items())), exact_b and exact_s, cells + fcells + total.size


def _by_shares(space: Space, cls, pieces, shares, scap: int, capacity_bytes: int, value, up: bool, exact_s: bool,
               table_cells: int):
    """Pricing over (share units, bytes) only, one table: where no rank without a share can
    run out of CUs (price)."""
    grid, cap, exact_b = _grid([space.classes[ci].bytes_per_rank for ci in cls], capacity_bytes,
                               max(MIN_BYTE_CELLS, table_cells // (scap + 1)), up)
    sizes = dict(zip(cls, grid))
    table, steps, cells = _dense([(ci, n, n * shares.get(ci, 0)) for ci, n in pieces], sizes, scap, cap, value)
    r, b = scap, cap  # capacities: the corner holds the best
    counts: dict[int, int] = {}
    _back(steps, r, b, counts)
    return float(table[r, b]), tuple(sorted(counts.items())), exact_b and exact_s, cells


def _reachable(pieces, shares, cus, scap: int, cap_cus: int) -> tuple[tuple[int, int], ...]:
    """The (share units, CUs) sums the share pieces reach (for the table's size): per kind of
    rank, any count up to the ranks its pieces hold."""
    counts: dict[tuple[int, int], int] = {}
    for ci, n in pieces:
        counts[shares[ci], cus[ci]] = counts.get((shares[ci], cus[ci]), 0) + n
    return _sums(tuple(sorted((k, min(n, cap_cus // k[1], scap // k[0] if k[0] else n)) for k, n in counts.items())),
                 scap, cap_cus)


@functools.lru_cache(maxsize=256)
def _sums(counts: tuple, scap: int, cap_cus: int) -> tuple[tuple[int, int], ...]:
    """Every sum of up to ``most`` steps of each (share units, CUs) step, within the caps (the
    same few a plan's rounds ask again: cached)."""
    seen = {(0, 0)}
    for (dr, du), most in counts:
        seen = {(r + k * dr, u + k * du) for r, u in seen for k in range(most + 1)
                if r + k * dr <= scap and u + k * du <= cap_cus}
    return tuple(sorted(seen))
