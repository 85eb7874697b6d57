"""The status page renderer, called directly: escaping of hostile values, sorting, paging, the map."""
from __future__ import annotations

import dataclasses
import html.parser
import re
import time

import pytest

from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat
from shoal_server.statuspage import (MAP_MARK_LIMIT, PageRequest, load_world_outline, map_marks, parse_request,
                                     project, render_status)
from shoal_server.table import CacheEntry

NOW = 1_700_000_000.0
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">"\'&'


def entry(host: str = "squid.example.org", load: float = 100.0, max_load: float = 1000.0, lat: float = 46.2,
          lon: float = 6.1, city: str = "Geneva", uuid: str = "", drift: float = 0.0, created: float = NOW - 3600,
          last: float = NOW - 5, verified=None, located: bool = True) -> CacheEntry:
    hb = Heartbeat(uuid=uuid or host, hostname=host, squid_port=3128, public_ip="128.141.1.1",
                   private_ip="10.0.0.1", external_ip=None, load=load, max_load=max_load, timestamp=NOW + drift,
                   drift=drift, verified=False, upstream="both", cache_type="squid", agent_version=None,
                   user_id=None)
    loc = Location(lat, lon, city=city, country_code="CH", country_name="Switzerland") if located else None
    return CacheEntry(hb=hb, created=created, last_active=last, location=loc, verified=verified)


class Collector(html.parser.HTMLParser):
    """Elements and attributes as a browser's parser sees them (no regex on HTML)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    return collector


def render(entries, request=PageRequest(), page_size=100, **kw) -> str:
    return render_status(entries, NOW, request, page_size, 60.0, True, load_world_outline(), **kw)


def test_hostile_values_from_every_source_are_escaped():
    # The validator never lets markup into a heartbeat; the renderer must not depend on that.
    hb_host = entry(host=HOSTILE, city=HOSTILE, uuid=HOSTILE)
    hb_host = dataclasses.replace(hb_host, hb=dataclasses.replace(hb_host.hb, public_ip=HOSTILE,
                                                                  private_ip=HOSTILE, external_ip=HOSTILE))
    page = render([hb_host, entry()])
    doc = parse(page)
    tags = [t for t, _ in doc.tags]
    assert "script" not in tags and "img" not in tags
    assert not any(name.startswith("on") for _, attrs in doc.tags for name in attrs)
    assert HOSTILE in "".join(doc.text)   # shown as text, exactly
    assert any(attrs.get("data-uuid") == HOSTILE for _, attrs in doc.tags)


def test_one_row_per_cache_and_one_mark_per_cache():
    entries = [entry(host=f"squid{i}.example.org", lat=10 * i - 40, lon=30 * i - 170) for i in range(9)]
    doc = parse(render(entries))
    rows = [a for t, a in doc.tags if t == "tr" and "data-uuid" in a]
    marks = [a for t, a in doc.tags if t == "circle" and "mark" in a.get("class", "")]
    assert len(rows) == 9 and len(marks) == 9
    assert re.search(r'id="cache-count">9<', render(entries))


def test_summary_aggregates_load():
    page = render([entry(host="a.example.org", load=300, max_load=1000), entry(host="b.example.org", load=200,
                                                                                max_load=1000)])
    assert '<span class="num" id="total-load">500</span>' in page
    assert '<span id="load-percent">25</span>' in page


@pytest.mark.parametrize("sort,desc,expected", [
    ("hostname", False, ["a", "b", "c"]),
    ("hostname", True, ["c", "b", "a"]),
    ("load", True, ["b", "c", "a"]),        # by fraction of max_load
    ("up", False, ["b", "a", "c"]),         # shortest up time first, like the column reads
    ("drift", True, ["a", "c", "b"]),
])
def test_sorting(sort, desc, expected):
    entries = [entry(host="a", load=10, max_load=1000, created=NOW - 100, drift=90),
               entry(host="b", load=900, max_load=1000, created=NOW - 50, drift=0),
               entry(host="c", load=50, max_load=100, created=NOW - 1000, drift=-10)]
    doc = parse(render(entries, PageRequest(sort=sort, descending=desc)))
    assert [a["data-uuid"] for t, a in doc.tags if t == "tr" and "data-uuid" in a] == expected


def test_paging_keeps_sort_and_covers_every_cache_once():
    entries = [entry(host=f"s{i:03d}", load=i) for i in range(25)]
    seen = []
    for page in (1, 2, 3):
        doc = parse(render(entries, PageRequest(page=page, sort="load", descending=True), page_size=10))
        seen += [a["data-uuid"] for t, a in doc.tags if t == "tr" and "data-uuid" in a]
        links = [a["href"] for t, a in doc.tags if t == "a" and "page=" in a.get("href", "")]
        assert all("sort=load" in href and "order=desc" in href for href in links)
    assert seen == [f"s{i:03d}" for i in reversed(range(25))]
    # The map still shows every cache, whatever page the table is on.
    doc = parse(render(entries, PageRequest(page=3), page_size=10))
    assert len([a for t, a in doc.tags if t == "circle"]) == 25


def test_page_beyond_the_end_shows_the_last_page():
    entries = [entry(host=f"s{i}") for i in range(12)]
    assert "page 2 of 2" in render(entries, PageRequest(page=99), page_size=10)


def test_parse_request_ignores_junk():
    assert parse_request({"page": "x", "sort": "<script>", "order": "up"}) == PageRequest()
    assert parse_request({"page": "3", "sort": "load", "order": "desc"}) == PageRequest(3, "load", True)


def test_ten_thousand_caches_page_is_bounded_and_quick():
    entries = [entry(host=f"squid{i}.example.org", lat=(i % 120) - 55, lon=(i * 7) % 360 - 180, uuid=f"u{i}")
               for i in range(10_000)]
    start = time.perf_counter()
    page = render(entries, page_size=100)
    elapsed = time.perf_counter() - start
    doc = parse(page)
    assert len([a for t, a in doc.tags if t == "tr" and "data-uuid" in a]) == 100
    marks = [a for t, a in doc.tags if t == "circle"]
    assert len(marks) < MAP_MARK_LIMIT and sum(int(a["data-caches"]) for a in marks) == 10_000
    assert len(page) < 600_000 and elapsed < 5.0, (len(page), elapsed)


def test_unlocated_caches_are_counted_not_drawn():
    marks, unplaced = map_marks([entry(host="a"), entry(host="b", located=False)])
    assert len(marks) == 1 and unplaced == 1
    assert 'id="unplaced">1 cache' in render([entry(host="a"), entry(host="b", located=False)])


def test_projection_and_outline():
    assert project(-180, 84) == (0.0, 0.0)
    x, y = project(0, 0)
    assert x == 360.0 and y == pytest.approx(168.0)
    outline = load_world_outline()
    assert len(outline.rings) > 20 and outline.path.startswith("M")
    # Europe, Africa, the Americas, Asia and Australia are land: some ring surrounds each point.
    for lon, lat in ((2.3, 48.9), (20.0, 0.0), (-100.0, 40.0), (-60.0, -10.0), (100.0, 50.0), (135.0, -25.0)):
        assert any(_inside(lon, lat, ring) for ring in outline.rings), (lon, lat)
    assert not any(_inside(-30.0, 30.0, ring) for ring in outline.rings)   # mid-Atlantic


def _inside(x, y, ring):
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside
