"""/nearest without copying the table (issue 17): the spatial index and the live-column reads stay exact.

The reference is always ``rank`` (every cache scored in Python) over ``select`` of the table's
snapshot, taken when the read has returned.
"""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat
from shoal_server.ranking import RankIndex, Weights, rank, rank_table, select
from shoal_server.sphere import SphereIndex
from shoal_server.table import CacheEntry, CacheTable, Columns

# Few distinct places, loads and addresses: ties in cost, angle and address are common.
SPOTS = [(0.0, 0.0), (46.2, 6.14), (-33.9, 18.4), (90.0, 0.0), (-90.0, 0.0), (49.25, -123.1), (0.0, 180.0),
         (46.2001, 6.1401)]
spots = st.none() | st.sampled_from(SPOTS) | st.tuples(st.floats(-90, 90), st.floats(-180, 180))
loads = st.sampled_from([0.0, 10.0, 500.0, 1000.0]) | st.floats(0, 3000)
IPS = ["142.90.1.1", "131.225.1.1", "188.184.1.1"]
weights = st.sampled_from([Weights(), Weights(0.0, 1.0), Weights(1.0, 1.0), Weights(0.9, 1.0), Weights(0.3, 2.5)]) | st.builds(
    Weights, st.floats(0.0, 1.0), st.floats(0.05, 5.0))
routes = st.sampled_from([(False, None), (True, None), (False, "cvmfs"), (True, "frontier"), (False, "frontier")])
clients = st.none() | st.sampled_from([Location(*s) for s in SPOTS]) | st.tuples(
    st.floats(-90, 90), st.floats(-180, 180)).map(lambda t: Location(*t))


def heartbeat(uuid, ip, load, upstream="both", authenticated=False):
    return Heartbeat(uuid=uuid, hostname=f"{uuid}.example.org", squid_port=3128, public_ip=ip, private_ip=None,
                     external_ip=None, load=load, max_load=1000.0, timestamp=0.0, drift=0.0, verified=False,
                     upstream=upstream, cache_type="squid", agent_version=None, user_id="u" if authenticated else None,
                     authenticated=authenticated)


def entry(uuid, spot, load, ip, upstream, verified, authenticated):
    location = Location(*spot) if spot is not None else None
    return CacheEntry(hb=heartbeat(uuid, ip, load, upstream, authenticated), created=0.0, last_active=0.0,
                      location=location, verified=verified)




def table_rows(load):
    return st.tuples(spots, load, st.sampled_from(IPS), st.sampled_from(["cvmfs", "frontier", "both"]),
                     st.sampled_from([None, True, False]), st.booleans())


# Lightly loaded tables too: there distance decides, and a bound that is too high shows.
tables = st.sampled_from([loads, st.floats(0, 50)]).flatmap(lambda load: st.lists(table_rows(load), max_size=120)).map(
    lambda rs: [entry(f"c{i:03d}", *r) for i, r in enumerate(rs)])


def shape(ranked):
    return [(r.entry.uuid, r.cost, r.distance_km) for r in ranked]


def check_sphere(entries, covered, moved, client, client_ip, n, w, route, per_cell):
    cols = Columns.from_entries(entries)
    # The index may cover only a prefix (later rows arrived since) and hold stale places for
    # some rows (moved since): those are the `extra` rows.
    x, y, z, placed = (np.array(getattr(cols, name)[:covered]) for name in ("x", "y", "z", "placed"))
    for i in moved:   # the index saw them elsewhere
        x[i], y[i], z[i], placed[i] = 0.0, 0.0, 1.0, True
    sphere = SphereIndex.build(x, y, z, placed, per_cell)
    saved, RankIndex.SMALL = RankIndex.SMALL, 0     # the vector pass even for tiny tables
    try:
        index = RankIndex(tuple(entries), cols, sphere, np.asarray(moved, dtype=np.int64))
        got = index.rank(client, client_ip, w, n, *route)
    finally:
        RankIndex.SMALL = saved
    assert shape(got) == shape(rank(select(entries, *route), client, client_ip, w, n))


@settings(max_examples=250, deadline=None)
@given(tables, st.data(), clients, st.sampled_from([None, "142.90.1.1", "8.8.8.8"]), st.integers(0, 130),
       weights, routes, st.sampled_from([1, 2, 8, 64]))
def test_sphere_index_gives_the_brute_force_answer(entries, data, client, client_ip, n, w, route, per_cell):
    """Cells visited nearest first, stopping at the bound: the same caches, costs and order as rank()."""
    covered = data.draw(st.integers(0, len(entries)))
    moved = sorted(data.draw(st.sets(st.integers(0, max(0, covered - 1)), max_size=5))) if covered else []
    check_sphere(entries, covered, moved, client, client_ip, n, w, route, per_cell)


