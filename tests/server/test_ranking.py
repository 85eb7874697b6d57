"""Ranking: the cost formula, and invariants checked over generated tables (hypothesis)."""
import math

from hypothesis import given, settings, strategies as st

from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat
from shoal_server.ranking import Weights, cost, rank, select
from shoal_server.table import CacheEntry


def entry(uuid, lat=None, lon=None, load=0.0, max_load=1000.0, ip="142.90.1.1", upstream="both", verified=None):
    hb = Heartbeat(uuid=uuid, hostname=f"{uuid}.example.org", squid_port=3128, public_ip=ip, private_ip=None,
                   external_ip=None, load=load, max_load=max_load, timestamp=0.0, drift=0.0, verified=False,
                   upstream=upstream, cache_type="squid", agent_version=None, user_id=None)
    loc = Location(lat, lon) if lat is not None else None
    return CacheEntry(hb=hb, created=0.0, last_active=0.0, location=loc, verified=verified)


W = Weights()
VICTORIA = Location(48.43, -123.37)

caches = st.lists(
    st.tuples(st.floats(-90, 90), st.floats(-180, 180), st.floats(0, 2000), st.floats(1, 2000)),
    max_size=40,
).map(lambda rows: [entry(f"c{i}", lat, lon, load, ml) for i, (lat, lon, load, ml) in enumerate(rows)])


@settings(max_examples=300, deadline=None)
@given(caches, st.floats(-90, 90), st.floats(-180, 180), st.integers(0, 50))
def test_never_more_than_n_never_twice_cheapest_first(entries, lat, lon, n):
    result = rank(entries, Location(lat, lon), None, W, n)
    assert len(result) == min(n, len(entries))
    assert len({r.entry.uuid for r in result}) == len(result)
    costs = [r.cost for r in result]
    assert costs == sorted(costs)
    if result and len(entries) > n:
        chosen = {r.entry.uuid for r in result}
        worst = max(costs)
        for e in entries:
            if e.uuid not in chosen:
                assert rank([e], Location(lat, lon), None, W, 1)[0].cost >= worst - 1e-12


@given(st.floats(0, math.pi), st.floats(0, math.pi), st.floats(0, 5000), st.floats(1, 5000),
       st.floats(0, 1), st.floats(0.1, 4))
def test_cost_monotone_in_distance_at_equal_load(a1, a2, load, max_load, w, b):
    near, far = sorted((a1, a2))
    weights = Weights(w, b)
    assert cost(near, load, max_load, weights) <= cost(far, load, max_load, weights)


@given(st.floats(0, math.pi), st.floats(0, 5000), st.floats(0, 5000), st.floats(1, 5000),
       st.floats(0, 1), st.floats(0.1, 4))
def test_cost_monotone_in_load_at_equal_distance(angle, l1, l2, max_load, w, b):
    low, high = sorted((l1, l2))
    weights = Weights(w, b)
    assert cost(angle, low, max_load, weights) <= cost(angle, high, max_load, weights)


def test_formula_matches_the_documented_one():
    # Half the globe away, at half load, w = 0.5, b = 1: 0.5 * 1 + 0.5 * 0.5.
    assert cost(math.pi, 500, 1000, Weights(0.5, 1)) == 0.75
    assert cost(0, 1000, 1000, Weights(0.25, 2)) == 0.75


def test_nearest_first_then_load_moves_it_down():
    triumf = entry("triumf", 49.46, -122.82, load=10)
    fnal = entry("fnal", 41.85, -88.31, load=10)
    cern = entry("cern", 46.2, 6.14, load=10)
    order = [r.entry.uuid for r in rank([cern, fnal, triumf], VICTORIA, None, W, 3)]
    assert order == ["triumf", "fnal", "cern"]
    # At max_load the load term adds (1 - w) * 1 = 0.5: more than the distance term to Batavia
    # (0.5 * 2,900 km / 20,015 km = 0.07) and to Geneva (0.5 * 8,400 / 20,015 = 0.21).
    busy = entry("triumf", 49.46, -122.82, load=1000)
    order = [r.entry.uuid for r in rank([cern, fnal, busy], VICTORIA, None, W, 3)]
    assert order == ["fnal", "cern", "triumf"]
    # Half loaded it costs 0.25 + 0.002: behind both; at a tenth (0.05 + 0.002) it leads again.
    half = entry("triumf", 49.46, -122.82, load=500)
    order = [r.entry.uuid for r in rank([cern, fnal, half], VICTORIA, None, W, 3)]
    assert order == ["fnal", "cern", "triumf"]
    quarter = entry("triumf", 49.46, -122.82, load=100)
    order = [r.entry.uuid for r in rank([cern, fnal, quarter], VICTORIA, None, W, 3)]
    assert order == ["triumf", "fnal", "cern"]


def test_distance_reported_in_km():
    r = rank([entry("cern", 46.2, 6.14)], VICTORIA, None, W, 1)[0]
    assert 8200 < r.distance_km < 8500


def test_unplaced_client_gets_same_site_first_then_least_loaded():
    a = entry("a", 46.2, 6.14, load=500, ip="128.141.1.1")
    b = entry("b", 41.85, -88.31, load=5, ip="131.225.1.1")
    c = entry("c", 49.46, -122.82, load=900, ip="142.90.1.1")
    result = rank([a, b, c], None, "142.90.1.1", W, 3)
    assert [r.entry.uuid for r in result] == ["c", "b", "a"]
    assert all(r.distance_km is None for r in result)
    assert [r.entry.uuid for r in rank([a, b, c], None, "10.1.1.1", W, 3)] == ["b", "a", "c"]


def test_unplaced_cache_ranks_as_farthest_with_null_distance():
    placed = entry("placed", -33.9, 18.4)
    unplaced = entry("unplaced")
    result = rank([unplaced, placed], VICTORIA, None, W, 2)
    assert [r.entry.uuid for r in result] == ["placed", "unplaced"]
    assert result[1].distance_km is None


def test_select_filters_by_upstream_and_verification():
    items = [entry("cv", upstream="cvmfs", verified=True), entry("fr", upstream="frontier"), entry("bo")]
    assert [e.uuid for e in select(items, upstream="cvmfs")] == ["cv", "bo"]
    assert [e.uuid for e in select(items, upstream="frontier")] == ["fr", "bo"]
    assert [e.uuid for e in select(items, verified_only=True)] == ["cv"]
