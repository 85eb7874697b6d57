"""The lost-minority guard: a mass silence while others beat is held, bounded by cache_silence_hold.

Issue 16 (3.): the agents of a broker node cut off from the servers' queues fall silent in the
same interval while the others keep beating. Without the guard the servers purged all of them
after cache_inactive_time with /healthz 200 "ok".
"""
import json
import logging

import numpy as np
from hypothesis import given, settings, strategies as st

from shoal_server.config import CacheSettings, ServerConfig
from shoal_server.geo import open_locator
from shoal_server.heartbeat import Limits, parse_heartbeat
from shoal_server.service import MASS_SILENCE_MIN, ShoalService, mass_silence
from shoal_server.table import expiring

INACTIVE = 60.0


def hb(uuid, now):
    data = {"uuid": uuid, "hostname": f"{uuid}.example.org", "squid_port": 3128, "public_ip": "188.184.1.1",
            "load": 12.5, "timestamp": now - 1, "agent_version": "2.0.0", "upstream": "cvmfs"}
    return parse_heartbeat(json.dumps(data).encode(), now, Limits())


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def fleet(hold=0.0, fraction=0.25, caches=12):
    """``caches`` caches beating every 10 s for 5 min, connected, expiry armed."""
    clock = Clock(1000.0)
    config = ServerConfig(cache=CacheSettings(cache_inactive_time=INACTIVE, cache_silence_hold=hold,
                                              cache_mass_silence=fraction))
    service = ShoalService(config, locator=open_locator(""), clock=clock)
    service.status.set_connected(True)
    beat(service, clock, [f"c{i}" for i in range(caches)], 1000, 1300)
    return service, clock


def beat(service, clock, uuids, start, end, step=10):
    """Heartbeats from ``uuids`` every ``step`` s in [start, end), a purge after each round; all purged uuids."""
    gone = []
    for t in range(start, end, step):
        clock.now = float(t)
        for uuid in uuids:
            service.table.upsert(hb(uuid, clock.now), clock.now, lambda ip: None)
            service.status.count(None)
        gone += service.purge()
    return gone


def test_a_cut_off_minority_is_held_then_purged_after_the_hold(caplog):
    service, clock = fleet(hold=240.0)
    majority = [f"c{i}" for i in range(8)]          # c8..c11: their node is cut off from this server's queue
    with caplog.at_level(logging.WARNING, logger="shoal_server.service"):
        assert beat(service, clock, majority, 1300, 1480) == []        # 170 s silent: past the inactive time
    assert len(service.table) == 12
    assert "4 of 12 caches fell silent together" in caplog.text
    health = service.health()
    assert (health.state, health.http_status, health.together, health.overdue) == ("stale", "200 OK", 4, 4), health
    # Bounded: each goes once silent for cache_silence_hold (its last heartbeat was at 1290).
    assert beat(service, clock, majority, 1480, 1540) == []            # up to 1530: 240 s silent
    clock.now = 1531.0                                                  # 241 s > 240 s
    assert sorted(service.purge()) == ["c10", "c11", "c8", "c9"]
    assert service.health().state == "ok"


def test_the_minority_back_within_the_hold_loses_nothing():
    service, clock = fleet()
    majority = [f"c{i}" for i in range(8)]
    assert beat(service, clock, majority, 1300, 1420) == []             # 2 x inactive cut off
    assert beat(service, clock, [f"c{i}" for i in range(12)], 1420, 1440) == []   # failed over / healed
    assert len(service.table) == 12 and service.health().state == "ok"


def test_a_single_death_is_purged_after_the_inactive_time_as_before():
    service, clock = fleet()
    assert beat(service, clock, [f"c{i}" for i in range(11)], 1300, 1360) == []
    clock.now = 1351.0
    assert service.purge() == ["c11"]                                   # 61 s after its last heartbeat


def test_one_shot_uuids_are_churn_not_a_mass_silence():
    """Many uuids heard once (restarted identities) going quiet are purged after the inactive time."""
    service, clock = fleet(caches=4)
    for i in range(40):
        service.table.upsert(hb(f"once{i}", 1300.0), 1300.0, lambda ip: None)
    gone = beat(service, clock, [f"c{i}" for i in range(4)], 1300, 1380)
    assert sorted(gone) == sorted(f"once{i}" for i in range(40))


def test_the_guard_off_purges_the_minority_after_the_inactive_time():
    service, clock = fleet(fraction=0.0)
    gone = beat(service, clock, [f"c{i}" for i in range(8)], 1300, 1370)
    assert sorted(gone) == ["c10", "c11", "c8", "c9"]


def test_metrics_and_healthz_show_the_held_caches():
    service, clock = fleet(hold=240.0)
    beat(service, clock, [f"c{i}" for i in range(8)], 1300, 1400)
    text = service.app.request("/metrics").data.decode()
    assert "shoal_caches_silent_together 4.0" in text and 'shoal_health{state="stale"} 1.0' in text
    body = json.loads(service.app.request("/healthz").data)
    assert (body["status"], body["silent_together"], body["overdue"]) == ("stale", 4, 4)


ages = st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ages, st.floats(1, 300), st.one_of(st.none(), st.floats(0, 2000)))
def test_expiring_never_drops_a_cache_heard_within_the_inactive_time_nor_keeps_one_past_the_hold(
        pairs, max_age, hold):
    silent_for = np.array([p[0] for p in pairs], dtype=float)
    heard_for = np.array([p[1] for p in pairs], dtype=float)
    mask = expiring(silent_for, heard_for, max_age, hold)
    plain = silent_for > max_age
    assert not (mask & ~plain).any()                       # the hold only ever keeps more
    bound = max_age if hold is None else max(hold, max_age)
    assert mask[silent_for > bound].all()                  # nothing is kept past the bound
    assert (mask == plain).all() or hold is not None


@settings(max_examples=300, deadline=None)
@given(ages, st.floats(1, 300), st.floats(0, 1))
def test_a_mass_silence_is_a_fraction_of_the_established_caches(pairs, inactive, fraction):
    silent_for = np.array([p[0] for p in pairs], dtype=float)
    heard_for = np.array([p[1] for p in pairs], dtype=float)
    together = mass_silence(silent_for, heard_for, inactive, fraction)
    established = heard_for >= inactive
    quiet = int((established & (silent_for > inactive / 2)).sum())
    assert together in (0, quiet)
    if together:
        assert together >= MASS_SILENCE_MIN and together >= fraction * established.sum() and fraction > 0
    else:
        assert fraction == 0 or quiet < MASS_SILENCE_MIN or quiet < fraction * established.sum()
    # More caches beating can only end a mass silence, never start one.
    more = mass_silence(np.append(silent_for, [0.0] * 10), np.append(heard_for, [inactive] * 10), inactive, fraction)
    assert more <= together
