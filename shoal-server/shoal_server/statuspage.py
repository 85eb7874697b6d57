"""The human status page: pure HTML rendering from a table snapshot.

Everything here is a function of its arguments (no I/O except ``load_world_outline``), so it is
tested by calling it. Every value that came from an agent or the GeoIP database passes through
``_e`` (HTML escaping, quotes included) before it reaches the page, also inside attributes and
the SVG map. The page needs no JavaScript (sorting and paging are links, the map is inline SVG
drawn here, refresh is a meta refresh that keeps the query), and ``static/status.css`` styles it,
so the page works under a Content-Security-Policy that forbids every script.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import html
import json
import math
import operator
import os
import time
from typing import Any, Callable, Counter, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlencode

from . import __version__
from .geo import Location
from .refused import Refusal
from .table import CacheEntry

MAP_WIDTH = 720           # SVG user units: 2 per degree of longitude
MAP_NORTH, MAP_SOUTH = 84.0, -58.0
MAP_MARK_LIMIT = 2000     # above this many located caches, nearby marks are merged per grid cell
MAP_CELL_DEG = 2.0
REFRESH_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class WorldOutline:
    """Land outlines as rings of (longitude, latitude), and their SVG path for the page's projection."""

    rings: Tuple[Tuple[Tuple[float, float], ...], ...]
    path: str


def load_world_outline(path: Optional[str] = None) -> WorldOutline:
    """Read the continent outline shipped in ``data/`` (Natural Earth 1:110m, simplified)."""
    path = path or os.path.join(os.path.dirname(__file__), "data", "world_outline.json")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    rings = tuple(tuple((float(lon), float(lat)) for lon, lat in ring) for ring in data["rings"])
    return WorldOutline(rings, outline_path(rings))


def project(longitude: float, latitude: float) -> Tuple[float, float]:
    """Equirectangular projection onto the map's SVG coordinates."""
    scale = MAP_WIDTH / 360.0
    lat = min(MAP_NORTH, max(MAP_SOUTH, latitude))
    return (longitude + 180.0) * scale, (MAP_NORTH - lat) * scale


def map_height() -> float:
    return (MAP_NORTH - MAP_SOUTH) * MAP_WIDTH / 360.0


