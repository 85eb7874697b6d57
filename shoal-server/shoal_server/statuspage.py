"""The human status page: pure HTML rendering from a snapshot; every agent value is escaped."""
from __future__ import annotations

import html
import math
from typing import Optional, Sequence

from .table import CacheEntry


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


def _place(entry: CacheEntry) -> str:
    loc = entry.location
    if loc is None:
        return "unknown"
    return ", ".join(p for p in (loc.city, loc.country_name or loc.country_code) if p) or "unknown"


def render_status(entries: Sequence[CacheEntry], now: float, page: int, page_size: int,
                  drift_tolerance: float, consumer_connected: bool) -> str:
    """Render one page of the status table, caches sorted by host name."""
    ordered = sorted(entries, key=lambda e: (e.hb.hostname, e.uuid))
    pages = max(1, math.ceil(len(ordered) / page_size))
    page = min(max(1, page), pages)
    shown = ordered[(page - 1) * page_size: page * page_size]
    total_load = sum(e.hb.load for e in entries)
    rows = "\n".join(_row(e, now, drift_tolerance) for e in shown)
    nav = _nav(page, pages)
    state = "connected" if consumer_connected else "DISCONNECTED"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>Shoal: {len(entries)} caches</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;width:100%}}
th,td{{border-bottom:1px solid #ddd;padding:.3em;text-align:left;font-size:.9em}}
.flag{{color:#b00}}</style></head>
<body><h1>Shoal</h1>
<p><span id="cache-count">{len(entries)}</span> caches, aggregate load
<span id="total-load">{total_load:.0f}</span> KB/s; broker consumer {state}.</p>
<table id="caches"><thead><tr><th>Hostname</th><th>Port</th><th>Public IP</th><th>Private IP</th>
<th>External IP</th><th>Location</th><th>Load (KB/s)</th><th>Max load</th><th>Last heard</th>
<th>Up</th><th>Verified</th><th>Clock drift</th></tr></thead>
<tbody>
{rows}
</tbody></table>
{nav}
</body></html>
"""


def _row(e: CacheEntry, now: float, tolerance: float) -> str:
    hb = e.hb
    drift = f'<span class="flag">{hb.drift:+.0f} s</span>' if hb.drifting(tolerance) else "ok"
    return (f"<tr><td>{_e(hb.hostname)}</td><td>{hb.squid_port}</td><td>{_e(hb.public_ip)}</td>"
            f"<td>{_e(hb.private_ip)}</td><td>{_e(hb.external_ip)}</td><td>{_e(_place(e))}</td>"
            f"<td>{hb.load:.0f}</td><td>{hb.max_load:.0f}</td><td>{_age(now - e.last_active)} ago</td>"
            f"<td>{_age(now - e.created)}</td><td>{'yes' if e.is_verified else 'no'}</td><td>{drift}</td></tr>")


def _nav(page: int, pages: int, ) -> str:
    if pages == 1:
        return ""
    prev_link = f'<a href="?page={page - 1}">previous</a>' if page > 1 else ""
    next_link = f'<a href="?page={page + 1}">next</a>' if page < pages else ""
    return f"<p>page {page} of {pages} {prev_link} {next_link}</p>"


def parse_page(text: Optional[str]) -> int:
    try:
        return max(1, int(text or "1"))
    except ValueError:
        return 1
