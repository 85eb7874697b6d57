"""Rank caches for one client by distance and load; pure, no I/O."""
from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Iterable, List, Optional, Sequence, Tuple

from .geo import EARTH_RADIUS_KM, Location
from .table import CacheEntry

Vector = Tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Weights:
    """``distload_weight`` (w) trades distance against load; ``load_exponent`` (b) shapes load."""

    distload_weight: float = 0.5
    load_exponent: float = 1.0


@dataclasses.dataclass(frozen=True)
class Ranked:
    entry: CacheEntry
    cost: float
    distance_km: Optional[float]


def load_term(load: float, max_load: float, exponent: float) -> float:
    """(load / max_load) ** b; a load above max_load costs more than 1, which is intended."""
    return (load / max_load) ** exponent if load > 0 else 0.0


def cost(angle: float, load: float, max_load: float, weights: Weights) -> float:
    """Cost = w * d / (pi * R) + (1 - w) * (load / max_load) ** b, with d = angle * R."""
    w = weights.distload_weight
    return w * angle / math.pi + (1.0 - w) * load_term(load, max_load, weights.load_exponent)


def _angle(u: Vector, v: Optional[Vector]) -> float:
    if v is None:
        return math.pi  # an unplaced cache counts as the farthest possible
    dot = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    return math.acos(max(-1.0, min(1.0, dot)))


def rank(entries: Iterable[CacheEntry], client: Optional[Location], client_ip: Optional[str],
         weights: Weights, n: int) -> List[Ranked]:
    """Return the ``n`` cheapest caches for a client.

    A client GeoIP cannot place gets caches that share its address first (same site behind
    NAT), then the least loaded; its distances are None.
    """
    if n <= 0:
        return []
    if client is None:
        return _rank_unplaced(entries, client_ip, weights, n)
    u = client.unit_vector
    scored = []
    for e in entries:
        angle = _angle(u, e.unit)
        hb = e.hb
        scored.append((cost(angle, hb.load, hb.max_load, weights), angle, e))
    best = heapq.nsmallest(n, scored, key=_first_two)
    return [Ranked(e, c, a * EARTH_RADIUS_KM if e.unit is not None else None) for c, a, e in best]


def _first_two(item: Tuple[float, float, CacheEntry]) -> Tuple[float, float, str]:
    return (item[0], item[1], item[2].hb.uuid)


def _rank_unplaced(entries: Iterable[CacheEntry], client_ip: Optional[str], weights: Weights,
                   n: int) -> List[Ranked]:
    def key(e: CacheEntry) -> Tuple[int, float, str]:
        same_site = client_ip is not None and client_ip in (e.hb.public_ip, e.hb.external_ip)
        return (0 if same_site else 1, load_term(e.hb.load, e.hb.max_load, weights.load_exponent), e.hb.uuid)

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
