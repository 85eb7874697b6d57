"""/wpad.dat run by pacparser (the PAC engine of CVMFS and Frontier), and /metrics parsed as Prometheus does, on a live server."""
from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import pacrun
from support.heartbeats import upstream_heartbeat
from support.procs import http_get
from support.tools import missing

SITES = [  # (public_ip, hostname, load, max_load)
    ("128.141.10.1", "squid1.cern.example", 40000.0, 100000.0),
    ("188.184.20.2", "squid2.cern.example", 1000.0, 100000.0),
    ("131.225.30.3", "squid.fnal.example", 5000.0, 122000.0),
    ("142.90.40.4", "squid.triumf.example", 90000.0, 122000.0),
    ("130.87.50.5", "squid.kek.example", 250.5, 50000.0),
    ("150.203.60.6", "squid.anu.example", 12.0, 122000.0),
]

@pytest.fixture
def populated(server_factory, publisher):
    server = server_factory(cache={"cache_cleanse_interval": 5, "cache_inactive_time": 120})
    for ip, host, load, max_load in SITES:
        publisher.send(upstream_heartbeat(ip, load=load, hostname=host, uuid=f"uuid-{host}", max_load=max_load))
    server.wait_for(lambda d: len(d) == len(SITES), timeout=20, path="/all")
    return server


def run_pac(pac: str, url: str = "http://cvmfs-stratum-one.cern.ch:8000/cvmfs/x/.cvmfspublished",
            host: str = "cvmfs-stratum-one.cern.ch") -> str:
    """FindProxyForURL's answer from pacparser, the PAC engine CVMFS and Frontier embed."""
    if not pacrun.available():
        missing("pacparser", "python3-pacparser for /usr/bin/python3, to evaluate PAC files")
    result = pacrun.find_proxy(pac, url, host)
    assert isinstance(result, str), result
    return result


def grouped(nearest: dict) -> list:
    """/nearest's caches as groups of equally good ones (consecutive equal ``group`` numbers)."""
    groups: list = []
    for i in range(len(nearest)):
        record = nearest[str(i)]
        proxy = f"PROXY {record['hostname']}:{record['squid_port']}"
        if groups and groups[-1][0] == record["group"]:
            groups[-1][1].add(proxy)
        else:
            groups.append((record["group"], {proxy}))
    return [members for _, members in groups]


def same_as_nearest(result: str, nearest: dict) -> bool:
    """The PAC answer lists /nearest's caches, each group's members in some (rotated) order; no DIRECT."""
    items, pos = result.split("; "), 0
    for members in grouped(nearest):
        if set(items[pos:pos + len(members)]) != members:
            return False
        pos += len(members)
    return pos == len(items)


@pytest.mark.parametrize("client_ip,site", [("128.141.200.1", "cern.example"),     # CERN client: both CERN caches
                                            ("131.225.99.9", "squid.fnal.example"),  # Fermilab client
                                            ("150.203.1.1", "squid.anu.example")])   # Canberra client
def test_pac_gives_nearest_caches_without_direct(populated, client_ip, site):
    status, headers, body = http_get(f"{populated.url}/wpad.dat?ip={client_ip}")
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ns-proxy-autoconfig")
    nearest = populated.get_json(f"/nearest?ip={client_ip}")
    result = run_pac(body.decode())
    assert same_as_nearest(result, nearest), (result, nearest)
    assert result.split(";")[0].endswith(f"{site}:3128") and "DIRECT" not in result
    assert result.count("PROXY ") == 5   # [pac] caches, 5 by default


def test_pac_follows_the_requesting_address_like_nearest(populated):
    # No ?ip=: the client is 127.0.0.1 (not locatable), the same rule /nearest applies.
    status, _, body = http_get(f"{populated.url}/wpad.dat")
    nearest = populated.get_json("/nearest")
    assert status == 200 and same_as_nearest(run_pac(body.decode()), nearest)
    status, _, body = http_get(f"{populated.url}/wpad.dat?ip=not-an-ip")
    assert status == 400


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_parse_and_match_the_table(populated, publisher):
    # Some refused heartbeats, so the dropped counters have reasons to show.
    publisher.send(b"not json")
    publisher.send(b"[1, 2]")
    publisher.send(upstream_heartbeat("128.141.1.1", load=-5))
    populated.wait_for(lambda h: sum(h["dropped"].values()) >= 3)
    for path in ("/nearest?ip=128.141.1.1", "/nearest/3?ip=131.225.1.1", "/wpad.dat?ip=142.90.1.1", "/", "/all"):
        assert http_get(populated.url + path)[0] == 200
    assert http_get(populated.url + "/no-such-page")[0] == 404

    status, headers, body = http_get(populated.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    m = samples(body.decode())
    table = populated.get_json("/all")
    health = populated.health()

    assert m[("shoal_caches", ())] == len(table) == len(SITES)
    assert m[("shoal_aggregate_load_kbytes_per_second", ())] == pytest.approx(sum(c["load"] for c in table.values()))
    assert m[("shoal_aggregate_max_load_kbytes_per_second", ())] == pytest.approx(
        sum(c["max_load"] for c in table.values()))
    assert m[("shoal_aggregate_load_ratio", ())] == pytest.approx(
        sum(c["load"] for c in table.values()) / sum(c["max_load"] for c in table.values()))
    for c in table.values():
        labels = (("hostname", c["hostname"]), ("uuid", c["uuid"]))
        assert m[("shoal_cache_load_kbytes_per_second", labels)] == pytest.approx(c["load"])
        assert m[("shoal_cache_max_load_kbytes_per_second", labels)] == pytest.approx(c["max_load"])
    assert m[("shoal_consumer_connected", ())] == 1.0
    assert m[("shoal_heartbeats_accepted_total", ())] == health["accepted"] == len(SITES)
    for reason, count in health["dropped"].items():
        assert m[("shoal_heartbeats_dropped_total", (("reason", reason),))] == count
    assert {"not_json", "not_object", "bad_load"} <= set(health["dropped"])
    assert m[("shoal_heartbeats_consumed_total", ())] == health["accepted"] + sum(health["dropped"].values())

    assert m[("shoal_http_requests_total", (("code", "200"), ("endpoint", "nearest")))] == 2
    assert m[("shoal_http_requests_total", (("code", "200"), ("endpoint", "wpad")))] == 1
    assert m[("shoal_http_requests_total", (("code", "404"), ("endpoint", "other")))] == 1
    assert m[("shoal_http_request_duration_seconds_count", (("endpoint", "nearest"),))] == 2
    assert 0 < m[("shoal_http_request_duration_seconds_sum", (("endpoint", "nearest"),))] < 10


def test_metrics_follow_the_table_when_a_cache_goes(server_factory, publisher):
    server = server_factory(cache={"cache_cleanse_interval": 0.2, "cache_inactive_time": 2})
    publisher.send(upstream_heartbeat("128.141.10.1", load=10, uuid="short-lived"))
    server.wait_for(lambda d: len(d) == 1, path="/all")
    assert samples(http_get(server.url + "/metrics")[2].decode())[("shoal_caches", ())] == 1
    server.wait_for(lambda d: len(d) == 0, timeout=15, path="/all")
    m = samples(http_get(server.url + "/metrics")[2].decode())
    assert m[("shoal_caches", ())] == 0 and m[("shoal_aggregate_load_kbytes_per_second", ())] == 0
    assert not [k for k in m if k[0] == "shoal_cache_load_kbytes_per_second"]


def test_openmetrics_on_request(populated):
    status, headers, body = http_get(populated.url + "/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert json.dumps  # keep the import honest for readers: JSON endpoints are compared above