scattered = st.lists(st.tuples(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), st.floats(0, 50),
                               st.sampled_from(IPS), st.just("both"), st.just(None), st.booleans()),
                     min_size=1, max_size=120).map(lambda rs: [entry(f"c{i:03d}", *r) for i, r in enumerate(rs)])


@settings(max_examples=150, deadline=None)
@given(scattered, st.tuples(st.floats(-90, 90), st.floats(-180, 180)), st.integers(1, 10),
       st.floats(0.5, 1.0), st.sampled_from([2, 8, 64]))
def test_sphere_index_where_distance_decides(entries, client, n, w, per_cell):
    """Scattered, lightly loaded caches: every cell's bound is what stops the search."""
    check_sphere(entries, len(entries), [], Location(*client), None, n, Weights(w, 1.0), (False, None), per_cell)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-90, 90), st.floats(-180, 180)), min_size=1, max_size=200),
       st.tuples(st.floats(-90, 90), st.floats(-180, 180)), st.sampled_from([1, 4, 64]))
def test_no_member_is_closer_than_its_cells_bound(points, client, per_cell):
    located = [Location(*p) for p in points]
    x, y, z = (np.array([loc.unit_vector[k] for loc in located]) for k in range(3))
    sphere = SphereIndex.build(x, y, z, np.ones(len(x), dtype=bool), per_cell)
    u = Location(*client).unit_vector
    bounds = sphere.min_angles(u)
    for cell in range(len(sphere)):
        for row in sphere.rows(np.array([cell])).tolist():
            v = located[row].unit_vector
            angle = math.acos(max(-1.0, min(1.0, u[0] * v[0] + u[1] * v[1] + u[2] * v[2])))
            assert bounds[cell] <= angle
    assert sorted(sphere.rows(np.arange(len(sphere))).tolist()) == list(range(len(x)))


def locate(ip):
    """Addresses "a.b.0.1" sit at a fixed spot; "9.b.0.1" nowhere GeoIP knows."""
    a, b = (int(p) for p in ip.split(".")[:2])
    return None if a == 9 else Location(*SPOTS[(a + b) % len(SPOTS)])


class Interleaved(CacheTable):
    """A table whose readers see writes land while they compute (``during``: before, after the pass).

    ``tear`` rows get garbage in their live columns before the pass, as a reader could see a row
    half-written; the write that follows (in ``after``) is what a writer would finish it with.
    Index builds are queued and run when an operation says so, so they too land mid-read.
    """

    def __init__(self):
        self.queue = []
        super().__init__(schedule=self.queue.append, index_min=4, per_cell=2)
        self.during = ([], [], [])
        self.tears = 0

    def run_builds(self):
        while self.queue:
            self.queue.pop(0)()

    def read(self, choose):
        before, tear, after = self.during
        self.during = ([], [], [])
        first = [True]

        def wrapped(view):
            if not first[0]:
                return choose(view)     # the re-run under the lock: no writer can come in now
            first[0] = False
            for op in before:
                apply(self, op)
            for k in tear:
                i = self._slot.get(f"u{k:02d}")
                if i is not None:
                    view.cols.x[i], view.cols.y[i], view.cols.z[i] = 0.3, -0.9, 0.1
                    view.cols.ratio[i], view.cols.placed[i], view.cols.verified[i] = 0.0, True, True
            picked = choose(view)
            for op in after:
                apply(self, op)
            for k in tear:   # the writer finishes: a new address rewrites every column it tore
                self.tears += 1
                apply(self, ("up", k, 23 + self.tears, 5.0, "cvmfs"))
            return picked
        return super().read(wrapped)


def apply(table, op):
    kind = op[0]
    if kind == "up":   # refresh or create; the address (hence the place) may change
        _, k, a, load, upstream = op
        table.upsert(heartbeat(f"u{k:02d}", f"{a}.{k}.0.1", load, upstream), table.now, locate)
    elif kind == "expire":
        table.expire(table.now, op[1])
    elif kind == "verify":
        table.set_verified(f"u{op[1]:02d}", op[2])
    elif kind == "build":
        table.run_builds()
    table.now += 1.0


writes = st.one_of(
    st.tuples(st.just("up"), st.integers(0, 30), st.sampled_from([9, 20, 21, 22, 23]), loads,
              st.sampled_from(["cvmfs", "frontier", "both"])),
    st.tuples(st.just("expire"), st.integers(0, 40)),
    st.tuples(st.just("verify"), st.integers(0, 30), st.booleans()),
    st.just(("build",)),
)
reads = st.tuples(st.just("read"), st.lists(writes, max_size=3), st.lists(st.integers(0, 40), max_size=3),
                  st.lists(writes, max_size=3), clients, st.sampled_from([None, "20.1.0.1", "8.8.8.8"]),
                  st.integers(1, 8), weights, routes)


