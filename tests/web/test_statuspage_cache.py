"""The status page and /all served from per-version caches equal a fresh render after any changes.

``Shoal`` derives each snapshot's ``StatusView`` from the previous one and re-encodes only the
changed entries of ``/all``; whatever mix of new caches, heartbeats, verifications, moves and
expiries came before, the bytes served must be those a render from scratch gives.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shoal_server import statuspage
from shoal_server.config import ServerConfig
from shoal_server.consumer import ConsumerStatus
from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat, InvalidHeartbeat
from shoal_server.render import cache_record, to_json
from shoal_server.statuspage import COLUMNS, PageRequest, render_status
from shoal_server.table import CacheTable
from shoal_server.webapp import Shoal

NOW = 1_700_000_000.0
# Few places, several in one 2° map cell, one name shared by two places; None: unplaced.
PLACES = [Location(46.2, 6.1, city="Geneva", country_code="CH", country_name="Switzerland"),
          Location(46.9, 7.4, city="Bern", country_code="CH", country_name="Switzerland"),
          Location(46.3, 6.9, city="Geneva", country_code="CH", country_name="Switzerland"),
          Location(49.0, -123.1, city="Vancouver", country_code="CA", country_name="Canada"),
          Location(-33.9, 151.2, city=None, country_code="AU", country_name=None),
          None]
LOADS = [0.0, 0.1, 0.2, 0.3, 250.0, 999.9, 1e6]


class Locator:
    def locate(self, address):
        return None

    def close(self):
        pass


def heartbeat(i: int, load: float, drift: float, place: int, auth: bool) -> Heartbeat:
    return Heartbeat(uuid=f"u{i:03d}", hostname=f"squid{i % 4}.example.org", squid_port=3128,
                     public_ip=f"192.0.2.{place}", private_ip=None, external_ip=None, load=load,
                     max_load=1000.0, timestamp=NOW + drift, drift=drift, verified=bool(i % 2),
                     upstream="both", cache_type="squid", agent_version=None, user_id=None, authenticated=auth)


def locate(address: str):
    return PLACES[int(address.rsplit(".", 1)[1])]


OPS = st.one_of(
    st.tuples(st.just("beat"), st.integers(0, 40), st.sampled_from(LOADS), st.sampled_from([0.0, -90.0, 75.0]),
              st.integers(0, len(PLACES) - 1), st.booleans()),
    st.tuples(st.just("verify"), st.integers(0, 40), st.booleans()),
    st.tuples(st.just("expire"), st.integers(1, 30)),
    st.tuples(st.just("look")),
)

REQUESTS = [PageRequest(page, sort, desc) for sort in COLUMNS for desc in (False, True) for page in (1, 3)]


def fresh_page(shoal: Shoal, request: PageRequest, size: int) -> str:
    return render_status(shoal.table.snapshot(), NOW, request, size, shoal.config.cache.cache_clock_drift,
                         shoal.status.connected, shoal.outline, refused=shoal.status.refused.newest(50))


def fresh_all(shoal: Shoal) -> str:
    entries = sorted(shoal.table.snapshot(), key=lambda e: (e.hb.hostname, e.uuid))
    return to_json(cache_record(e, verification=shoal.config.cache.cache_verification) for e in entries)


def query(request: PageRequest) -> dict:
    return {"page": str(request.page), "sort": request.sort, "order": "desc" if request.descending else "asc"}


def check(shoal: Shoal, requests) -> None:
    for request in requests:
        assert shoal.status_page(query(request), "10")[2] == fresh_page(shoal, request, 10).encode(), request
    assert shoal.all()[2] == fresh_all(shoal).encode("ascii")


@pytest.mark.parametrize("limit", [2, statuspage.MAP_MARK_LIMIT])   # merged marks per cell, one per cache
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, max_size=60))
def test_cached_page_and_all_equal_a_fresh_render_after_any_changes(monkeypatch, limit, ops):
    monkeypatch.setattr(statuspage, "MAP_MARK_LIMIT", limit)
    table = CacheTable()
    shoal = Shoal(table, Locator(), ServerConfig(), ConsumerStatus(), clock=lambda: NOW)
    seen = set()
    clock = NOW - 100
    for op in ops:
        clock += 1
        if op[0] == "beat":
            _, i, load, drift, place, auth = op
            try:   # an authenticated heartbeat evicts unauthenticated ones of its host name
                table.upsert(heartbeat(i, load, drift, place, auth), clock, locate)
            except InvalidHeartbeat:
                continue   # refused (the host name is held): the table is unchanged
            seen.add(i)
        elif op[0] == "verify":
            table.set_verified(f"u{op[1]:03d}", op[2])
        elif op[0] == "expire":
            table.expire(clock, op[1])
        # Some requests between changes (each sort order then carries over), sometimes none.
        check(shoal, REQUESTS[:: 1 + len(seen) % 5] if op[0] == "look" else REQUESTS[:2])
    check(shoal, REQUESTS)


def test_many_caches_over_the_mark_limit_stay_exact():
    # 2,500 located caches (merged marks), loads whose float sums depend on their order.
    table = CacheTable()
    shoal = Shoal(table, Locator(), ServerConfig(), ConsumerStatus(), clock=lambda: NOW)
    for i in range(2500):
        table.upsert(heartbeat(i, LOADS[i % 4] + i / 7, 0.0, i % 5, True), NOW - 10, locate)
    check(shoal, REQUESTS[:4])
    for i in range(0, 2500, 97):
        table.upsert(heartbeat(i, 0.7 * i, 0.0, (i + 1) % 6, True), NOW - 5, locate)
        check(shoal, REQUESTS[:2])
    table.expire(NOW - 5, 1.0)   # all but the refreshed ones: the views are rebuilt
    check(shoal, REQUESTS)


def test_a_view_is_reused_until_the_table_changes():
    table = CacheTable()
    shoal = Shoal(table, Locator(), ServerConfig(), ConsumerStatus(), clock=lambda: NOW)
    table.upsert(heartbeat(1, 10.0, 0.0, 0, True), NOW, locate)
    view = shoal.view()
    assert shoal.view() is view and shoal.all()[2] is shoal.all()[2]
    table.upsert(heartbeat(1, 20.0, 0.0, 0, True), NOW, locate)
    assert shoal.view() is not view


def test_kept_rows_show_the_ages_of_the_request_time():
    # A row is rendered once per entry; its "heard ... ago" and up time still follow the clock.
    table = CacheTable()
    now = [NOW]
    shoal = Shoal(table, Locator(), ServerConfig(), ConsumerStatus(), clock=lambda: now[0])
    for i in range(3):
        table.upsert(heartbeat(i, 10.0 * i, 0.0, i, True), NOW - 30, locate)
    first = shoal.status_page({})[2].decode()
    assert "30 s ago" in first
    now[0] = NOW + 600
    later = shoal.status_page({})[2].decode()
    assert "10 min ago" in later and "30 s ago" not in later
    assert later == render_status(table.snapshot(), NOW + 600, PageRequest(), shoal.config.general.status_page_size,
                                  shoal.config.cache.cache_clock_drift, shoal.status.connected, shoal.outline)
