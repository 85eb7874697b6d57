"""The human status page: pure HTML rendering from a table snapshot.

Everything here is a function of its arguments (no I/O except ``load_world_outline``), so it is
tested by calling it. Every value that came from an agent or the GeoIP database passes through
``_e`` (HTML escaping, quotes included) before it reaches the page, also inside attributes and
the SVG map. The page needs no JavaScript (sorting and paging are links, the map is inline SVG
drawn here, refresh is a meta refresh that keeps the query), and ``static/status.css`` styles it,
so the page works under a Content-Security-Policy that forbids every script.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple
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
    ordered = sorted_entries(entries, request)
    pages = max(1, math.ceil(len(ordered) / page_size))
    page = min(request.page, pages)
    request = dataclasses.replace(request, page=page)
    shown = ordered[(page - 1) * page_size: page * page_size]
    total_load = sum(e.hb.load for e in entries)
    total_max = sum(e.hb.max_load for e in entries)
    verified = sum(1 for e in entries if e.is_verified)
    drifting = sum(1 for e in entries if e.hb.drifting(drift_tolerance))
    unauthenticated = sum(1 for e in entries if not e.hb.authenticated)
    percent = f"{100.0 * total_load / total_max:.0f}" if total_max else "0"
    state, state_class = ("connected", "ok") if consumer_connected else ("DISCONNECTED", "bad")
    rows = "\n".join(_row(e, now, drift_tolerance) for e in shown)
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
{render_map(entries, outline)}
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


def _row(e: CacheEntry, now: float, tolerance: float) -> str:
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
    return (
        f'<tr data-uuid="{_e(e.uuid)}" data-authenticated="{"true" if hb.authenticated else "false"}">'
        f'<td data-label="Hostname" class="host"><span>{_e(hb.hostname)}<span class="muted">:{hb.squid_port}</span></span>{unauth}</td>'
        f'<td data-label="IP addresses">{ip_cell}</td>'
        f'<td data-label="Location">{_e(_place(e))}</td>'
        f'<td data-label="Load" class="load" data-load="{hb.load:.1f}" data-max-load="{hb.max_load:.1f}">'
        f'<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect class="track" width="100" height="8"/><rect class="l{level}" width="{bar_width:.1f}" height="8"/></svg>'
        f'<span class="nums">{hb.load:.0f} / {hb.max_load:.0f} KB/s</span></td>'
        f'<td data-label="Last heard"><span title="{_utc(e.last_active)}">{_age(now - e.last_active)} ago</span></td>'
        f'<td data-label="Up time"><span title="since {_utc(e.created)}">{_age(now - e.created)}</span></td>'
        f'<td data-label="Verified">{verified}</td>'
        f'<td data-label="Clock drift">{drift}</td></tr>'
    )


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
    located = [(e, e.location) for e in entries if e.location is not None]
    unplaced = len(entries) - len(located)
    if len(located) <= MAP_MARK_LIMIT:
        marks = []
        for e, loc in sorted(located, key=lambda pair: pair[0].hb.load / pair[0].hb.max_load):
            x, y = project(loc.longitude, loc.latitude)   # busiest drawn last, on top
            label = f"{e.hb.hostname} — {_place(e)} — {e.hb.load:.0f} / {e.hb.max_load:.0f} KB/s"
            marks.append(Mark(x, y, e.hb.load, e.hb.max_load, label, 1))
        return marks, unplaced
    cells: Dict[Tuple[int, int], List[Tuple[CacheEntry, Location]]] = {}
    for e, loc in located:
        cell = (int((loc.longitude + 180) // MAP_CELL_DEG), int((loc.latitude + 90) // MAP_CELL_DEG))
        cells.setdefault(cell, []).append((e, loc))
    marks = []
    for group in cells.values():
        lon = sum(loc.longitude for _, loc in group) / len(group)
        lat = sum(loc.latitude for _, loc in group) / len(group)
        load = sum(e.hb.load for e, _ in group)
        max_load = sum(e.hb.max_load for e, _ in group)
        x, y = project(lon, lat)
        label = f"{len(group)} caches near {_place(group[0][0])} — {load:.0f} / {max_load:.0f} KB/s"
        marks.append(Mark(x, y, load, max_load, label, len(group)))
    marks.sort(key=lambda m: m.load / m.max_load)
    return marks, unplaced


def render_map(entries: Sequence[CacheEntry], outline: Optional[WorldOutline]) -> str:
    """Inline SVG: land outline, then one circle per cache sized and coloured by its load."""
    marks, unplaced = map_marks(entries)
    height = map_height()
    circles = []
    for m in marks:
        ratio = m.load / m.max_load if m.max_load > 0 else 1.0
        radius = 3.0 + 5.0 * min(1.0, ratio) + (min(4.0, math.log2(m.caches)) if m.caches > 1 else 0.0)
        circles.append(f'<circle class="mark l{load_level(m.load, m.max_load)}" cx="{m.x:.1f}" cy="{m.y:.1f}" '
                       f'r="{radius:.1f}" data-caches="{m.caches}"><title>{_e(m.label)}</title></circle>')
    land = f'<path class="land" d="{outline.path}"/>' if outline is not None else ""
    note = (f'<p class="muted" id="unplaced">{unplaced} cache(s) without a GeoIP location are not on the map.</p>'
            if unplaced else "")
    return (f'<section class="map" aria-label="map of caches"><svg id="map" viewBox="0 0 {MAP_WIDTH} {height:.0f}" '
            f'role="img" aria-label="world map with {len(entries)} caches">'
            f'<rect class="sea" width="{MAP_WIDTH}" height="{height:.0f}"/>{land}'
            f'<g id="marks">{"".join(circles)}</g></svg>{note}'
            '<p class="legend"><span class="key l0"></span>&lt;25% <span class="key l1"></span>&lt;60% '
            '<span class="key l2"></span>&lt;90% <span class="key l3"></span>≥90% of max load</p></section>')
