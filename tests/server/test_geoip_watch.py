"""No GeoIP database is not a dead server: it ranks by same site and load until one appears.

The databases are written by tests/support/mmdb.py (GeoLite2 and db-ip lite record shapes), so
nothing is downloaded and the test can make a database appear, change and break on cue.
"""
from __future__ import annotations

import logging
import os

import pytest

from shoal_server.geo import WatchedLocator, open_locator
from support import mmdb
from support.heartbeats import upstream_heartbeat

# Three caches; the client is in Victoria. Loads are chosen so that load order and distance
# order disagree: without GeoIP CERN (least loaded) comes first, with GeoIP TRIUMF (Vancouver) does.
NETWORKS = [
    ("142.90.0.0/16", mmdb.geolite2_record("Vancouver", "CA", "Canada", "NA", 49.25, -123.1, "BC")),
    ("142.104.0.0/16", mmdb.geolite2_record("Victoria", "CA", "Canada", "NA", 48.43, -123.37, "BC")),
    ("128.142.0.0/16", mmdb.geolite2_record("Geneva", "CH", "Switzerland", "EU", 46.2, 6.14, "GE")),
    ("131.225.0.0/16", mmdb.geolite2_record("Batavia", "US", "United States", "NA", 41.85, -88.31, "IL")),
]
CACHES = [("142.90.1.1", "squid.triumf.example", 20000.0), ("128.142.1.1", "squid.cern.example", 1000.0),
          ("131.225.1.1", "squid.fnal.example", 50000.0)]
CLIENT = "142.104.1.1"


def test_db_ip_lite_shaped_database_is_read_by_our_backend(tmp_path):
    """db-ip's free City Lite mmdb has GeoLite2's City schema minus time zone and subdivision codes."""
    path = mmdb.write(str(tmp_path / "dbip-city-lite.mmdb"), [
        ("142.90.0.0/16", mmdb.dbip_lite_record("Vancouver", "CA", "Canada", "NA", 49.25, -123.1, "British Columbia")),
    ], database_type="DBIP-City-Lite")
    loc = open_locator(path).locate("142.90.1.1")
    assert loc is not None
    assert (loc.city, loc.country_code, loc.continent, loc.latitude, loc.longitude) == \
        ("Vancouver", "CA", "NA", 49.25, -123.1)
    assert (loc.region_code, loc.time_zone) == (None, None)


def test_missing_database_is_announced_loudly_and_picked_up_when_it_appears(tmp_path, caplog):
    path = str(tmp_path / "GeoLite2-City.mmdb")
    with caplog.at_level(logging.WARNING):
        locator = WatchedLocator(path)
    (loud,) = [r for r in caplog.records if "NO GEOIP DATABASE" in r.getMessage()]
    assert loud.levelno == logging.ERROR and path in loud.getMessage()  # seen even with logging_level = ERROR
    assert locator.locate("142.90.1.1") is None
    assert locator.health()["status"] == "missing" and locator.health()["watching"] == [path]
    changes = []
    locator.on_change(lambda: changes.append(locator.path))
    assert locator.check() is False and changes == []

    mmdb.write(path, NETWORKS)
    assert locator.check() is True and changes == [path]
    assert locator.locate("142.90.1.1").city == "Vancouver"
    assert locator.health()["status"] == "ok" and locator.check() is False  # unchanged: not reopened

    # geoipupdate renames a new file over the old one: picked up, and listeners hear of it.
    mmdb.write(path, [("142.90.0.0/16", mmdb.geolite2_record("Burnaby", "CA", "Canada", "NA", 49.27, -122.97))])
    assert locator.check() is True and len(changes) == 2
    assert locator.locate("142.90.1.1").city == "Burnaby"

    # A broken replacement keeps the good database in use and says why.
    with open(path + ".tmp", "wb") as handle:
        handle.write(b"not a database")
    os.replace(path + ".tmp", path)
    assert locator.check() is False
    assert locator.locate("142.90.1.1").city == "Burnaby"
    assert locator.health()["status"] == "ok" and "cannot open" in locator.health()["detail"]


def test_default_paths_are_watched_when_none_is_configured(monkeypatch, tmp_path):
    import shoal_server.geo as geo

    candidate = str(tmp_path / "GeoLite2-City.mmdb")
    monkeypatch.setattr(geo, "DEFAULT_DATABASES", (candidate,))
    monkeypatch.setattr(geo, "bundled_database", lambda: None)
    locator = geo.WatchedLocator("")
    assert locator.health()["watching"] == [candidate]
    mmdb.write(candidate, NETWORKS)
    assert locator.check() and locator.locate("128.142.1.1").country_code == "CH"


def _order(server) -> list:
    data = server.get_json(f"/nearest/3?ip={CLIENT}")
    return [data[str(i)]["hostname"] for i in range(len(data))]


@pytest.mark.integration
def test_server_without_database_serves_then_ranks_by_distance_once_it_appears(server_factory, publisher, tmp_path):
    """A real shoal-server: starts without the database (no exit 2), /healthz says so, /nearest ranks by
    load; the database is put in place and, without a restart, ranking is by distance."""
    path = str(tmp_path / "GeoIP" / "GeoLite2-City.mmdb")
    os.makedirs(os.path.dirname(path))
    server = server_factory(general={"geoip_database": path, "geoip_check_interval": 0.2},
                            cache={"cache_distloadweight": 0.5})
    pid = server.proc.pid
    health = server.health()
    assert health["geoip"]["status"] == "missing" and health["geoip"]["watching"] == [path]
    assert "NO GEOIP DATABASE" in server.log()

    for ip, host, load in CACHES:
        publisher.send(upstream_heartbeat(ip, load=load, hostname=host, uuid=f"uuid-{host}", max_load=122000))
    server.wait_for(lambda d: len(d) == len(CACHES), path="/all")
    # No distances: least loaded first.
    assert _order(server) == ["squid.cern.example", "squid.triumf.example", "squid.fnal.example"]
    # The same-site rule still holds without GeoIP: a client at the cache's own address gets it first.
    data = server.get_json("/nearest/1?ip=142.90.1.1")
    assert data["0"]["hostname"] == "squid.triumf.example"

    mmdb.write(path, NETWORKS)
    server.wait_for(lambda h: h["geoip"]["status"] == "ok", timeout=10)
    # The caches already known are placed again (not only new ones): distance counts now; the
    # nearby TRIUMF cache beats the idle one in Geneva (cost = 0.5 * angle/pi + 0.5 * load/max_load).
    assert _order(server) == ["squid.triumf.example", "squid.cern.example", "squid.fnal.example"]
    all_caches = server.get_json("/all")
    assert {c["hostname"]: c["geo_data"]["city"] for c in all_caches.values()}["squid.cern.example"] == "Geneva"
    assert server.proc.pid == pid and server.proc.poll() is None  # no restart
    assert "GeoIP database" in server.log() and "found" in server.log()
