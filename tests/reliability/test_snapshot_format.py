"""The table snapshot format and the expiry policy, tested directly with plain data (one test runs a process)."""
import json
import logging
import os
import subprocess
import sys

import pytest

from shoal_server.config import CacheSettings, GeneralSettings, ServerConfig
from shoal_server.geo import open_locator
from shoal_server.heartbeat import Limits, parse_heartbeat
from shoal_server.policy import build_policy
from shoal_server.service import ShoalService, expiry_allowed, reconnect_cap
from shoal_server.snapshot import (FORMAT, VERSION, SnapshotError, Snapshots, decode, encode, read_snapshot,
                                   snapshot_path, write_snapshot)
from shoal_server.table import CacheTable
from support.rabbitnode import free_port

CERN = "128.142.1.1"
FNAL = "131.225.1.1"


def no_location(address):
    return None


def hb(uuid, ip=CERN, now=1000.0, user_id=None, **kw):
    data = {"uuid": uuid, "hostname": f"{uuid}.example.org", "squid_port": 3128, "public_ip": ip,
            "load": 12.5, "timestamp": now - 2, "agent_version": "2.0.0", "upstream": "cvmfs"}
    data.update(kw)
    return parse_heartbeat(json.dumps(data).encode(), now, Limits(), user_id)


def table_with(*items):
    table = CacheTable()
    for uuid, ip, received in items:
        table.upsert(hb(uuid, ip, now=received), received, no_location)
    return table


def test_round_trip_keeps_every_field_and_drops_entries_dead_when_written():
    table = table_with(("a", CERN, 1000.0), ("b", FNAL, 1100.0))
    table.set_verified("b", True)
    data = encode(table.snapshot(), 1190.0, "shoal")
    entries, bad = decode(data, now=1200.0, max_age=180.0, exchange="shoal", limits=Limits(), locate=no_location)
    assert bad == 0
    assert [e.uuid for e in entries] == ["b"]           # a: 190 s silent when the file was written > 180 s
    restored, original = entries[0], table.get("b")
    assert restored.hb == original.hb                   # drift and all, as validated at reception
    assert (restored.created, restored.last_active, restored.verified) == (1100.0, 1100.0, None)  # re-derived, not read


def test_a_downtime_longer_than_the_inactive_time_keeps_the_entries_alive_when_written():
    """Issue 16 (5.): the server's own downtime is not held against the caches."""
    data = encode(table_with(("a", CERN, 1000.0), ("b", FNAL, 1100.0)).snapshot(), 1100.0, "shoal")
    entries, _ = decode(data, now=1100.0 + 3600, max_age=180.0, exchange="shoal", limits=Limits(),
                        locate=no_location)
    assert sorted(e.uuid for e in entries) == ["a", "b"]   # down an hour >> 180 s: still used
    assert [e.last_active for e in entries] == [1000.0, 1100.0]   # as heard, so /healthz says stale
    with pytest.raises(SnapshotError, match="ago"):          # but not after more than a day
        decode(data, now=1100.0 + 86401, max_age=180.0, exchange="shoal", limits=Limits(), locate=no_location)


def test_restored_entries_are_located_again_with_the_current_database():
    locator = open_locator("")
    try:
        data = encode(table_with(("a", CERN, 1000.0)).snapshot(), 1000.0, "shoal")
        entries, _ = decode(data, 1001.0, 180.0, "shoal", Limits(), locator.locate)
    finally:
        locator.close()
    assert entries[0].location is not None and entries[0].location.country_code == "CH"


def test_owner_survives_so_a_restart_does_not_open_a_hijack_window():
    table = CacheTable()
    table.upsert(hb("a", user_id="site-a"), 1000.0, no_location)
    entries, _ = decode(encode(table.snapshot(), 1000.0, "x"), 1001.0, 180.0, "x", Limits(), no_location)
    assert entries[0].owner == "site-a" and entries[0].hb.user_id == "site-a"


