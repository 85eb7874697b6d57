"""Cache table semantics, the two GeoIP backends, and the JSON/PAC renderers."""
import json
import os
import re

import pytest

from shoal_server.geo import DatLocator, GeoDatabaseError, MmdbLocator, bundled_database, open_locator
from shoal_server.heartbeat import InvalidHeartbeat, Limits, parse_heartbeat
from shoal_server.ranking import Ranked
from shoal_server.pac import render_pac
from shoal_server.render import cache_record, ranked_json, to_json
from shoal_server.table import CacheTable
from support.tools import requires


def hb(uuid="u1", ip="142.90.1.1", load=1.0, user_id=None, now=1000.0, **kw):
    data = {"uuid": uuid, "hostname": "squid.example.org", "squid_port": 3128, "public_ip": ip, "load": load,
            "timestamp": now}
    data.update(kw)
    return parse_heartbeat(json.dumps(data).encode(), now, Limits(), user_id)


class CountingLocator:
    def __init__(self):
        self.calls = []

    def locate(self, ip):
        self.calls.append(ip)
        return None


def test_geoip_runs_once_per_new_address_not_per_heartbeat():
    table, geo = CacheTable(), CountingLocator()
    for i in range(5):
        table.upsert(hb(load=i), 1000.0 + i, geo.locate)
    table.upsert(hb(ip="131.225.1.1"), 1010.0, geo.locate)
    assert geo.calls == ["142.90.1.1", "131.225.1.1"]
    entry = table.get("u1")
    assert (entry.created, entry.last_active, entry.hb.load) == (1000.0, 1010.0, 1.0)


def test_expire_removes_only_silent_caches():
    table, geo = CacheTable(), CountingLocator()
    table.upsert(hb("old"), 1000.0, geo.locate)
    table.upsert(hb("new"), 1100.0, geo.locate)
    assert table.expire(1181.0, 180) == ["old"]
    assert [e.uuid for e in table.snapshot()] == ["new"]


def test_snapshot_is_shared_until_change():
    table, geo = CacheTable(), CountingLocator()
    table.upsert(hb("a"), 1000.0, geo.locate)
    first = table.snapshot()
    assert table.snapshot() is first
    table.upsert(hb("a"), 1001.0, geo.locate)
    assert table.snapshot() is not first


def test_owner_cannot_be_hijacked():
    table, geo = CacheTable(), CountingLocator()
    table.upsert(hb("a", user_id="site-a"), 1000.0, geo.locate)
    with pytest.raises(InvalidHeartbeat) as err:
        table.upsert(hb("a", user_id="site-b", load=99), 1001.0, geo.locate)
    assert err.value.reason == "owner_mismatch"
    assert table.get("a").hb.load == 1.0


def test_bundled_geolite2_places_research_sites():
    geo = open_locator("")
    assert isinstance(geo, MmdbLocator) and bundled_database()
    assert geo.locate("142.104.1.1").city == "Victoria"
    assert geo.locate("137.158.1.1").city == "Cape Town"
    assert geo.locate("133.11.1.1").country_code == "JP"
    assert geo.locate("2001:1458::1").country_code == "CH"
    for private in ("10.1.1.1", "192.168.1.1", "127.0.0.1", "::1", "fe80::1", "100.64.0.1"):
        assert geo.locate(private) is None


@requires("geoip-database", os.path.exists("/usr/share/GeoIP/GeoIP.dat"), "/usr/share/GeoIP/GeoIP.dat")
def test_legacy_dat_backend_places_by_country():
    geo = open_locator("/usr/share/GeoIP/GeoIP.dat")
    assert isinstance(geo, DatLocator)
    loc = geo.locate("142.104.1.1")
    assert loc.country_code == "CA" and 40 < loc.latitude < 70
    assert geo.locate("10.0.0.1") is None
    v6 = open_locator("/usr/share/GeoIP/GeoIPv6.dat")
    assert v6.locate("2001:1458::1").country_code == "CH"


def test_unusable_database_is_a_clear_error(tmp_path):
    with pytest.raises(GeoDatabaseError, match="geoip_database"):
        open_locator(str(tmp_path / "none.mmdb"))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database")
    with pytest.raises(GeoDatabaseError):
        open_locator(str(junk))


def test_json_keeps_the_upstream_shape_and_2014_regex_reads_it():
    table = CacheTable()
    geo = open_locator("")
    table.upsert(hb("a", ip="142.90.1.1"), 1000.0, geo.locate)
    entry = table.get("a")
    text = ranked_json([Ranked(entry, 0.1, 123.45)])
    data = json.loads(text)
    assert list(data) == ["0"]
    rec = data["0"]
    for key in ("hostname", "squid_port", "public_ip", "private_ip", "external_ip", "load", "max_load", "distance",
                "last_active", "created", "verified", "upstream", "cache_type", "geo_data"):
        assert key in rec
    assert set(rec["geo_data"]) == {"city", "region_code", "country_code", "country_name", "continent", "latitude",
                                    "longitude", "time_zone", "metro_code", "postal_code"}
    # The 2014 client: re.findall('"hostname": "(.*?)"') and similar on the raw text.
    assert re.findall(r'"hostname": "(.*?)"', text) == ["squid.example.org"]
    assert re.findall(r'"squid_port": (\d+)[,}]', text) == ["3128"]
    assert re.findall(r'"distance": ([\d.]+)[,}]', text) == ["123.5"]
    assert to_json([]) == "{}"


def test_pac_is_a_function_with_proxies_then_the_fallback_only():
    pac = render_pac([], [("squid.example.org", 3128), ("2001:db8::1", 3129)], ())
    assert 'return "PROXY squid.example.org:3128; PROXY [2001:db8::1]:3129";' in pac
    assert pac.startswith("function FindProxyForURL(url, host) {")
    assert "DIRECT" not in pac    # no DIRECT unless the site configures it
    assert render_pac([], [("a.example.org", 1)], ("DIRECT",)).count("DIRECT") == 1


def test_pac_escapes_even_if_a_bad_name_got_through():
    name = 'evil"); alert(1); ("</script>'
    pac = render_pac([], [(name, 1)], ("DIRECT",))
    literal = re.search(r"return (.*);\n}", pac).group(1)
    assert json.loads(literal) == f"PROXY {name}:1; DIRECT"  # one string literal, nothing executable
    assert "</script>" not in pac
