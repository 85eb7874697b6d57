"""/wpad.dat run in a real JavaScript engine, and /metrics parsed as Prometheus does, on a live server."""
from __future__ import annotations

import json
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.heartbeats import upstream_heartbeat
from support.procs import http_get
from support.tools import require

SITES = [  # (public_ip, hostname, load, max_load)
    ("128.141.10.1", "squid1.cern.example", 40000.0, 100000.0),
    ("188.184.20.2", "squid2.cern.example", 1000.0, 100000.0),
    ("131.225.30.3", "squid.fnal.example", 5000.0, 122000.0),
    ("142.90.40.4", "squid.triumf.example", 90000.0, 122000.0),
    ("130.87.50.5", "squid.kek.example", 250.5, 50000.0),
    ("150.203.60.6", "squid.anu.example", 12.0, 122000.0),
]

# A PAC file runs in a bare JavaScript context (no Node or browser globals), as proxy engines run it.
NODE_PAC = r"""
const vm = require("vm");
let pac = "";
process.stdin.on("data", d => pac += d);
process.stdin.on("end", () => {
  const url = process.argv[1], host = process.argv[2];
  const sandbox = {url: url, host: host};
  const result = vm.runInNewContext(pac + "\n;FindProxyForURL(url, host);", sandbox, {timeout: 1000});
  process.stdout.write(String(result));
});
"""


@pytest.fixture
def populated(server_factory, publisher):
    server = server_factory(cache={"cache_cleanse_interval": 5, "cache_inactive_time": 120})
    for ip, host, load, max_load in SITES:
        publisher.send(upstream_heartbeat(ip, load=load, hostname=host, uuid=f"uuid-{host}", max_load=max_load))
    server.wait_for(lambda d: len(d) == len(SITES), timeout=20, path="/all")
    return server


def run_pac(pac: str, url: str = "http://cvmfs-stratum-one.cern.ch:8000/cvmfs/x/.cvmfspublished",
            host: str = "cvmfs-stratum-one.cern.ch") -> str:
    node = require("node", detail="to evaluate PAC files")
    out = subprocess.run([node, "-e", NODE_PAC, url, host], input=pac, capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout


@pytest.mark.parametrize("client_ip,first", [("128.141.200.1", "squid2.cern.example"),   # CERN client, idle CERN cache
                                             ("131.225.99.9", "squid.fnal.example"),      # Fermilab client
                                             ("150.203.1.1", "squid.anu.example")])       # Canberra client
def test_pac_gives_nearest_caches_then_direct_in_node(populated, client_ip, first):
    status, headers, body = http_get(f"{populated.url}/wpad.dat?ip={client_ip}")
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ns-proxy-autoconfig")
    nearest = populated.get_json(f"/nearest?ip={client_ip}")
    expected = "; ".join(f"PROXY {c['hostname']}:{c['squid_port']}" for c in nearest.values()) + "; DIRECT"
    result = run_pac(body.decode())
    assert result == expected
    assert result.startswith(f"PROXY {first}:3128; ")
    assert result.count("PROXY ") == 5   # the default N of /nearest


def test_pac_follows_the_requesting_address_like_nearest(populated):
    # No ?ip=: the client is 127.0.0.1 (not locatable), the same rule /nearest applies.
    status, _, body = http_get(f"{populated.url}/wpad.dat")
    nearest = populated.get_json("/nearest")
    expected = "; ".join(f"PROXY {c['hostname']}:{c['squid_port']}" for c in nearest.values()) + "; DIRECT"
    assert status == 200 and run_pac(body.decode()) == expected
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
