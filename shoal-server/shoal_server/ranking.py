"""Rank caches for one client by distance and load; pure, no I/O."""
from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .geo import EARTH_RADIUS_KM, Location
from .sphere import SphereIndex
from .table import MAX_LOAD_EXPONENT, UPSTREAM_CODES, CacheEntry, CacheTable, Columns, LiveView, load_fraction

Vector = Tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Weights:
    """``distload_weight`` (w) trades distance against load; ``load_exponent`` (b) shapes load.

    0 <= w <= 1 and 0 < b <= MAX_LOAD_EXPONENT (the ranges ``[cache]`` accepts): within them no
    cost can overflow or be NaN, whatever an agent reports.
    """

    distload_weight: float = 0.5
    load_exponent: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.distload_weight <= 1.0:
            raise ValueError(f"distload_weight {self.distload_weight!r} is not within [0, 1]")
        if not 0.0 < self.load_exponent <= MAX_LOAD_EXPONENT:
            raise ValueError(f"load_exponent {self.load_exponent!r} is not within (0, {MAX_LOAD_EXPONENT:g}]")


@dataclasses.dataclass(frozen=True)
class Ranked:
    entry: CacheEntry
    cost: float
    distance_km: Optional[float]


def load_term(load: float, max_load: float, exponent: float) -> float:
    """f ** b with f = load_fraction(load, max_load); above max_load it costs more than 1, as intended.

    f <= LOAD_FRACTION_CAP and b <= MAX_LOAD_EXPONENT keep the power finite (<= 1e300).
    """
    fraction = load_fraction(load, max_load)
    return fraction ** exponent if fraction > 0 else 0.0


def cost(angle: float, load: float, max_load: float, weights: Weights) -> float:
    """Cost = w * d / (pi * R) + (1 - w) * f ** b, with d = angle * R and f the clamped load fraction.

    Always finite for valid ``weights``: the Python and the numpy paths share ``load_fraction``.
    """
    w = weights.distload_weight
    return w * angle / math.pi + (1.0 - w) * load_term(load, max_load, weights.load_exponent)


def _angle(u: Vector, v: Optional[Vector]) -> float:
    if v is None:
        return math.pi  # an unplaced cache counts as the farthest possible
    dot = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    return math.acos(max(-1.0, min(1.0, dot)))


def rank(entries: Iterable[CacheEntry], client: Optional[Location], client_ip: Optional[str],
         weights: Weights, n: int) -> List[Ranked]:
    """Return the ``n`` cheapest caches for a client: every cache scored with ``cost``, the reference.

    A client GeoIP cannot place gets caches that share its address first (same site behind
    NAT), then the least loaded; its distances are None. Ties go by (cost, unauthenticated,
    angle, uuid). RankIndex only narrows the table to candidates and hands them to this.
    """
    if n <= 0:
        return []
    if client is None:
        return _rank_unplaced(entries, client_ip, weights, n)
    u = client.unit_vector
    scored = []
    for e in entries:
        angle = _angle(u, e.unit)
        scored.append((cost(angle, e.hb.load, e.hb.max_load, weights), angle, e))
    best = heapq.nsmallest(n, scored, key=_first_two)
    return [Ranked(e, c, a * EARTH_RADIUS_KM if e.unit is not None else None) for c, a, e in best]


def rank_table(table: CacheTable, client: Optional[Location], client_ip: Optional[str], weights: Weights,
               n: int, verified_only: bool = False, upstream: Optional[str] = None) -> List[Ranked]:
    """``rank`` over the table's current entries that pass the route's filter, without copying the table."""
    def choose(view: LiveView) -> Tuple[np.ndarray, np.ndarray]:
        index = RankIndex(view.rows, view.cols, view.sphere, view.extra, view.size)
        return index.candidates(client, client_ip, weights, n, verified_only, upstream)
    return rank(select(table.read(choose), verified_only, upstream), client, client_ip, weights, n)


_NO_ROWS = np.zeros(0, dtype=np.int64)