def test_clock_stepping_back_never_makes_entries_younger_than_now():
    data = encode(table_with(("a", CERN, 5000.0)).snapshot(), 5000.0, "shoal")
    entries, _ = decode(data, 4000.0, 180.0, "shoal", Limits(), no_location)
    assert entries[0].last_active == 4000.0 and entries[0].created <= 4000.0


@pytest.mark.parametrize("data, message", [
    (b"\x00\xff garbage", "not a JSON document"),
    (b'{"entries": []', "not a JSON document"),
    (b"[]", "not a shoal-server table snapshot"),
    (json.dumps({"format": "something-else", "version": VERSION}).encode(), "not a shoal-server"),
    (json.dumps({"format": FORMAT, "version": VERSION + 1, "exchange": "shoal", "entries": []}).encode(),
     "format version"),
    (json.dumps({"format": FORMAT, "version": VERSION, "exchange": "other", "entries": []}).encode(),
     "written for exchange 'other'"),
    (json.dumps({"format": FORMAT, "version": VERSION, "exchange": "shoal", "entries": {}}).encode(),
     "no entry list"),
])
def test_unusable_files_are_rejected_as_a_whole(data, message):
    with pytest.raises(SnapshotError, match=message):
        decode(data, 1000.0, 180.0, "shoal", Limits(), no_location)


def test_bad_records_are_skipped_and_counted_not_trusted():
    doc = json.loads(encode(table_with(("good", CERN, 1000.0), ("evil", FNAL, 1000.0)).snapshot(), 1000.0, "s"))
    evil = next(r for r in doc["entries"] if r["heartbeat"]["uuid"] == "evil")
    evil["heartbeat"]["hostname"] = "<script>alert(1)</script>"   # same validator as AMQP input
    doc["entries"].append({"heartbeat": {"uuid": "x"}, "last_active": "yesterday", "created": 0})
    doc["entries"].append("not a record")
    entries, bad = decode(json.dumps(doc).encode(), 1001.0, 180.0, "s", Limits(), no_location)
    assert [e.uuid for e in entries] == ["good"] and bad == 3


def test_the_live_policy_is_applied_to_restored_entries(tmp_path):
    """An allow-list edited while the server was down must not be bypassed by the snapshot."""
    table = CacheTable()
    table.upsert(hb("kept", user_id="site-a"), 1000.0, no_location)
    table.upsert(hb("revoked", user_id="site-b"), 1000.0, no_location)
    path = tmp_path / "allow"
    path.write_text("site-a kept.example.org\n")
    policy = build_policy(True, str(path), "test.conf")
    doc = json.loads(encode(table.snapshot(), 1000.0, "s"))
    doc["entries"].append({"heartbeat": ["not", "a", "heartbeat"], "last_active": 1000.0, "created": 1000.0})
    entries, bad = decode(json.dumps(doc).encode(), 1001.0, 180.0, "s", Limits(), no_location, admit=policy)
    assert [e.uuid for e in entries] == ["kept"] and bad == 2


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = snapshot_path(str(tmp_path))
    write_snapshot(path, b"first")
    write_snapshot(path, b"second")
    assert open(path, "rb").read() == b"second"
    assert os.listdir(tmp_path) == ["table.json"]


def test_failed_write_leaves_no_temporary_file_behind(tmp_path):
    path = snapshot_path(str(tmp_path))
    write_snapshot(path, b"good")
    os.mkdir(path + ".d")
    with pytest.raises(OSError):
        write_snapshot(path + ".d", b"cannot replace a directory with a file")
    assert open(path, "rb").read() == b"good"
    assert sorted(os.listdir(tmp_path)) == ["table.json", "table.json.d"]


def test_corrupt_or_missing_file_is_ignored_with_a_warning(tmp_path, caplog):
    path = snapshot_path(str(tmp_path))
    assert read_snapshot(path, 1000.0, 180.0, "s", Limits(), no_location) == []
    with open(path, "wb") as handle:
        handle.write(b'{"format": "shoal-server-table", "vers')
    with caplog.at_level(logging.WARNING, logger="shoal_server.snapshot"):
        assert read_snapshot(path, 1000.0, 180.0, "s", Limits(), no_location) == []
    assert "ignoring table snapshot" in caplog.text and path in caplog.text