def outline_path(rings: Sequence[Sequence[Tuple[float, float]]]) -> str:
    parts = []
    for ring in rings:
        points = [project(lon, lat) for lon, lat in ring]
        parts.append("M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in points) + "Z")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Request parameters: which page, sorted how.

def _ip_key(e: CacheEntry) -> Tuple[int, str]:
    addr = e.address
    return (1 if ":" in addr else 0, ".".join(p.zfill(3) for p in addr.split(".")) if ":" not in addr else addr)


def _place_key(e: CacheEntry) -> Tuple[str, str]:
    loc = e.location
    return ((loc.country_name or loc.country_code or "~") if loc else "~", (loc.city or "") if loc else "")


# column key -> (heading, sort key); "load" sorts by the fraction of max_load the bar shows.
COLUMNS: Dict[str, Tuple[str, Callable[[CacheEntry], object]]] = {
    "hostname": ("Hostname", lambda e: e.hb.hostname),
    "ip": ("IP addresses", _ip_key),
    "location": ("Location", _place_key),
    "load": ("Load", lambda e: e.hb.load / e.hb.max_load),
    "heard": ("Last heard", lambda e: -e.last_active),
    "up": ("Up time", lambda e: -e.created),
    "verified": ("Verified", lambda e: e.is_verified),
    "drift": ("Clock drift", lambda e: abs(e.hb.drift)),
}
DEFAULT_SORT = "hostname"


@dataclasses.dataclass(frozen=True)
class PageRequest:
    page: int = 1
    sort: str = DEFAULT_SORT
    descending: bool = False

    def query(self, **changes: object) -> str:
        """The query string for this view with ``changes`` applied (defaults left out)."""
        view = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        params = []
        if view.sort != DEFAULT_SORT:
            params.append(("sort", view.sort))
        if view.descending:
            params.append(("order", "desc"))
        if view.page > 1:
            params.append(("page", str(view.page)))
        return "?" + urlencode(params) if params else "?"


def parse_request(query: Mapping[str, str]) -> PageRequest:
    """Read ``page``, ``sort`` and ``order`` from a query, ignoring anything unknown."""
    sort = query.get("sort") or DEFAULT_SORT
    return PageRequest(page=parse_page(query.get("page")),
                       sort=sort if sort in COLUMNS else DEFAULT_SORT,
                       descending=(query.get("order") == "desc"))


def parse_page(text: Optional[str]) -> int:
    try:
        return max(1, int(text or "1"))
    except ValueError:
        return 1


# ---------------------------------------------------------------------------------------------
# Rendering.

def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _place(entry: CacheEntry) -> str:
    loc = entry.location
    if loc is None:
        return "unknown"
    return ", ".join(p for p in (loc.city, loc.country_name or loc.country_code) if p) or "unknown"


def load_level(load: float, max_load: float) -> int:
    """0 (idle) to 3 (at or over max_load): the colour class of bars and map marks."""
    ratio = load / max_load if max_load > 0 else 1.0
    return 0 if ratio < 0.25 else 1 if ratio < 0.6 else 2 if ratio < 0.9 else 3


def sorted_entries(entries: Sequence[CacheEntry], request: PageRequest) -> List[CacheEntry]:
    key = COLUMNS[request.sort][1]
    ordered = sorted(entries, key=lambda e: (e.hb.hostname, e.uuid))  # stable tie-break
    ordered.sort(key=key, reverse=request.descending)  # type: ignore[arg-type]
    return ordered


def render_status(entries: Sequence[CacheEntry], now: float, request: PageRequest, page_size: int,
                  drift_tolerance: float, consumer_connected: bool, outline: Optional[WorldOutline] = None,
                  refresh: int = REFRESH_SECONDS, refused: Sequence[Refusal] = ()) -> str:
    """Render the whole page: summary, map, one page of the sorted table, and the refused senders."""
    view = StatusView.build(tuple(entries), drift_tolerance, outline)
    return view.render(now, request, page_size, consumer_connected, refresh, refused)


# ---------------------------------------------------------------------------------------------
# What one table version derives, kept per version (StatusView) and carried to the next one.
#
# The webapp keeps the view of the latest snapshot; the next snapshot's view is derived from it
# by what changed (entries are immutable, so "changed" is "not the same object"): the summary and
# the map cells are sums updated by the few entries that differ, each sort order is updated by
# bisection. Every sum is exact (integers of 2**-1074), so the order in which entries were
# added or removed cannot change a digit: a derived view renders byte for byte what a view built
# from scratch renders (tests/web/test_statuspage_cache.py).

_FIXED_SCALE = 1 << 1074   # every finite double is an integer multiple of 2**-1074


def _fixed(value: float) -> int:
    """``value`` as an exact integer multiple of 2**-1074 (non-finite counts as 0: never validated in)."""
    if not math.isfinite(value):
        return 0
    numerator, denominator = value.as_integer_ratio()
    return numerator * (_FIXED_SCALE // denominator)


def _unfixed(total: int) -> float:
    """The correctly rounded float of an exact fixed-point sum."""
    try:
        return total / _FIXED_SCALE
    except OverflowError:
        return math.inf if total > 0 else -math.inf


@dataclasses.dataclass
class _Cell:
    """The caches of one map grid cell: exact sums, and how many caches each place name has."""

    caches: int = 0
    lon: int = 0
    lat: int = 0
    load: int = 0
    max_load: int = 0
    places: Counter[str] = dataclasses.field(default_factory=collections.Counter)
    # (sort key, Mark, SVG) of a finished cell; a changed cell is a fresh copy without one.
    drawn: Optional[Tuple[Tuple[float, Tuple[int, int]], "Mark", str]] = None

    def copy(self) -> "_Cell":
        return dataclasses.replace(self, places=collections.Counter(self.places), drawn=None)

    def draw(self, key: Tuple[int, int]) -> Tuple[Tuple[float, Tuple[int, int]], "Mark", str]:
        if self.drawn is None:
            load, max_load = _unfixed(self.load), _unfixed(self.max_load)
            x, y = project(_unfixed(self.lon) / self.caches, _unfixed(self.lat) / self.caches)
            place = min(self.places.items(), key=lambda item: (-item[1], item[0]))[0]
            label = f"{self.caches} caches near {place} — {load:.0f} / {max_load:.0f} KB/s"
            ratio = load / max_load if max_load > 0 else 1.0
            mark = Mark(x, y, load, max_load, label, self.caches)
            self.drawn = ((ratio, key), mark, _circle(mark))
        return self.drawn


def _cell_of(loc: Location) -> Tuple[int, int]:
    return int((loc.longitude + 180) // MAP_CELL_DEG), int((loc.latitude + 90) // MAP_CELL_DEG)


class _Totals:
    """Summary counts and per-cell map sums of a set of entries; ``add(e, -1)`` takes one away."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.caches = self.verified = self.drifting = self.unauthenticated = self.unplaced = 0
        self.load = self.max_load = 0
        self.cells: Dict[Tuple[int, int], _Cell] = {}
        self._owned: Optional[set] = None   # cells this copy may change in place

    def copy(self) -> "_Totals":
        out = _Totals.__new__(_Totals)
        out.__dict__.update(self.__dict__)
        out.cells = dict(self.cells)        # cells are copied on their first change
        out._owned = set()
        return out

    def add(self, e: CacheEntry, sign: int) -> None:
        hb = e.hb
        load, max_load = _fixed(hb.load), _fixed(hb.max_load)
        self.caches += sign
        self.load += sign * load
        self.max_load += sign * max_load
        self.verified += sign * e.is_verified
        self.drifting += sign * hb.drifting(self.tolerance)
        self.unauthenticated += sign * (not hb.authenticated)
        loc = e.location
        if loc is None:
            self.unplaced += sign
            return
        key = _cell_of(loc)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = _Cell()
        elif self._owned is not None and key not in self._owned:
            cell = self.cells[key] = cell.copy()
        if self._owned is not None:
            self._owned.add(key)
        cell.caches += sign
        cell.lon += sign * _fixed(loc.longitude)
        cell.lat += sign * _fixed(loc.latitude)
        cell.load += sign * load
        cell.max_load += sign * max_load
        place = _place(e)
        cell.places[place] += sign
        if cell.places[place] <= 0:
            del cell.places[place]
        if cell.caches <= 0:
            del self.cells[key]


class _Desc:
    """Reverses the order of a sort key inside a tuple (bisect needs one ascending key)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: "_Desc") -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]


def _order_key(sort: str, descending: bool) -> Callable[[CacheEntry], tuple]:
    """The total order ``sorted_entries`` produces, as one ascending key (uuids are unique)."""
    key = COLUMNS[sort][1]
    if descending:
        return lambda e: (_Desc(key(e)), e.hb.hostname, e.uuid)
    return lambda e: (key(e), e.hb.hostname, e.uuid)


class _Order:
    """One sort order of one version: (key, entry) pairs in ascending key order."""

    def __init__(self, pairs: List[Tuple[tuple, CacheEntry]]) -> None:
        self.pairs = pairs
        self._entries: Optional[List[CacheEntry]] = None

    def entries(self) -> List[CacheEntry]:
        """Every entry in this order (kept: /all asks for it once per version)."""
        if self._entries is None:
            self._entries = list(map(operator.itemgetter(1), self.pairs))
        return self._entries

    @classmethod
    def build(cls, entries: Sequence[CacheEntry], sort: str, descending: bool) -> "_Order":
        key = _order_key(sort, descending)
        return cls([(key(e), e) for e in sorted_entries(entries, PageRequest(1, sort, descending))])

    def derived(self, sort: str, descending: bool, removed: Sequence[CacheEntry],
                added: Sequence[CacheEntry]) -> "_Order":
        key = _order_key(sort, descending)
        pairs = list(self.pairs)
        for e in removed:
            i = bisect.bisect_left(pairs, (key(e),))
            if i >= len(pairs) or pairs[i][1] is not e:  # cannot happen; never serve a wrong order
                raise LookupError("entry not in its order")
            del pairs[i]
        for e in added:
            bisect.insort(pairs, (key(e), e))
        return _Order(pairs)

    def slice(self, start: int, stop: int) -> List[CacheEntry]:
        return [e for _, e in self.pairs[start:stop]]


def _changes(old: Sequence[CacheEntry], new: Sequence[CacheEntry]) -> Tuple[List[CacheEntry], List[CacheEntry]]:
    """What to take away from ``old`` and add to get ``new``, position by position.

    The table keeps a cache in its row until one before it is removed, so two versions differ
    in few positions; where they differ the old entry goes and the new one comes (an entry
    that only moved goes and comes back: the sums and orders end up the same). The scan for
    differing positions runs in C.
    """
    different = list(map(operator.is_not, old, new))
    removed, added = list(old[len(new):]), list(new[len(old):])
    i = 0
    while True:
        try:
            i = different.index(True, i)
        except ValueError:
            break
        removed.append(old[i])
        added.append(new[i])
        i += 1
    return removed, added


# Where render_bytes splices in the map's kept bytes. The page is split at its first occurrence,
# and all that precedes the map is the template and counts: nothing a sender wrote.
_MAP_SLOT = "\x00map\x00"


class StatusView:
    """Everything of the page that depends only on one snapshot of the table.

    ``render`` adds what depends on the request and the clock (one page of rows, ages, the
    consumer state, the refused senders). ``derive`` builds the next snapshot's view from this
    one in time proportional to what changed (plus one C-speed pass to find it).
    """

    # Above this share of changed entries, sort orders are rebuilt instead of updated.
    REBUILD_SHARE = 8
    # How many sort orders are kept and carried to the next version.
    KEPT_ORDERS = 4
    # Rendered rows kept (a few pages' worth); beyond, the cache starts again.
    KEPT_ROWS = 4096

    def __init__(self, entries: Tuple[CacheEntry, ...], totals: _Totals, outline: Optional[WorldOutline],
                 orders: Dict[Tuple[str, bool], _Order]) -> None:
        self.entries = entries
        self.totals = totals
        self.outline = outline
        self._orders = orders
        self._map: Optional[str] = None
        self._map_bytes: Optional[bytes] = None
        self._circles: Circles = {}   # per-cache circles of the map (also the next version's start)
        self._rows: Dict[int, Tuple[CacheEntry, Tuple[str, str, str]]] = {}   # id -> (entry, row parts)

    @property
    def tolerance(self) -> float:
        return self.totals.tolerance

    @classmethod
    def build(cls, entries: Tuple[CacheEntry, ...], tolerance: float,
              outline: Optional[WorldOutline]) -> "StatusView":
        totals = _Totals(tolerance)
        for e in entries:
            totals.add(e, 1)
        return cls(entries, totals, outline, {})

    def derive(self, entries: Tuple[CacheEntry, ...]) -> "StatusView":
        """The view of ``entries`` (a later snapshot), reusing this one's work."""
        if entries is self.entries:
            return self
        removed, added = _changes(self.entries, entries)
        if (len(removed) + len(added)) * self.REBUILD_SHARE > len(entries):
            return StatusView.build(entries, self.tolerance, self.outline)
        totals = self.totals.copy()
        for e in removed:
            totals.add(e, -1)
        for e in added:
            totals.add(e, 1)
        orders = {(sort, descending): order.derived(sort, descending, removed, added)
                  for (sort, descending), order in list(self._orders.items())}
        view = StatusView(entries, totals, self.outline, orders)
        view._circles = self._circles   # the dict holds its entries, so its ids stay theirs
        view._rows = self._rows         # likewise; a changed cache is a new entry, so a new row
        return view

    def order(self, sort: str, descending: bool) -> _Order:
        order = self._orders.get((sort, descending))
        if order is None:
            order = _Order.build(self.entries, sort, descending)
            # Each kept order costs ~200 bytes per cache: keep the default (also /all's) and the
            # most recently built others.
            others = [k for k in list(self._orders) if k != (DEFAULT_SORT, False)]  # list(): one C step
            for kept in others[:max(0, len(self._orders) - self.KEPT_ORDERS + 1)]:
                self._orders.pop(kept, None)   # threads may race here: that only rebuilds an order
            self._orders[(sort, descending)] = order
        return order

    def ordered(self, sort: str = DEFAULT_SORT, descending: bool = False) -> List[CacheEntry]:
        """Every entry in the page's order (hostname ascending: the order /all lists them in)."""
        return self.order(sort, descending).entries()

    def map_html(self) -> str:
        if self._map is None:
            circles, unplaced, self._circles = _map_svg(self.entries, self.totals, self._circles)
            self._map = render_map_svg(circles, unplaced, len(self.entries), self.outline)
        return self._map

    def map_bytes(self) -> bytes:
        """The map encoded once per version: it is most of the page (a circle per cache up to 2,000)."""
        if self._map_bytes is None:
            self._map_bytes = self.map_html().encode("utf-8")
        return self._map_bytes

    def render_bytes(self, now: float, request: PageRequest, page_size: int, consumer_connected: bool,
                     refresh: int = REFRESH_SECONDS, refused: Sequence[Refusal] = ()) -> bytes:
        """``render`` as UTF-8, with the map's bytes kept per version (only the rest is encoded per request)."""
        page = self._render(now, request, page_size, consumer_connected, refresh, refused, _MAP_SLOT)
        head, tail = page.split(_MAP_SLOT, 1)
        return b"".join((head.encode("utf-8"), self.map_bytes(), tail.encode("utf-8")))

    def render(self, now: float, request: PageRequest, page_size: int, consumer_connected: bool,
               refresh: int = REFRESH_SECONDS, refused: Sequence[Refusal] = ()) -> str:
        return self._render(now, request, page_size, consumer_connected, refresh, refused, self.map_html())

    def _render(self, now: float, request: PageRequest, page_size: int, consumer_connected: bool,
                refresh: int, refused: Sequence[Refusal], map_html: str) -> str:
        entries, totals, drift_tolerance = self.entries, self.totals, self.tolerance
        pages = max(1, math.ceil(len(entries) / page_size))
        page = min(request.page, pages)
        request = dataclasses.replace(request, page=page)
        shown = self.order(request.sort, request.descending).slice((page - 1) * page_size, page * page_size)
        total_load, total_max = _unfixed(totals.load), _unfixed(totals.max_load)
        verified, drifting, unauthenticated = totals.verified, totals.drifting, totals.unauthenticated
        return _page(entries, now, request, pages, drift_tolerance, consumer_connected, refresh, refused,
                     self.rows(shown, now), total_load, total_max, verified, drifting, unauthenticated,
                     map_html)

    def rows(self, shown: Sequence[CacheEntry], now: float) -> str:
        """The table rows of ``shown``: each cache's row is built once per entry, only its ages per request."""
        kept, tolerance = self._rows, self.tolerance
        if len(kept) > self.KEPT_ROWS:
            kept = self._rows = {}   # threads may race here: that only renders a row twice
        out = []
        for e in shown:
            hit = kept.get(id(e))
            if hit is None or hit[0] is not e:
                hit = kept[id(e)] = (e, _row_parts(e, tolerance))
            head, middle, tail = hit[1]
            out.append(f"{head}{_age(now - e.last_active)}{middle}{_age(now - e.created)}{tail}")
        return "\n".join(out)


def _page(entries: Sequence[CacheEntry], now: float, request: PageRequest, pages: int, drift_tolerance: float,
          consumer_connected: bool, refresh: int, refused: Sequence[Refusal], rows: str,
          total_load: float, total_max: float, verified: int, drifting: int, unauthenticated: int,
          map_html: str) -> str:
    percent = f"{100.0 * total_load / total_max:.0f}" if total_max else "0"
    state, state_class = ("connected", "ok") if consumer_connected else ("DISCONNECTED", "bad")
    if not rows:
        rows = f'<tr class="empty"><td colspan="{len(COLUMNS)}">No cache has sent a heartbeat yet.</td></tr>'
    static = f"static/status.css?v={_e(__version__)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>Shoal: {len(entries)} caches</title>
<link rel="stylesheet" href="{static}">
</head>
<body>
<header><h1>Shoal</h1><span class="sub">nearest Squid caches for the grid</span></header>
<main id="live">
<section class="summary" aria-label="summary">
<div class="card"><span class="num" id="cache-count">{len(entries)}</span><span class="label">caches</span></div>
<div class="card"><span class="num" id="total-load">{total_load:.0f}</span><span class="label">KB/s aggregate load
 (<span id="load-percent">{percent}</span>% of {total_max:.0f})</span></div>
<div class="card"><span class="num" id="verified-count">{verified}</span><span class="label">verified</span></div>
<div class="card"><span class="num" id="unauthenticated-count">{unauthenticated}</span><span class="label">unauthenticated (legacy agents)</span></div>
<div class="card"><span class="num" id="drift-count">{drifting}</span><span class="label">clock drift &gt; {drift_tolerance:.0f} s</span></div>
<div class="card"><span class="num state {state_class}" id="consumer-state">{state}</span><span class="label">broker consumer</span></div>
<div class="card"><span class="num" id="refused-count">{len(refused)}</span><span class="label"><a href="#refused">refused senders</a></span></div>
</section>
{map_html}
<section class="caches">
<div class="table-wrap"><table id="caches" data-sort="{_e(request.sort)}" data-order="{'desc' if request.descending else 'asc'}">
<thead><tr>{_headings(request)}</tr></thead>
<tbody>
{rows}
</tbody></table></div>
{_nav(request, pages, len(entries))}
</section>
{render_refused(refused, now)}
<p class="foot">Updated <time id="updated" datetime="{_utc(now)}">{_utc(now)}</time>; refreshes every {refresh} s.
 JSON: <a href="all">/all</a>, <a href="nearest">/nearest</a>, <a href="wpad.dat">/wpad.dat</a>, <a href="metrics">/metrics</a>.</p>
</main>
</body></html>
"""


def _headings(request: PageRequest) -> str:
    cells = []
    for key, (label, _) in COLUMNS.items():
        current = key == request.sort
        descending = not request.descending if current else key in ("load", "drift")
        href = request.query(sort=key, descending=descending, page=1)
        aria = f' aria-sort="{"descending" if request.descending else "ascending"}"' if current else ""
        arrow = (" ▼" if request.descending else " ▲") if current else ""
        cells.append(f'<th data-col="{key}"{aria}><a href="{_e(href)}">{label}{arrow}</a></th>')
    return "".join(cells)


def _row_parts(e: CacheEntry, tolerance: float) -> Tuple[str, str, str]:
    """A cache's table row, cut where the two ages (the only parts that depend on the clock) go."""
    hb = e.hb
    ratio = hb.load / hb.max_load if hb.max_load > 0 else 1.0
    level = load_level(hb.load, hb.max_load)
    bar_width = max(0.0, min(100.0, 100.0 * ratio))
    ips = [(label, value) for label, value in (("ext", hb.external_ip), ("pub", hb.public_ip),
                                                ("priv", hb.private_ip)) if value]
    ip_cell = "<br>".join(f'<span class="ip"><span class="tag">{label}</span> {_e(value)}</span>'
                          for label, value in ips)
    seconds = int(round(hb.drift))
    drift_text = f"{seconds:+d} s" if seconds else "0 s"
    drift = f'<span class="{"flag" if hb.drifting(tolerance) else "muted"}">{drift_text}</span>'
    verified = '<span class="yes">yes</span>' if e.is_verified else '<span class="no">no</span>'
    unauth = ("" if hb.authenticated else
              ' <span class="tag unauth" title="legacy agent: no broker identity">unauthenticated</span>')
    head = (
        f'<tr data-uuid="{_e(e.uuid)}" data-authenticated="{"true" if hb.authenticated else "false"}">'
        f'<td data-label="Hostname" class="host"><span>{_e(hb.hostname)}<span class="muted">:{hb.squid_port}</span></span>{unauth}</td>'
        f'<td data-label="IP addresses">{ip_cell}</td>'
        f'<td data-label="Location">{_e(_place(e))}</td>'
        f'<td data-label="Load" class="load" data-load="{hb.load:.1f}" data-max-load="{hb.max_load:.1f}">'
        f'<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="track" width="100" height="8"/><rect class="l{level}" width="{bar_width:.1f}" height="8"/></svg>'
        f'<span class="nums">{hb.load:.0f} / {hb.max_load:.0f} KB/s</span></td>'
        f'<td data-label="Last heard"><span title="{_utc(e.last_active)}">'
    )
    middle = f' ago</span></td><td data-label="Up time"><span title="since {_utc(e.created)}">'
    tail = (f'</span></td><td data-label="Verified">{verified}</td>'
            f'<td data-label="Clock drift">{drift}</td></tr>')
    return head, middle, tail


def _offset(refusal: Refusal) -> str:
    if refusal.offset is None:
        return '<span class="muted">-</span>'
    seconds = int(round(refusal.offset))
    return f'{seconds:+d} s ({"ahead" if seconds > 0 else "behind"})'


_UNREADABLE = '<span class="muted">unreadable</span>'
_NONE = '<span class="muted">none</span>'


def render_refused(refused: Sequence[Refusal], now: float) -> str:
    """The senders whose latest heartbeat was refused, newest first: why, how far off, when."""
    if not refused:
        body = ('<tr class="empty"><td colspan="7">No heartbeat has been refused'
                ' since the server started.</td></tr>')
    else:
        body = "\n".join(
            f'<tr data-reason="{_e(r.reason)}">'
            f'<td data-label="Hostname" class="host">{_e(r.hostname) if r.hostname else _UNREADABLE}</td>'
            f'<td data-label="uuid"><code>{_e(r.uuid) if r.uuid else "-"}</code></td>'
            f'<td data-label="Broker user">{_e(r.user_id) if r.user_id else _NONE}</td>'
            f'<td data-label="Reason"><span class="flag">{_e(r.reason)}</span><br>'
            f'<span class="muted">{_e(r.detail)}</span></td>'
            f'<td data-label="Clock offset">{_offset(r)}</td>'
            f'<td data-label="Last seen"><span title="{_utc(r.last_seen)}">{_age(now - r.last_seen)} ago</span></td>'
            f'<td data-label="Count">{r.count}</td></tr>'
            for r in refused)
    return ('<section class="refused" id="refused" aria-label="refused senders">'
            '<h2>Refused senders</h2>'
            '<p class="muted">Agents whose latest heartbeat was dropped, newest first (reasons: docs/protocol.md).'
            ' A sender leaves this list when a heartbeat of it is accepted.</p>'
            '<div class="table-wrap"><table id="refused-senders"><thead><tr><th>Hostname</th><th>uuid</th>'
            '<th>Broker user</th><th>Reason</th><th>Clock offset</th><th>Last seen</th><th>Count</th></tr></thead>'
            f'<tbody>\n{body}\n</tbody></table></div></section>')


def _nav(request: PageRequest, pages: int, total: int) -> str:
    if pages == 1:
        return ""
    links = []
    for label, target, enabled in (("« first", 1, request.page > 1), ("‹ previous", request.page - 1, request.page > 1),
                                   ("next ›", request.page + 1, request.page < pages),
                                   ("last »", pages, request.page < pages)):
        if enabled:
            links.append(f'<a href="{_e(request.query(page=target))}">{label}</a>')
        else:
            links.append(f'<span class="muted">{label}</span>')
    middle = f'<span id="page-info">page {request.page} of {pages} ({total} caches)</span>'
    return f'<nav class="pages">{links[0]} {links[1]} {middle} {links[2]} {links[3]}</nav>'


# ---------------------------------------------------------------------------------------------
# The map.

@dataclasses.dataclass(frozen=True)
class Mark:
    """One circle on the map: one cache, or (above MAP_MARK_LIMIT) the caches of one grid cell."""

    x: float
    y: float
    load: float
    max_load: float
    label: str
    caches: int


def map_marks(entries: Sequence[CacheEntry]) -> Tuple[List[Mark], int]:
    """Return the marks to draw and how many caches have no location."""
    totals = _Totals(0.0)
    for e in entries:
        totals.add(e, 1)
    return map_marks_of(entries, totals)


def map_marks_of(entries: Sequence[CacheEntry], totals: _Totals) -> Tuple[List[Mark], int]:
    """The marks of ``entries``, whose cell sums ``totals`` holds.

    Up to MAP_MARK_LIMIT located caches, one mark each; above, one per grid cell, at the mean
    position of its caches, labelled with the place most of them are in (ties: the first name).
    Marks are drawn least loaded first, so the busiest are on top.
    """
    located = totals.caches - totals.unplaced
    if located <= MAP_MARK_LIMIT:
        marks = []
        pairs = [(e, e.location) for e in entries if e.location is not None]
        for e, loc in sorted(pairs, key=lambda pair: pair[0].hb.load / pair[0].hb.max_load):
            x, y = project(loc.longitude, loc.latitude)   # type: ignore[union-attr]
            label = f"{e.hb.hostname} — {_place(e)} — {e.hb.load:.0f} / {e.hb.max_load:.0f} KB/s"
            marks.append(Mark(x, y, e.hb.load, e.hb.max_load, label, 1))
        return marks, totals.unplaced
    drawn = sorted((cell.draw(key) for key, cell in totals.cells.items()), key=operator.itemgetter(0))
    return [mark for _, mark, _ in drawn], totals.unplaced


# id(entry) -> (entry, its circle): the entry is held, so an id found here is that very entry.
Circles = Dict[int, Tuple[CacheEntry, str]]


def _map_svg(entries: Sequence[CacheEntry], totals: _Totals, known: Circles) -> Tuple[List[str], int, Circles]:
    """The circles of the map in drawing order, the number of unplaced caches, and the circles of caches.

    One circle per cache (up to MAP_MARK_LIMIT located) is kept per entry in ``known`` (the
    previous version's) and drawn again only for changed entries.
    """
    if totals.caches - totals.unplaced <= MAP_MARK_LIMIT:
        located = sorted((e for e in entries if e.location is not None), key=lambda e: e.hb.load / e.hb.max_load)
        circles: Circles = {}
        for e in located:
            drawn = known.get(id(e))
            if drawn is None:
                loc = e.location
                x, y = project(loc.longitude, loc.latitude)   # type: ignore[union-attr]
                label = f"{e.hb.hostname} — {_place(e)} — {e.hb.load:.0f} / {e.hb.max_load:.0f} KB/s"
                drawn = (e, _circle(Mark(x, y, e.hb.load, e.hb.max_load, label, 1)))
            circles[id(e)] = drawn
        return [svg for _, svg in circles.values()], totals.unplaced, circles
    cells_drawn = sorted((cell.draw(key) for key, cell in totals.cells.items()), key=operator.itemgetter(0))
    return [svg for _, _, svg in cells_drawn], totals.unplaced, {}


def render_map(entries: Sequence[CacheEntry], outline: Optional[WorldOutline]) -> str:
    """Inline SVG: land outline, then one circle per cache sized and coloured by its load."""
    return render_map_marks(map_marks(entries), len(entries), outline)


def _circle(m: Mark) -> str:
    ratio = m.load / m.max_load if m.max_load > 0 else 1.0
    radius = 3.0 + 5.0 * min(1.0, ratio) + (min(4.0, math.log2(m.caches)) if m.caches > 1 else 0.0)
    return (f'<circle class="mark l{load_level(m.load, m.max_load)}" cx="{m.x:.1f}" cy="{m.y:.1f}" '
            f'r="{radius:.1f}" data-caches="{m.caches}"><title>{_e(m.label)}</title></circle>')


def render_map_marks(marked: Tuple[List[Mark], int], caches: int, outline: Optional[WorldOutline]) -> str:
    marks, unplaced = marked
    return render_map_svg([_circle(m) for m in marks], unplaced, caches, outline)


def render_map_svg(circles: Sequence[str], unplaced: int, caches: int, outline: Optional[WorldOutline]) -> str:
    height = map_height()
    land = f'<path class="land" d="{outline.path}"/>' if outline is not None else ""
    note = (f'<p class="muted" id="unplaced">{unplaced} cache(s) without a GeoIP location are not on the map.</p>'
            if unplaced else "")
    return (f'<section class="map" aria-label="map of caches"><svg id="map" viewBox="0 0 {MAP_WIDTH} {height:.0f}" '
            f'role="img" aria-label="world map with {caches} caches">'
            f'<rect class="sea" width="{MAP_WIDTH}" height="{height:.0f}"/>{land}'
            f'<g id="marks">{"".join(circles)}</g></svg>{note}'
            '<p class="legend"><span class="key l0"></span>&lt;25% <span class="key l1"></span>&lt;60% '
            '<span class="key l2"></span>&lt;90% <span class="key l3"></span>≥90% of max load</p></section>')
