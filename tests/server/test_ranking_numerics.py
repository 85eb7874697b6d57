"""Ranking cannot fail or go NaN for any accepted heartbeat and any valid weights (issue 14, item 3).

Today's failures this guards against: ``load = 1e300, max_load = 1`` with ``cache_loadconstant > 1``
raised OverflowError (every /nearest* and /wpad.dat answered 500); ``cache_distloadweight = 1`` with a
tiny max_load made the cost 0 * inf = NaN, and a NaN sorts anywhere: an Australian cache came first
for Vancouver.
"""
import heapq
import json
import math
import time

import pytest
from hypothesis import given, settings, strategies as st

from shoal_server.config import load_config
from shoal_server.consumer import ConsumerStatus
from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat, Limits, parse_heartbeat
from shoal_server.ranking import RankIndex, Weights, _angle, rank
from shoal_server.table import LOAD_FRACTION_CAP, CacheEntry, CacheTable, Columns, load_fraction
from shoal_server.webapp import create_app

VANCOUVER, SYDNEY, GENEVA = Location(49.25, -123.1), Location(-33.87, 151.2), Location(46.2, 6.14)


def entry(uuid, location, load, max_load, ip="142.90.1.1"):
    hb = Heartbeat(uuid=uuid, hostname=f"{uuid}.example.org", squid_port=3128, public_ip=ip, private_ip=None,
                   external_ip=None, load=load, max_load=max_load, timestamp=0.0, drift=0.0, verified=False,
                   upstream="both", cache_type="squid", agent_version=None, user_id=None)
    return CacheEntry(hb=hb, created=0.0, last_active=0.0, location=location)


def brute_force(entries, client, weights, n):
    """Independent reference: the documented formula with the documented clamp, exact math, sorted."""
    w, b = weights.distload_weight, weights.load_exponent
    scored = []
    for e in entries:
        angle = _angle(client.unit_vector, e.unit) if client is not None else math.pi
        load, max_load = e.hb.load, e.hb.max_load
        f = 0.0 if load <= 0 else min(LOAD_FRACTION_CAP, load / max_load)
        scored.append((w * angle / math.pi + (1 - w) * (f ** b if f > 0 else 0.0), angle, e.uuid))
    return [u for _, _, u in heapq.nsmallest(n, scored)]


extreme = st.sampled_from([5e-324, 1e-308, 1e-300, 1e-9, 1.0, 122000.0, 1e300, 1.7976931348623157e308])
positive = extreme | st.floats(min_value=5e-324, max_value=1.7976931348623157e308, allow_nan=False,
                                 allow_infinity=False)
loads = st.just(0.0) | positive
places = st.sampled_from([VANCOUVER, SYDNEY, GENEVA, None])
weights = st.builds(Weights, st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 1.0),
                    st.sampled_from([0.01, 1.0, 2.0, 100.0]) | st.floats(0.01, 100.0))
tables = st.lists(st.tuples(places, loads, positive), min_size=1, max_size=70).map(
    lambda rows: [entry(f"c{i:02d}", p, load, ml) for i, (p, load, ml) in enumerate(rows)])


@settings(max_examples=300, deadline=None)
@given(tables, st.sampled_from([VANCOUVER, SYDNEY, None]), weights, st.integers(1, 8),
       st.sampled_from([0, RankIndex.SMALL]))
def test_costs_are_finite_and_both_paths_match_the_brute_force(entries, client, w, n, small):
    saved, RankIndex.SMALL = RankIndex.SMALL, small   # 0: the numpy pass even for tiny tables
    try:
        got = RankIndex(tuple(entries), Columns.from_entries(entries)).rank(client, None, w, n)
        plain = rank(entries, client, None, w, n)
    finally:
        RankIndex.SMALL = saved
    assert all(math.isfinite(r.cost) for r in got + plain)
    assert [r.cost for r in got] == sorted(r.cost for r in got)
    if client is not None:
        assert [r.entry.uuid for r in got] == [r.entry.uuid for r in plain] == brute_force(entries, client, w, n)


@given(loads, positive)
def test_load_fraction_is_bounded(load, max_load):
    f = load_fraction(load, max_load)
    assert 0.0 <= f <= LOAD_FRACTION_CAP
    assert load_fraction(load, 0.0) in (0.0, LOAD_FRACTION_CAP)     # a repaired-away max_load cannot blow up
    assert load_fraction(float("nan"), max_load) == LOAD_FRACTION_CAP          # not a number: fully loaded
    assert load_fraction(load, float("nan")) in (0.0, LOAD_FRACTION_CAP)


