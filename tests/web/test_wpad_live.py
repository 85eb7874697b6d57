"""/wpad.dat from a real shoal-server fed over the broker, evaluated by pacparser and read as CVMFS reads it."""
from __future__ import annotations

import pytest

from support import pacrun
from support.tools import requires
from support.heartbeats import upstream_heartbeat
from support.pacrun import FRONTIER, OTHER, STRATUM1, cvmfs_chain
from support.procs import http_get

pytestmark = [pytest.mark.integration,
              requires("pacparser", available=pacrun.available(), detail="python3-pacparser for /usr/bin/python3")]

FNAL = "131.225.99.9"
CACHES = [  # (public_ip, hostname, upstream, load)
    ("131.225.30.3", "cvmfs1.fnal.example", "cvmfs", 100.0),
    ("131.225.30.4", "cvmfs2.fnal.example", "cvmfs", 150.0),
    ("131.225.30.5", "frontier.fnal.example", "frontier", 100.0),
    ("128.141.10.1", "both.cern.example", "both", 10.0),
]


def feed(server, publisher):
    for ip, host, upstream, load in CACHES:
        publisher.send(upstream_heartbeat(ip, load=load, hostname=host, uuid=f"uuid-{host}", upstream=upstream))
    server.wait_for(lambda d: len(d) == len(CACHES), timeout=20, path="/all")


def chains(server, client_ip=FNAL):
    status, headers, body = http_get(f"{server.url}/wpad.dat?ip={client_ip}")
    assert status == 200 and headers["Content-Type"].startswith("application/x-ns-proxy-autoconfig")
    got = pacrun.find_proxies([(body.decode(), url, host) for url, host in (STRATUM1, FRONTIER, OTHER)])
    assert all(isinstance(g, str) and "NONE" not in g for g in got), got
    return [cvmfs_chain(g) for g in got]


def test_live_pac_routes_by_destination_and_has_no_direct_by_default(server_factory, publisher):
    server = server_factory(cache={"cache_cleanse_interval": 5, "cache_inactive_time": 120})
    status, _, body = http_get(f"{server.url}/wpad.dat?ip={FNAL}")
    assert status == 503, body      # nothing known yet: CVMFS moves on to its next PAC URL
    feed(server, publisher)
    stratum1, frontier, other = chains(server)
    cvmfs_members = set(stratum1.split(";")[:2])
    assert cvmfs_members == {"http://cvmfs1.fnal.example:3128", "http://cvmfs2.fnal.example:3128"}
    assert stratum1.split(";")[2:] == ["http://both.cern.example:3128"]
    assert frontier == "http://frontier.fnal.example:3128;http://both.cern.example:3128"
    assert len(other.split(";")) == 4 and "DIRECT" not in stratum1 + frontier + other


def test_live_pac_ends_in_the_configured_fallback_even_when_empty(server_factory, publisher):
    server = server_factory(cache={"cache_cleanse_interval": 5, "cache_inactive_time": 120},
                            extra={"pac": {"fallback": "squid.site.example:3128, DIRECT"}})
    assert chains(server) == ["http://squid.site.example:3128;DIRECT"] * 3    # no cache yet: the fallback
    feed(server, publisher)
    stratum1, frontier, _ = chains(server)
    assert stratum1.endswith(";http://both.cern.example:3128;http://squid.site.example:3128;DIRECT")
    assert frontier == ("http://frontier.fnal.example:3128;http://both.cern.example:3128;"
                        "http://squid.site.example:3128;DIRECT")
