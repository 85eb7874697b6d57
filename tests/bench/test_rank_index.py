"""The vectorised ranking (RankIndex over table Columns) gives exactly the plain formula's answers."""
import heapq
import json
import math

from hypothesis import given, settings, strategies as st

from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat, Limits, parse_heartbeat
from shoal_server.ranking import RankIndex, Weights, _angle, cost, load_term, rank, select
from shoal_server.table import CacheEntry, CacheTable, Columns


def reference(entries, client, client_ip, weights, n):
    """The 2024-style ranking: score every cache in Python, sort by (cost, angle, uuid)."""
    if n <= 0:
        return []
    if client is None:
        def key(e):
            same = client_ip is not None and client_ip in (e.hb.public_ip, e.hb.external_ip)
            return (0 if same else 1, load_term(e.hb.load, e.hb.max_load, weights.load_exponent), e.hb.uuid)
        return [(e.uuid, (1.0 - weights.distload_weight) * key(e)[1], None) for e in heapq.nsmallest(n, entries, key=key)]
    scored = []
    for e in entries:
        a = _angle(client.unit_vector, e.unit)
        scored.append((cost(a, e.hb.load, e.hb.max_load, weights), a, e.uuid, e))
    best = heapq.nsmallest(n, scored, key=lambda t: t[:3])
    return [(u, c, a * 6371.0 if e.unit is not None else None) for c, a, u, e in best]


def entry(uuid, lat, lon, load, max_load, ip, upstream, verified):
    hb = Heartbeat(uuid=uuid, hostname=f"{uuid}.example.org", squid_port=3128, public_ip=ip, private_ip=None,
                   external_ip=None, load=load, max_load=max_load, timestamp=0.0, drift=0.0, verified=False,
                   upstream=upstream, cache_type="squid", agent_version=None, user_id=None)
    return CacheEntry(hb=hb, created=0.0, last_active=0.0,
                      location=Location(lat, lon) if lat is not None else None, verified=verified)


# Few distinct values, so that ties in cost, angle and address are common.
coords = st.one_of(st.none(), st.tuples(st.sampled_from([0.0, 46.2, -33.9, 90.0]),
                                        st.sampled_from([0.0, 6.14, 18.4, -123.37, 180.0])),
                   st.tuples(st.floats(-90, 90), st.floats(-180, 180)))
rows = st.tuples(coords, st.sampled_from([0.0, 10.0, 500.0, 1000.0]) | st.floats(0, 3000),
                 st.sampled_from([1000.0, 122000.0]), st.sampled_from(["142.90.1.1", "131.225.1.1", "10.0.0.1"]),
                 st.sampled_from(["cvmfs", "frontier", "both"]), st.sampled_from([None, True, False]))
tables = st.lists(rows, max_size=150).map(
    lambda rs: [entry(f"c{i:03d}", *(c or (None, None)), load, ml, ip, up, v)
                for i, (c, load, ml, ip, up, v) in enumerate(rs)])
clients = st.one_of(st.none(), st.tuples(st.floats(-90, 90), st.floats(-180, 180)).map(lambda t: Location(*t)),
                    st.just(Location(46.2, 6.14)))


def shape(ranked):
    return [(r.entry.uuid, r.cost, r.distance_km) for r in ranked]


@settings(max_examples=150, deadline=None)
@given(tables, clients, st.sampled_from([None, "142.90.1.1", "8.8.8.8"]), st.integers(0, 12),
       st.sampled_from([Weights(), Weights(0.0, 1.0), Weights(1.0, 1.0), Weights(0.3, 2.5), Weights(0.5, 0.5)]),
       st.sampled_from([(False, None), (True, None), (False, "cvmfs"), (True, "frontier")]),
       st.sampled_from([0, RankIndex.SMALL]))