def test_overloaded_by_1e300_with_exponent_above_one_does_not_raise():
    """The table row: load = 1e300, max_load = 1, cache_loadconstant > 1 raised OverflowError."""
    entries = [entry("huge", VANCOUVER, 1e300, 1.0), entry("calm", GENEVA, 10.0, 122000.0)]
    for b in (1.5, 2.0, 100.0):
        ranked = RankIndex(tuple(entries), Columns.from_entries(entries)).rank(VANCOUVER, None, Weights(0.5, b), 2)
        assert [r.entry.uuid for r in ranked] == ["calm", "huge"]
        assert all(math.isfinite(r.cost) for r in ranked)


@pytest.mark.parametrize("small", [0, RankIndex.SMALL])
def test_australian_cache_never_first_for_vancouver_because_of_nan(small):
    """The table row: distance-only weights and a tiny max_load made the Sydney cost NaN."""
    entries = [entry("sydney", SYDNEY, 1.0, 1e-300, "1.1.1.1"), entry("vancouver", VANCOUVER, 10.0, 122000.0),
               entry("sydney2", SYDNEY, 1e300, 5e-324, "1.1.1.2")]
    saved, RankIndex.SMALL = RankIndex.SMALL, small
    try:
        ranked = RankIndex(tuple(entries), Columns.from_entries(entries)).rank(VANCOUVER, None, Weights(1.0, 1.0), 3)
    finally:
        RankIndex.SMALL = saved
    assert ranked[0].entry.uuid == "vancouver"
    assert all(math.isfinite(r.cost) for r in ranked)


def test_weights_outside_the_valid_range_are_refused():
    for bad in ((1.5, 1.0), (-0.1, 1.0), (0.5, 0.0), (0.5, 101.0), (float("nan"), 1.0), (0.5, float("inf"))):
        with pytest.raises(ValueError):
            Weights(*bad)


class FixedLocator:
    """GeoIP stand-in: heartbeat addresses and the asking client sit in known cities."""

    PLACES = {"142.90.1.1": VANCOUVER, "142.104.1.1": VANCOUVER, "150.203.1.1": SYDNEY, "188.184.1.1": GENEVA}

    def locate(self, address):
        return self.PLACES.get(address)

    def close(self):
        pass


def app_with(tmp_path, cache_lines, heartbeats):
    conf = tmp_path / "shoal_server.conf"
    conf.write_text("[cache]\n" + "".join(f"{line}\n" for line in cache_lines))
    table, now = CacheTable(), time.time()
    for body in heartbeats:
        table.upsert(parse_heartbeat(json.dumps(dict(body, timestamp=now)).encode(), now, Limits()), now,
                     FixedLocator().locate)
    return create_app(table, FixedLocator(), load_config(str(conf)), ConsumerStatus())


def hb(uuid, ip, load, max_load):
    return {"uuid": uuid, "hostname": f"{uuid}.example.org", "squid_port": 3128, "public_ip": ip,
            "load": load, "max_load": max_load}


@pytest.mark.parametrize("path", ["/nearest?ip=142.104.1.1", "/nearest/3?ip=142.104.1.1",
                                  "/nearestverified?ip=142.104.1.1", "/nearestcvmfs?ip=142.104.1.1",
                                  "/wpad.dat?ip=142.104.1.1", "/nearest?ip=8.8.8.8", "/wpad.dat"])
def test_routes_answer_200_with_an_overflowing_heartbeat(tmp_path, path):
    app = app_with(tmp_path, ["cache_loadconstant = 2.5"],
                   [hb("attacker", "142.90.1.1", 1e300, 1.0), hb("cern", "188.184.1.1", 10.0, 122000.0)])
    response = app.request(path)
    assert response.status.startswith("200"), response.data[:200]
    if path.startswith("/nearest") and "8.8.8.8" not in path and "verified" not in path:
        data = json.loads(response.data)
        assert data["0"]["uuid"] == "cern"      # the overloaded (by its own report) cache goes last


def test_vancouver_is_served_vancouver_with_distance_only_weights(tmp_path):
    app = app_with(tmp_path, ["cache_distloadweight = 1"],
                   [hb("anu", "150.203.1.1", 1.0, 1e-300), hb("triumf", "142.90.1.1", 10.0, 122000.0)])
    data = json.loads(app.request("/nearest?ip=142.104.1.1").data)
    assert [data[k]["uuid"] for k in sorted(data)] == ["triumf", "anu"]
    assert b"PROXY triumf.example.org:3128; PROXY anu.example.org:3128" in app.request(
        "/wpad.dat?ip=142.104.1.1").data
