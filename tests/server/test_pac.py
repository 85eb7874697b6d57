"""/wpad.dat as CVMFS and Frontier read it: served by the app, evaluated by pacparser, read by CVMFS's rules."""
import dataclasses
import json
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from shoal_server.config import PacSettings, ServerConfig, load_config
from shoal_server.consumer import ConsumerStatus
from shoal_server.geo import Location
from shoal_server.grouping import group_numbers, group_ranked
from shoal_server.heartbeat import Limits, parse_heartbeat
from shoal_server.pac import FallbackError, client_order, parse_fallback, rotate_groups
from shoal_server.ranking import Ranked
from shoal_server.table import CacheTable
from shoal_server.webapp import create_app

from support import pacrun
from support.tools import requires
from support.pacrun import ATLAS_FRONTIER, FRONTIER, OPENHTC, OTHER, STRATUM1, cvmfs_chain

pytestmark = requires("pacparser", available=pacrun.available(), detail="python3-pacparser for /usr/bin/python3")

GENEVA, CHICAGO, VANCOUVER = Location(46.2, 6.1), Location(41.8, -88.3), Location(49.2, -123.1)
PLACES = {"128.141.": GENEVA, "188.184.": GENEVA, "131.225.": CHICAGO, "142.90.": VANCOUVER}


class Places:
    """GeoIP stand-in: the first two octets decide the city."""

    def locate(self, ip):
        return next((loc for prefix, loc in PLACES.items() if ip.startswith(prefix)), None)

    def close(self):
        pass


def heartbeat(uuid, ip, upstream="both", load=1000.0, hostname=None, now=1000.0):
    data = {"uuid": uuid, "hostname": hostname or f"{uuid}.example.org", "squid_port": 3128, "public_ip": ip,
            "load": load, "max_load": 100000.0, "upstream": upstream, "timestamp": now}
    return parse_heartbeat(json.dumps(data).encode(), now, Limits())


def app_for(caches, fallback="", margin=None, **pac):
    config = load_config(None)
    pac_settings = dataclasses.replace(config.pac, fallback=parse_fallback(fallback), **pac)
    cache = config.cache if margin is None else dataclasses.replace(config.cache, cache_group_margin=margin)
    config = dataclasses.replace(config, pac=pac_settings, cache=cache)
    table, places = CacheTable(), Places()
    for hb in caches:
        table.upsert(hb, 1000.0, places.locate)
    return create_app(table, places, config, ConsumerStatus(), clock=lambda: 1000.0)


def wpad(app, client_ip):
    response = app.request(f"/wpad.dat?ip={client_ip}")
    return response.status, dict(response.headers), response.data.decode()


def answers(pac, targets=(STRATUM1, OPENHTC, FRONTIER, ATLAS_FRONTIER, OTHER)):
    return dict(zip(targets, pacrun.find_proxies([(pac, url, host) for url, host in targets])))


SITE = [heartbeat("cvmfs-squid", "131.225.1.10", "cvmfs", load=100.0),      # Fermilab, CVMFS only
        heartbeat("frontier-squid", "131.225.1.11", "frontier", load=200.0),  # Fermilab, Frontier only
        heartbeat("cern-both", "128.141.1.1", "both", load=50.0)]             # Geneva, serves both


def test_stratum1_urls_go_to_cvmfs_caches_frontier_urls_to_frontier_caches():
    status, headers, pac = wpad(app_for(SITE), "131.225.99.1")
    assert status.startswith("200") and headers["Content-Type"] == "application/x-ns-proxy-autoconfig"
    got = answers(pac)
    for target in (STRATUM1, OPENHTC):
        assert cvmfs_chain(got[target]) == "http://cvmfs-squid.example.org:3128;http://cern-both.example.org:3128"
    for target in (FRONTIER, ATLAS_FRONTIER):
        assert got[target] == "PROXY frontier-squid.example.org:3128; PROXY cern-both.example.org:3128"
    # Any other URL: every cache, nearest first. Nowhere DIRECT: the site did not ask for it.
    assert cvmfs_chain(got[OTHER]).split(";")[-1] == "http://cern-both.example.org:3128"
    assert not any("DIRECT" in answer or "NONE" in answer for answer in got.values())