def test_index_equals_reference(entries, client, client_ip, n, weights, route, small):
    verified, upstream = route
    chosen = select(entries, verified, upstream)
    expected = reference(chosen, client, client_ip, weights, n)
    saved, RankIndex.SMALL = RankIndex.SMALL, small  # 0: the vector pass even for tiny tables
    try:
        index = RankIndex(tuple(entries), Columns.from_entries(entries))
        assert shape(index.rank(client, client_ip, weights, n, verified, upstream)) == expected
        assert shape(rank(chosen, client, client_ip, weights, n)) == expected
    finally:
        RankIndex.SMALL = saved


def heartbeat(uuid, ip, load, now):
    body = {"uuid": uuid, "hostname": f"{uuid}.example.org", "squid_port": 3128, "public_ip": ip, "load": load,
            "timestamp": now}
    return parse_heartbeat(json.dumps(body).encode(), now, Limits())


def fake_locate(ip):
    a, b = (int(p) for p in ip.split(".")[:2])
    return Location((a % 180) - 90.0, (b % 360) - 180.0)


ops = st.lists(st.one_of(
    st.tuples(st.just("up"), st.integers(0, 40), st.integers(1, 6), st.floats(0, 2000)),
    st.tuples(st.just("expire"), st.integers(0, 30)),
    st.tuples(st.just("verify"), st.integers(0, 40), st.booleans()),
), max_size=120)


@settings(max_examples=80, deadline=None)
@given(ops, clients)
def test_table_columns_follow_every_change(operations, client):
    table, now = CacheTable(), 1000.0
    for op in operations:
        now += 1.0
        if op[0] == "up":
            table.upsert(heartbeat(f"u{op[1]}", f"{op[2]}.{op[1]}.1.1", op[3], now), now, fake_locate)
        elif op[0] == "expire":
            table.expire(now, op[1])
        else:
            table.set_verified(f"u{op[1]}", op[2])
    entries, cols = table.columns()
    assert entries == table.snapshot()
    assert len(cols) == len(entries) == len(table)
    fresh = Columns.from_entries(entries)
    for name in Columns.__slots__:
        assert getattr(cols, name).tolist() == getattr(fresh, name).tolist(), name
    for route in ((False, None), (True, "cvmfs")):
        got = RankIndex(entries, cols).rank(client, "1.3.1.1", Weights(), 5, *route)
        assert shape(got) == reference(select(entries, *route), client, "1.3.1.1", Weights(), 5)


def test_columns_view_is_a_copy_shared_until_change():
    table = CacheTable()
    table.upsert(heartbeat("a", "142.90.1.1", 1.0, 1000.0), 1000.0, fake_locate)
    entries, cols = table.columns()
    assert table.columns()[1] is cols
    table.upsert(heartbeat("a", "142.90.1.1", 999.0, 1001.0), 1001.0, fake_locate)
    assert cols.ratio[0] == 1.0 / 122000.0          # the old view did not change under the reader
    assert table.columns()[1].ratio[0] == 999.0 / 122000.0
    assert math.isclose(table.get("a").hb.load, 999.0)


def test_columns_survive_growth_and_shrinking():
    """Past the first block of rows (64) and back: every row still describes its entry."""
    table, now = CacheTable(), 1000.0
    for i in range(300):
        table.upsert(heartbeat(f"g{i}", f"{20 + i % 80}.{i % 250}.1.1", float(i), now + i), now + i, fake_locate)
    entries, cols = table.columns()
    fresh = Columns.from_entries(entries)
    for name in Columns.__slots__:
        assert getattr(cols, name).tolist() == getattr(fresh, name).tolist(), name
    table.expire(now + 290.5, 0.0)          # keeps the last 9: the block shrinks
    entries, cols = table.columns()
    assert [e.uuid for e in entries] == [f"g{i}" for i in range(291, 300)]
    fresh = Columns.from_entries(entries)
    for name in Columns.__slots__:
        assert getattr(cols, name).tolist() == getattr(fresh, name).tolist(), name
    got = RankIndex(entries, cols).rank(Location(0.0, 0.0), None, Weights(), 3)
    assert shape(got) == reference(entries, Location(0.0, 0.0), None, Weights(), 3)