def test_unusable_state_dir_turns_snapshots_off_instead_of_failing(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    snaps = Snapshots(str(blocker / "state"), "s", Limits(), 180.0)
    with caplog.at_level(logging.ERROR, logger="shoal_server.snapshot"):
        assert snaps.prepare() is False
    assert not snaps.enabled and "table snapshots disabled" in caplog.text
    assert Snapshots("", "s", Limits(), 180.0).enabled is False   # empty state_dir: warm restart off


@pytest.mark.parametrize("connected, since, now, allowed", [
    (False, 0.0, 10_000.0, False),    # broker down for hours: silence proves nothing
    (True, 1000.0, 1100.0, False),    # reconnected 100 s ago, inactive 180 s: agents still catching up
    (True, 1000.0, 1179.9, False),
    (True, 1000.0, 1180.0, True),     # connected for a full inactive time: normal expiry
])
def test_expiry_waits_for_the_consumer(connected, since, now, allowed):
    assert expiry_allowed(connected, since, now, grace=180.0) is allowed


def test_reconnect_cap_is_short_against_the_inactive_time():
    assert reconnect_cap(180.0) == 10.0
    assert reconnect_cap(4.0) == 1.0
    assert reconnect_cap(0.5) == 0.5


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_service_purge_pauses_while_disconnected_and_counts_from_reconnection(tmp_path):
    clock = Clock(1000.0)
    config = ServerConfig(cache=CacheSettings(cache_inactive_time=60.0),
                          general=GeneralSettings(state_dir=str(tmp_path)))
    service = ShoalService(config, locator=open_locator(""), clock=clock)
    service.table.upsert(hb("a", now=1000.0), 1000.0, no_location)
    service.status.set_connected(True)             # connected at 1000
    clock.now = 1030.0
    service.status.set_connected(False)            # broker lost at 1030
    clock.now = 1500.0
    assert service.purge() == [] and len(service.table) == 1
    service.status.set_connected(True)             # back at 1500
    for t in range(1500, 1562):                    # another cache ("b") keeps beating: heartbeats flow
        clock.now = float(t)
        service.table.upsert(hb("b", now=clock.now), clock.now, no_location)
        service.status.count(None)
        if t == 1559:
            assert service.purge() == []
        elif t % 10 == 0 and t < 1559:
            service.purge()
    clock.now = 1561.0
    assert service.purge() == ["a"]


def stalled_service(tmp_path, hold=0.0):
    """30 caches beating every 10 s for 5 min, inactive 60 s; then the broker delivers nothing."""
    clock = Clock(1000.0)
    config = ServerConfig(cache=CacheSettings(cache_inactive_time=60.0, cache_silence_hold=hold),
                          general=GeneralSettings(state_dir=str(tmp_path)))
    service = ShoalService(config, locator=open_locator(""), clock=clock)
    service.status.set_connected(True)
    for t in range(1000, 1300, 10):
        clock.now = float(t)
        for i in range(30):
            service.table.upsert(hb(f"c{i}", now=clock.now), clock.now, no_location)
            service.status.count(None)
        assert service.purge() == []
    return service, clock


def test_a_cluster_wide_stall_is_not_thirty_cache_deaths(tmp_path):
    """Issue 16 (2.): connected, but one hung node holds every confirm: nobody is heard for 120 s."""
    service, clock = stalled_service(tmp_path)
    assert service.health().state == "ok"
    for t in range(1290, 1420, 5):                 # 130 s of total silence, twice the inactive time
        clock.now = float(t)
        assert service.purge() == []
    assert len(service.table) == 30
    health = service.health()
    assert health.state == "stale" and health.http_status == "200 OK", health
    # Heartbeats flow again: every cache gets a full inactive time from then before expiry.
    for t in range(1420, 1480, 10):
        clock.now = float(t)
        for i in range(29):                        # c29 really died during the stall
            service.table.upsert(hb(f"c{i}", now=clock.now), clock.now, no_location)
            service.status.count(None)
        assert service.purge() == [], t
    clock.now = 1480.0                             # 60 s after the flow resumed
    service.status.count(None)
    assert service.purge() == ["c29"]
    assert service.health().state == "ok"


def test_a_total_silence_longer_than_the_hold_is_believed(tmp_path):
    service, clock = stalled_service(tmp_path, hold=200.0)
    clock.now = 1290.0 + 199
    assert service.purge() == []
    clock.now = 1290.0 + 201
    assert len(service.purge()) == 30
    assert service.health().state == "ok"            # connected, nothing announced: the truth is empty


@pytest.mark.parametrize("caches, down, silent, overdue, state", [
    (30, 0.0, 1.0, 0, "ok"),
    (30, 0.0, 40.0, 0, "stale"),          # connected, nobody heard for more than half the inactive time
    (30, 500.0, None, 0, "stale"),        # broker outage longer than the inactive time: still the best table
    (30, 0.0, 1.0, 5, "stale"),           # restored from an old snapshot, not yet refreshed
    (0, 500.0, None, 0, "unavailable"),   # no broker, no table: take it out of the balancer
    (0, 0.0, None, 0, "ok"),              # connected, nothing announced yet
])
def test_healthz_has_three_states(caches, down, silent, overdue, state):
    from shoal_server.health import assess_health
    health = assess_health(caches, down, 60.0, silent, overdue)
    assert health.state == state
    assert health.http_status == ("503 Service Unavailable" if state == "unavailable" else "200 OK")


def test_service_saves_on_stop_and_restores_on_start(tmp_path):
    clock = Clock(1000.0)
    config = ServerConfig(cache=CacheSettings(cache_inactive_time=60.0),
                          general=GeneralSettings(state_dir=str(tmp_path / "state")))
    first = ShoalService(config, locator=open_locator(""), clock=clock)
    first.restore()
    first._started = True   # as after start(), without threads or a broker
    first.table.upsert(hb("a", now=1000.0), 1000.0, no_location)
    first.table.upsert(hb("b", now=930.0), 930.0, no_location)
    first.stop()
    clock.now = 1015.0
    second = ShoalService(config, locator=open_locator(""), clock=clock)
    assert second.restore() == 1                   # b was 70 s silent when saved > 60 s
    assert [e.uuid for e in second.table.snapshot()] == ["a"]
    second.locator.close()


EXIT_WITHOUT_STOP = r"""
import json, sys, time
from shoal_server.config import CacheSettings, GeneralSettings, ServerConfig
from shoal_server.amqp import RabbitSettings
from shoal_server.heartbeat import Limits, parse_heartbeat
from shoal_server.service import ShoalService
config = ServerConfig(general=GeneralSettings(state_dir=sys.argv[1]),
                      rabbitmq=RabbitSettings(amqp_server_url="127.0.0.1", amqp_port=int(sys.argv[2])))
service = ShoalService(config)
service.start()
body = json.dumps({"uuid": "u1", "hostname": "squid.example.org", "squid_port": 3128,
                   "public_ip": "128.142.1.1", "load": 1, "timestamp": time.time()}).encode()
service.table.upsert(parse_heartbeat(body, time.time(), Limits()), time.time(), lambda ip: None)
# no stop(): as under mod_wsgi, only the interpreter's shutdown (atexit) is left to save the table
"""


def test_the_table_is_saved_at_interpreter_exit_without_stop(tmp_path):
    """mod_wsgi never calls stop(); it runs atexit handlers when a daemon process shuts down."""
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_STOP, str(state), str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(state / "table.json") as handle:
        assert [r["heartbeat"]["uuid"] for r in json.load(handle)["entries"]] == ["u1"]