@pytest.mark.parametrize("fallback,tail", [
    ("", ""),
    ("DIRECT", ";DIRECT"),
    ("squid.site.example:3130, DIRECT", ";http://squid.site.example:3130;DIRECT"),
    ("PROXY 10.1.2.3:8080", ";http://10.1.2.3:8080"),
    ("http://[2001:db8::5]", ";http://[2001:db8::5]:3128"),
])
def test_each_fallback_setting_ends_every_list(fallback, tail):
    got = answers(wpad(app_for(SITE, fallback), "131.225.99.1")[2])
    assert cvmfs_chain(got[STRATUM1]) == ("http://cvmfs-squid.example.org:3128;http://cern-both.example.org:3128"
                                          + tail)
    assert cvmfs_chain(got[FRONTIER]) == ("http://frontier-squid.example.org:3128;http://cern-both.example.org:3128"
                                          + tail)
    assert all(answer.upper().count("DIRECT") == ("DIRECT" in fallback) for answer in got.values())


def test_no_cache_known_is_an_http_error_so_cvmfs_tries_its_next_pac_url():
    status, headers, body = wpad(app_for([]), "131.225.99.1")
    assert status.startswith("503") and "FindProxyForURL" not in body
    assert headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("fallback", ["DIRECT", "squid.site.example:3128"])
def test_no_cache_known_with_a_fallback_serves_the_fallback(fallback):
    status, _, pac = wpad(app_for([], fallback), "131.225.99.1")
    assert status.startswith("200")
    got = answers(pac)
    expected = "DIRECT" if fallback == "DIRECT" else "http://squid.site.example:3128"
    assert {cvmfs_chain(a) for a in got.values()} == {expected}


def test_a_kind_without_caches_gets_every_cache_never_none():
    # Only CVMFS caches: a Frontier URL still gets proxies (NONE would be fatal for Frontier).
    caches = [heartbeat("a", "131.225.1.10", "cvmfs"), heartbeat("b", "128.141.1.1", "cvmfs")]
    got = answers(wpad(app_for(caches), "131.225.99.1")[2])
    assert got[FRONTIER] == got[OTHER] == got[STRATUM1] == "PROXY a.example.org:3128; PROXY b.example.org:3128"


def test_patterns_are_configurable():
    app = app_for(SITE, cvmfs_urls=("*://cvmfs.site.example/*",), frontier_urls=("*://conditions.site.example/*",))
    pac = wpad(app, "131.225.99.1")[2]
    got = answers(pac, [("http://cvmfs.site.example/cvmfs/x", "cvmfs.site.example"),
                        ("http://conditions.site.example/db", "conditions.site.example"), STRATUM1])
    values = list(got.values())
    assert values[0].startswith("PROXY cvmfs-squid.") and values[1].startswith("PROXY frontier-squid.")
    assert values[2].count("PROXY") == 3       # the stratum-1 no longer matches: every cache


MANY = [heartbeat(f"s{i}", f"131.225.1.{10 + i}", "both", load=1000.0 + i) for i in range(4)]


def test_equally_good_caches_are_ordered_per_client_deterministically():
    app = app_for(MANY + [heartbeat("far", "142.90.1.1", "both")])
    firsts, seconds = Counter(), Counter()
    for worker in range(200):
        ip = f"131.225.{worker // 100 + 50}.{worker % 100 + 1}"
        pac = wpad(app, ip)[2]
        assert wpad(app, ip)[2] == pac                      # same client, same order
        chain = cvmfs_chain(answers(pac, [STRATUM1])[STRATUM1]).split(";")
        assert sorted(chain[:4]) == [f"http://s{i}.example.org:3128" for i in range(4)]
        assert chain[4] == "http://far.example.org:3128"    # the far cache stays last
        firsts[chain[0]] += 1
        seconds[chain[0], chain[1]] += 1
    assert len(firsts) == 4 and min(firsts.values()) >= 30   # every squid leads for about a quarter
    # When a squid fails, its workers spread over the other three (not all onto the next one).
    for first in firsts:
        assert len([s for f, s in seconds if f == first]) == 3


def test_fallback_setting_refuses_what_a_pac_cannot_carry():
    for bad in ("squid.example.org:0", "squid example", "x\"y", "a/b", "SOCKS a:1", "squid:99999"):
        with pytest.raises(FallbackError):
            parse_fallback(bad)
    assert parse_fallback("direct, a.example.org, a.example.org") == ("DIRECT", "PROXY a.example.org:3128")


def test_config_file_reads_the_pac_section(tmp_path):
    path = tmp_path / "shoal_server.conf"
    path.write_text("[pac]\nfallback = squid.site.example:3128, DIRECT  ; the site's own\n"
                    "frontier_urls = *://db.example/*\ncaches = 3\n[cache]\ncache_group_margin = 0.1\n")
    config = load_config(str(path))
    assert config.pac.fallback == ("PROXY squid.site.example:3128", "DIRECT")
    assert config.pac.frontier_urls == ("*://db.example/*",) and config.pac.caches == 3
    assert config.cache.cache_group_margin == 0.1
    assert ServerConfig().pac == PacSettings() and PacSettings().fallback == ()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=6), st.ip_addresses(v=4).map(str))