@settings(max_examples=150, deadline=None)
@given(st.lists(writes | reads, max_size=80), st.booleans())
def test_reads_interleaved_with_writes_match_the_snapshot(operations, small):
    """Upserts, moves, expiry, verification and index builds landing during reads never show in an answer."""
    table = Interleaved()
    table.now = 1000.0
    saved, RankIndex.SMALL = RankIndex.SMALL, (RankIndex.SMALL if small else 0)
    try:
        for op in operations:
            if op[0] != "read":
                apply(table, op)
                continue
            _, before, tear, after, client, client_ip, n, w, route = op
            table.during = (before, [k % 31 for k in tear], after)
            got = rank_table(table, client, client_ip, w, n, *route)
            assert shape(got) == shape(rank(select(table.snapshot(), *route), client, client_ip, w, n))
    finally:
        RankIndex.SMALL = saved


def test_a_change_costs_no_copy_of_the_table():
    """After an upsert the next /nearest reads the same arrays: no per-version copy on the /nearest path."""
    table = CacheTable(schedule=lambda job: job(), index_min=64)
    for k in range(300):
        table.upsert(heartbeat(f"u{k:03d}", f"{20 + k % 4}.{k}.0.1", float(k)), 1000.0, locate)
    seen = []
    real = table.read

    def spy(choose):
        return real(lambda view: seen.append(view.cols) or choose(view))
    table.read = spy
    client = Location(46.2, 6.14)
    first = rank_table(table, client, None, Weights(), 5)
    table.upsert(heartbeat("u007", "26.7.0.1", 0.0), 1001.0, locate)   # idle, and moved to Geneva
    second = rank_table(table, client, None, Weights(), 5)
    assert seen[0] is seen[1]                         # the live block, not a copy per version
    assert table.index_stats()["rows"] >= 64           # and the spatial index was built
    assert "u007" in [r.entry.uuid for r in second] and first != second
    assert shape(second) == shape(rank(table.snapshot(), client, None, Weights(), 5))


def filled_table(**kw):
    table = CacheTable(**kw)
    for k in range(200):   # spread over the SPOTS, loads 0.1 .. 0.3 of max_load
        table.upsert(heartbeat(f"u{k:03d}", f"{20 + k % 8}.{8 * (k // 8)}.0.1", 100.0 + k),
                     1000.0, locate)
    return table


def test_a_row_torn_under_the_reader_is_judged_again_under_the_lock():
    """A half-written row that looked cheapest must not push the real answer out."""
    table = filled_table(schedule=lambda job: job(), index_min=10 ** 9)   # no index: the linear pass
    client = Location(-33.9, 18.4)
    expected = shape(rank(table.snapshot(), client, None, Weights(), 1))
    victim = next(i for i, e in enumerate(table.snapshot()) if e.location != client and e.location is not None)
    real = table.read

    def torn(choose):
        calls = []

        def during(view):
            calls.append(view)
            if len(calls) > 1:
                return choose(view)                # the re-run under the lock
            view.cols.x[victim], view.cols.y[victim], view.cols.z[victim] = client.unit_vector
            view.cols.ratio[victim] = 0.0          # what a reader sees mid-write: right here, idle
            picked = choose(view)
            uuid = table.snapshot()[victim].uuid
            table.upsert(heartbeat(uuid, "27.1.0.1", 900.0), 1001.0, locate)  # the write, finished: busy, far
            return picked
        return real(during)
    table.read = torn
    assert shape(rank_table(table, client, None, Weights(), 1)) == expected


def test_a_cache_that_moved_since_the_index_was_built_is_found_at_its_new_place():
    table = filled_table(schedule=lambda job: job(), index_min=16, per_cell=2)
    assert table.index_stats()["rows"] >= 16
    client = Location(0.0, 180.0)
    # u001 sits elsewhere; its new address puts it exactly at the client, idle.
    table.upsert(heartbeat("u001", "22.0.0.1", 0.0), 1001.0, locate)
    assert locate("22.0.0.1") == client and table.index_stats()["unindexed"] >= 1
    got = rank_table(table, client, None, Weights(), 1)
    assert [r.entry.uuid for r in got] == ["u001"]
    assert shape(got) == shape(rank(table.snapshot(), client, None, Weights(), 1))


def test_a_quiet_table_ends_up_fully_indexed():
    """Arrivals below the writers' rebuild threshold are indexed once readers have scanned them a while."""
    table = filled_table(schedule=lambda job: job(), index_min=16)
    assert 0 < table.index_stats()["unindexed"] <= 512          # too few arrivals for a writer to rebuild
    table._next_quiet_build = 0.0                               # the last build is long ago
    rank_table(table, Location(0.0, 0.0), None, Weights(), 5)
    assert table.index_stats() == {**table.index_stats(), "rows": 200, "unindexed": 0}