class RankIndex:
    """Narrow one table version to a few candidates with numpy; ``rank`` then orders them exactly.

    The vector pass computes costs approximately (numpy's arccos and power may differ from libm
    in the last bits) and keeps every row within ``_TOLERANCE`` of the n-th cheapest, so the
    exact answer, ties included, is always among the candidates. With a SphereIndex covering
    rows ``0 .. sphere.size-1`` it computes costs only for the cells whose distance bound can
    still beat the n-th best (plus ``extra`` rows, which the index does not place correctly,
    and rows past ``sphere.size``); without one, for every row.
    """

    _TOLERANCE = 1e-9   # relative; the vector pass errs by ~1e-15
    SMALL = 48          # up to this many caches, scoring each in Python beats numpy's call overhead

    def __init__(self, entries: Sequence[CacheEntry], columns: Columns,
                 sphere: Optional[SphereIndex] = None, extra: Optional[np.ndarray] = None,
                 size: Optional[int] = None) -> None:
        self.entries = entries
        self.size = len(entries) if size is None else size
        self.cols = columns.head_view(self.size)   # the live block may be longer than the table
        self.sphere = sphere if sphere is not None and sphere.size <= self.size else None
        self.extra = _NO_ROWS if extra is None else extra

    def rank(self, client: Optional[Location], client_ip: Optional[str], weights: Weights, n: int,
             verified_only: bool = False, upstream: Optional[str] = None) -> List[Ranked]:
        """``rank`` over ``select(entries, verified_only, upstream)``."""
        picked, _ = self.candidates(client, client_ip, weights, n, verified_only, upstream)
        chosen = select([self.entries[i] for i in picked.tolist()], verified_only, upstream)
        return rank(chosen, client, client_ip, weights, n)

    def candidates(self, client: Optional[Location], client_ip: Optional[str], weights: Weights, n: int,
                   verified_only: bool = False, upstream: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(rows that may be in the answer, rows whose values decided which): sorted, distinct.

        Every row of the exact answer is among the first; a row outside the second could have
        had any values without changing the first (what CacheTable.read needs to know).
        """
        if n <= 0 or not self.size:
            return _NO_ROWS, _NO_ROWS
        if self.size <= self.SMALL or (upstream is not None and upstream not in UPSTREAM_CODES):
            return np.arange(self.size), _NO_ROWS
        if client is None:
            return self._unplaced_candidates(self._eligible(verified_only, upstream), client_ip, weights, n)
        u = client.unit_vector
        if self.sphere is None or weights.distload_weight == 0.0 or len(self.sphere) < 2:
            rows = self._eligible(verified_only, upstream)
            picked = self._cheapest(self._costs(u, weights, rows), rows, n)
        else:
            picked = self._search(u, weights, n, verified_only, upstream)
        return picked, picked

    def _search(self, u: Vector, weights: Weights, n: int, verified_only: bool,
                upstream: Optional[str]) -> np.ndarray:
        """The candidates from the cells nearest first, until no unvisited cell can beat the n-th cost."""
        sphere = self.sphere
        assert sphere is not None
        bounds = sphere.min_angles(u)
        bounds *= weights.distload_weight / math.pi
        by_bound = np.argsort(bounds, kind="stable")
        sorted_bounds = bounds[by_bound]
        total = np.cumsum(sphere.counts()[by_bound])
        parts_rows: List[np.ndarray] = []
        parts_costs: List[np.ndarray] = []
        have = 0

        def of_cells(ids: np.ndarray) -> np.ndarray:
            rows = sphere.rows(ids)
            return rows[~np.isin(rows, self.extra)] if len(self.extra) else rows  # a moved row is in its old cell

        def visit(rows: np.ndarray) -> int:
            rows = self._filter(rows, verified_only, upstream)
            parts_rows.append(rows)
            parts_costs.append(self._costs(u, weights, rows))
            return len(rows)

        # Rows the cells do not hold correctly (arrived since the index was built, or moved)
        # go with the first cells: one vector pass instead of two.
        tail = np.arange(sphere.size, self.size)
        unindexed = np.union1d(self.extra, tail) if len(self.extra) else tail
        done, cells = 0, len(by_bound)
        want = min(cells, int(np.searchsorted(total, n)) + 1)
        while True:
            cell_rows = of_cells(by_bound[done:want])
            if not done:
                cell_rows = np.concatenate([unindexed, cell_rows])
            have += visit(cell_rows)
            done = want
            if have >= n or done == cells:
                break
            want = min(cells, 2 * want)
        costs = np.concatenate(parts_costs)
        if have >= n:
            kth = float(np.partition(costs, n - 1)[n - 1])
            limit = kth + self._TOLERANCE * max(1.0, abs(kth))
            reach = int(np.searchsorted(sorted_bounds, limit, side="right"))
            if reach > done:
                visit(of_cells(by_bound[done:reach]))
                costs = np.concatenate(parts_costs)
        return np.sort(self._cheapest(costs, np.concatenate(parts_rows), n))

    def _filter(self, rows: np.ndarray, verified_only: bool, upstream: Optional[str]) -> np.ndarray:
        if verified_only:
            rows = rows[self.cols.verified[rows]]
        if upstream is not None:
            codes = self.cols.upstream[rows]
            rows = rows[(codes == UPSTREAM_CODES[upstream]) | (codes == UPSTREAM_CODES["both"])]
        return rows

    def _eligible(self, verified_only: bool, upstream: Optional[str]) -> Optional[np.ndarray]:
        """Row numbers passing the route's filter, or None for all rows."""
        if not verified_only and upstream is None:
            return None
        mask = np.ones(self.size, dtype=bool)
        if verified_only:
            mask &= self.cols.verified
        if upstream is not None:
            codes = self.cols.upstream
            mask &= (codes == UPSTREAM_CODES[upstream]) | (codes == UPSTREAM_CODES["both"])
        return np.flatnonzero(mask)

    def _load_terms(self, weights: Weights, rows: Optional[np.ndarray]) -> np.ndarray:
        ratio = self.cols.ratio if rows is None else self.cols.ratio[rows]
        b = weights.load_exponent
        if b == 1.0:
            return ratio
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return np.where(ratio > 0, np.power(ratio, b), 0.0)

    def _costs(self, u: Vector, weights: Weights, rows: Optional[np.ndarray]) -> np.ndarray:
        c = self.cols
        x, y, z, placed = (c.x, c.y, c.z, c.placed) if rows is None else (c.x[rows], c.y[rows], c.z[rows],
                                                                           c.placed[rows])
        dot = x * u[0]
        dot += y * u[1]
        dot += z * u[2]
        np.clip(dot, -1.0, 1.0, out=dot)
        angle = np.arccos(dot, out=dot)
        angle[~placed] = math.pi
        w = weights.distload_weight
        angle *= w / math.pi
        return angle + (1.0 - w) * self._load_terms(weights, rows)

    def _cheapest(self, values: np.ndarray, rows: Optional[np.ndarray], n: int) -> np.ndarray:
        """Row numbers whose approximate value is within tolerance of the n-th smallest."""
        if n < len(values):
            kth = float(np.partition(values, n - 1)[n - 1])
            picked = np.flatnonzero(values <= kth + self._TOLERANCE * max(1.0, abs(kth)))
        else:
            picked = np.arange(len(values))
        return picked if rows is None else rows[picked]

    def _unplaced_candidates(self, rows: Optional[np.ndarray], client_ip: Optional[str], weights: Weights,
                             n: int) -> Tuple[np.ndarray, np.ndarray]:
        """Same-site rows first (by address hash, then checked exactly), then the least loaded."""
        same = self._address_hits(rows, client_ip)
        candidates = _NO_ROWS
        if len(same):
            # Only the least loaded n of the same-site caches can be chosen; a hash collision
            # among them (never seen in practice) sends us back to checking every hit.
            candidates = self._cheapest(self._load_terms(weights, same), same, n)
            if not all(self._at(i, client_ip) for i in candidates.tolist()):  # type: ignore[arg-type]
                same = np.asarray([i for i in same.tolist() if self._at(i, client_ip)],  # type: ignore[arg-type]
                                  dtype=np.int64)
                candidates = self._cheapest(self._load_terms(weights, same), same, n) if len(same) else _NO_ROWS
        touched = same
        if len(same) < n:
            # The least loaded of the other rows: same-site rows count as infinitely loaded here.
            values = self._load_terms(weights, rows)
            if len(same):
                values = np.array(values, dtype=np.float64)   # never write into the table's own arrays
                values[same if rows is None else np.searchsorted(rows, same)] = math.inf
            candidates = np.concatenate([candidates, self._cheapest(values, rows, n - len(same))])
        picked = np.unique(candidates)
        return picked, np.union1d(picked, touched)

    def _address_hits(self, rows: Optional[np.ndarray], client_ip: Optional[str]) -> np.ndarray:
        """Rows whose public or external address hashes like ``client_ip``."""
        if not client_ip:
            return _NO_ROWS
        h = hash(client_ip)
        hit = (self.cols.pub == h) | (self.cols.ext == h)
        return np.flatnonzero(hit) if rows is None else rows[hit[rows]]

    def _at(self, i: int, address: str) -> bool:
        hb = self.entries[i].hb
        return address == hb.public_ip or address == hb.external_ip


def _first_two(item: Tuple[float, float, CacheEntry]) -> Tuple[float, bool, float, str]:
    # At equal cost an authenticated cache ranks before an unauthenticated (legacy) one.
    return (item[0], not item[2].hb.authenticated, item[1], item[2].hb.uuid)


def _rank_unplaced(entries: Iterable[CacheEntry], client_ip: Optional[str], weights: Weights,
                   n: int) -> List[Ranked]:
    def key(e: CacheEntry) -> Tuple[int, float, bool, str]:
        same_site = client_ip is not None and client_ip in (e.hb.public_ip, e.hb.external_ip)
        return (0 if same_site else 1, load_term(e.hb.load, e.hb.max_load, weights.load_exponent),
                not e.hb.authenticated, e.hb.uuid)

    best = heapq.nsmallest(n, entries, key=key)
    return [Ranked(e, (1.0 - weights.distload_weight) * key(e)[1], None) for e in best]


def select(entries: Sequence[CacheEntry], verified_only: bool = False,
           upstream: Optional[str] = None) -> List[CacheEntry]:
    """Filter for the /nearestverified, /nearestcvmfs and /nearestconditions routes."""
    out = []
    for e in entries:
        if verified_only and not e.is_verified:
            continue
        if upstream is not None and e.hb.upstream not in (upstream, "both"):
            continue
        out.append(e)
    return out