def test_rotation_keeps_every_member_once_and_group_order(sizes, ip):
    groups, n = [], 0
    for size in sizes:
        groups.append([(f"h{n + i}.example.org", 3128) for i in range(size)])
        n += size
    flat = rotate_groups(groups, ip)
    assert flat == rotate_groups(groups, ip)
    assert sorted(flat) == sorted(p for g in groups for p in g)
    pos = 0
    for group in groups:   # each group's members stay together, groups in rank order
        assert set(flat[pos:pos + len(group)]) == set(group)
        pos += len(group)
    for group in groups:   # a member leaving keeps the others' order for this client
        if len(group) > 1:
            order = client_order(ip, group)
            assert client_order(ip, [p for p in group if p != order[0]]) == order[1:]


def ranked(uuid, ip, cost, loc=None):
    table = CacheTable()
    table.upsert(heartbeat(uuid, ip), 1000.0, lambda _ip: loc)
    return Ranked(table.get(uuid), cost, None)


def test_grouping_same_site_or_within_the_margin_and_only_runs():
    a = ranked("a", "131.225.1.1", 0.10, CHICAGO)
    b = ranked("b", "131.225.1.2", 0.30, CHICAGO)     # same place as a, much more loaded: same site
    c = ranked("c", "142.90.1.1", 0.305, VANCOUVER)   # within 0.02 of nothing before it but b? no: head is a
    d = ranked("d", "142.90.1.2", 0.31, VANCOUVER)
    assert [[r.entry.uuid for r in g] for g in group_ranked([a, b, c, d], 0.02)] == [["a", "b"], ["c", "d"]]
    assert group_numbers([a, b, c, d], 0.02) == [0, 0, 1, 1]
    assert group_numbers([a, c], 0.0) == [0, 1] and group_numbers([a, c], 1.0) == [0, 0]
    assert group_numbers([], 0.02) == []


def test_nearest_serves_the_group_number_next_to_upstreams_fields():
    app = app_for(MANY + [heartbeat("far", "142.90.1.1", "both")])
    data = json.loads(app.request("/nearest?ip=131.225.99.1").data)
    assert [data[str(i)]["group"] for i in range(5)] == [0, 0, 0, 0, 1]
    assert all("hostname" in r and "squid_port" in r and "public_ip" in r for r in data.values())
    assert "group" not in next(iter(json.loads(app.request("/all").data).values()))


CACHE = st.tuples(st.sampled_from(["cvmfs", "frontier", "both"]), st.floats(0, 150000),
                  st.sampled_from(["131.225.1.", "128.141.1.", "142.90.1.", "150.203.1."]))
FALLBACKS = st.sampled_from(["", "DIRECT", "squid.site.example:3128", "squid.site.example:3128, DIRECT"])


@settings(max_examples=40, deadline=None)
@given(st.lists(CACHE, max_size=8), FALLBACKS, st.sampled_from(["131.225.99.1", "150.203.9.9", "8.8.8.8"]))
def test_every_answer_routes_by_kind_and_ends_in_exactly_the_fallback(caches, fallback, client):
    hbs = [heartbeat(f"c{i}", f"{prefix}{i + 1}", upstream, load) for i, (upstream, load, prefix) in enumerate(caches)]
    status, _, pac = wpad(app_for(hbs, fallback), client)
    tail = [cvmfs_chain(item) for item in parse_fallback(fallback)]
    if not hbs and not fallback:
        assert status.startswith("503")
        return
    got = answers(pac, (STRATUM1, FRONTIER, OTHER))
    for target, kind in ((STRATUM1, "cvmfs"), (FRONTIER, "frontier"), (OTHER, None)):
        chain = cvmfs_chain(got[target]).split(";")
        assert chain and "NONE" not in got[target] and chain[len(chain) - len(tail):] == tail
        hosts = [c.split("//")[1].split(".")[0] for c in chain[:len(chain) - len(tail)]]
        kinds = {h: up for h, (up, _, _) in zip([f"c{i}" for i in range(len(caches))], caches)}
        of_kind = [h for h in kinds if kind is None or kinds[h] in (kind, "both")]
        expected = of_kind or list(kinds)    # no cache of the kind: every cache, never NONE
        assert len(hosts) == min(5, len(expected)) and set(hosts) <= set(expected), (target, hosts, kinds)
        assert ("DIRECT" in chain) == ("DIRECT" in fallback)
