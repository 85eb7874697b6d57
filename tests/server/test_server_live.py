"""shoal-server as a real process on the real RabbitMQ with the real GeoLite2 database."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from support.heartbeats import upstream_heartbeat
from support.procs import http_get
from support.rabbitnode import free_port, wait_port

# Caches at real research sites (the bundled GeoLite2 places each address there).
SITES = {
    "triumf": "142.90.1.1",      # Vancouver
    "cern": "188.184.1.1",       # Geneva
    "fnal": "131.225.1.1",       # Batavia, IL
    "kek": "130.87.1.1",         # Japan
    "anu": "150.203.1.1",        # Canberra
    "wits": "146.141.1.1",       # Johannesburg
}
VICTORIA, CAPE_TOWN, TOKYO = "142.104.1.1", "137.158.1.1", "133.11.1.1"


def announce(publisher, load=10.0, **overrides):
    for name, ip in SITES.items():
        publisher.send(upstream_heartbeat(ip, load=overrides.get(name, load), uuid=f"uuid-{name}",
                                          hostname=f"squid.{name}.example.org"))


def order(server, client_ip, n=6, route="nearest"):
    data = server.get_json(f"/{route}/{n}?ip={client_ip}")
    return [data[str(i)]["hostname"].split(".")[1] for i in range(len(data))]


def wait_count(server, count, timeout=10.0):
    return server.wait_for(lambda d: len(d) == count, timeout=timeout, path="/all")


def test_heartbeats_listed_within_two_seconds(server, publisher):
    start = time.monotonic()
    announce(publisher)
    wait_count(server, len(SITES), timeout=2.0)
    assert time.monotonic() - start < 2.0


def test_nearest_order_is_geographically_right(server, publisher):
    announce(publisher)
    wait_count(server, len(SITES))
    # Equal loads: pure great-circle order. From Victoria: 122, 2,818, 7,584, 8,412, 12,689, 16,522 km.
    assert order(server, VICTORIA) == ["triumf", "fnal", "kek", "cern", "anu", "wits"]
    # From Cape Town: 1,260, 8,994, 10,771, 13,719, 14,732, 16,416 km.
    assert order(server, CAPE_TOWN) == ["wits", "cern", "anu", "fnal", "kek", "triumf"]
    # From Tokyo: 6, 7,556, 7,954, 9,792, 10,102, 13,545 km.
    assert order(server, TOKYO) == ["kek", "triumf", "anu", "cern", "fnal", "wits"]
    data = server.get_json(f"/nearest/1?ip={VICTORIA}")
    assert 50 < data["0"]["distance"] < 200 and data["0"]["geo_data"]["city"] == "Vancouver"


def test_full_load_moves_a_cache_down_as_the_formula_says(server, publisher):
    announce(publisher)
    wait_count(server, len(SITES))
    assert order(server, VICTORIA)[0] == "triumf"
    # TRIUMF at max_load costs 0.5 * 1 + ~0: more than any other site, the farthest (Johannesburg,
    # 16,700 km) costing 0.5 * 16,700 / 20,015 = 0.42.
    announce(publisher, triumf=122000.0)
    server.wait_for(lambda d: any(c["load"] == 122000.0 for c in d.values()), path="/all")
    assert order(server, VICTORIA)[-1] == "triumf"
    data = server.get_json(f"/nearest/6?ip={VICTORIA}")
    costs = [0.5 * c["distance"] / 20015.09 + 0.5 * c["load"] / c["max_load"] for c in data.values()]
    assert costs == sorted(costs)
    # Halfway between: at 40% load (cost 0.2 + 0.002) it sits behind Batavia and Tokyo, ahead of Geneva.
    announce(publisher, triumf=0.4 * 122000.0)
    server.wait_for(lambda d: any(c["load"] == 0.4 * 122000.0 for c in d.values()), path="/all")
    assert order(server, VICTORIA)[:4] == ["fnal", "kek", "triumf", "cern"]


def test_silent_cache_disappears_after_inactive_time(server, publisher):
    announce(publisher)
    wait_count(server, len(SITES))
    t0 = time.monotonic()
    deadline = t0 + 2.0
    while time.monotonic() < deadline:  # keep all but KEK alive
        for name, ip in SITES.items():
            if name != "kek":
                publisher.send(upstream_heartbeat(ip, uuid=f"uuid-{name}", hostname=f"squid.{name}.example.org"))
        time.sleep(0.3)
    assert "kek" in order(server, TOKYO)  # 2 s of silence < 3 s inactive time
    server.wait_for(lambda d: len(d) == len(SITES) - 1, timeout=5.0, path="/all")
    gone_after = time.monotonic() - t0
    assert 2.5 < gone_after < 6.0
    assert "kek" not in order(server, TOKYO)


def hostile_messages():
    good = upstream_heartbeat("142.90.1.1", uuid="hostile-base")
    mutations = [
        ("uuid", None), ("uuid", 12), ("uuid", "<script>x</script>"), ("uuid", "a\"b"), ("squid_port", 0),
        ("squid_port", 70000), ("squid_port", -1), ("squid_port", "80; rm"), ("squid_port", [3128]),
        ("public_ip", "999.1.1.1"), ("public_ip", 12345), ("public_ip", "<img src=x>"), ("public_ip", None),
        ("private_ip", {"a": 1}), ("external_ip", "1.2.3"), ("hostname", "<script>alert(1)</script>"),
        ("hostname", "x\" onmouseover=\"alert(1)"), ("hostname", "evil'); alert('x"), ("hostname", 7),
        ("hostname", "a" * 300), ("load", -5), ("load", "high"), ("load", None), ("load", [1]), ("load", True),
        ("public_ip", "127.0.0.1"), ("hostname", "0.0.0.0"), ("timestamp", time.time() + 10 * 365 * 86400),
        ("timestamp", time.time() - 86400), ("timestamp", "now"), ("upstream", "<b>"), ("cache_type", "x"),
        ("verified", "true"), ("agent_version", "<script>"),
    ]
    raw = [b"not json", b"\x00\xff\xfe", b"[]", b"null", b"\"string\"", b"{", b"{}" * 3, b"x" * (2 * 1024 * 1024),
           b'{"uuid": "n", "squid_port": 3128, "public_ip": "142.90.1.1", "load": NaN, "timestamp": 1}',
           b'{"uuid": "n", "squid_port": 3128, "public_ip": "142.90.1.1", "load": Infinity, "timestamp": 1}',
           b'{"uuid": "n", "squid_port": 3128, "public_ip": "142.90.1.1", "load": -Infinity, "timestamp": 1}',
           b'[' * 100000 + b']' * 100000]
    out = list(raw)
    rng = random.Random(7)
    while len(out) < 1100:
        msg = dict(good, uuid=f"hostile-{len(out)}")
        for key, value in rng.sample(mutations, rng.randint(1, 3)):
            if value is None:
                msg.pop(key, None)
            else:
                msg[key] = value
        if key == "uuid" and value is None:
            pass
        out.append(json.dumps(msg).encode())
    return out


def test_thousand_hostile_messages_then_a_good_one(server, publisher):
    bad = hostile_messages()
    for body in bad:
        publisher.send(body)
    publisher.send(upstream_heartbeat("142.90.1.1", uuid="the-good-one", hostname="good.example.org"))
    listed = server.wait_for(lambda d: len(d) >= 1, timeout=30.0, path="/all")
    time.sleep(0.5)
    listed = server.get_json("/all")
    assert [c["hostname"] for c in listed.values()] == ["good.example.org"]
    health = server.health()
    assert health["consumer_connected"] and health["accepted"] == 1
    assert sum(health["dropped"].values()) >= 1000
    for path in ("/", "/wpad.dat", "/all", "/nearest?ip=142.104.1.1"):
        status, _, body = http_get(server.url + path)
        assert status == 200
        text = body.decode()
        for needle in ("<script", "<img", "onmouseover", "alert(", "'); "):
            assert needle not in text, (path, needle)
    # The server is still consuming: a second good cache shows up.
    publisher.send(upstream_heartbeat("131.225.1.1", uuid="second-good"))
    wait_count(server, 2)
    assert "Traceback" not in server.log()


def test_upstream_variants_and_2014_regex_client(server, publisher):
    a = upstream_heartbeat("142.90.1.1", port_key="squid_port", port=3128, hostname="old-agent.triumf.ca")
    b = upstream_heartbeat("131.225.1.1", port_key="cache_port", port=3129, hostname="new-agent.fnal.gov")
    publisher.send(a)
    publisher.send(b)
    wait_count(server, 2)
    status, headers, body = http_get(server.url + "/nearest?ip=142.104.1.1")
    text = body.decode()
    assert headers["Content-Type"] == "application/json"
    # What the 2014 shoal-client did with the raw text:
    hostnames = re.findall(r'"hostname": "([^"]*)"[,}]', text)
    ports = re.findall(r'"squid_port": (\d+)[,}]', text)
    assert list(zip(hostnames, ports)) == [("old-agent.triumf.ca", "3128"), ("new-agent.fnal.gov", "3129")]


def test_routes_and_errors(server, publisher):
    publisher.send(upstream_heartbeat("142.90.1.1", upstream="cvmfs", hostname="cvmfs-only.example.org"))
    publisher.send(upstream_heartbeat("131.225.1.1", upstream="frontier", hostname="frontier-only.example.org"))
    wait_count(server, 2)
    names = lambda path: [c["hostname"] for c in server.get_json(path).values()]  # noqa: E731
    assert names("/nearestcvmfs?ip=142.104.1.1") == ["cvmfs-only.example.org"]
    assert names("/nearestconditions/3?ip=142.104.1.1") == ["frontier-only.example.org"]
    assert names("/nearestverified") == []
    assert len(server.get_json("/nearest/1")) == 1
    status, _, body = http_get(server.url + "/nearest?ip=not-an-ip")
    assert status == 400 and b"not an IPv4 or IPv6 address" in body
    status, headers, body = http_get(server.url + "/wpad.dat?ip=133.11.1.1")
    assert status == 200 and headers["Content-Type"] == "application/x-ns-proxy-autoconfig"
    # A route per kind (one cache each), then every cache for other URLs; no DIRECT unless configured.
    assert body.decode().count("PROXY") == 4 and "DIRECT" not in body.decode()
    # A client GeoIP cannot place (loopback here) still gets an answer, with null distances.
    local = server.get_json("/nearest")
    assert len(local) == 2 and all(c["distance"] is None for c in local.values())
    assert "Traceback" not in server.log()


def test_healthz_reports_consumer_down(server_factory):
    srv = server_factory(rabbitmq={"amqp_port": free_port()}, cache={"cache_inactive_time": 1},
                         wait_connected=False)
    time.sleep(1.5)
    status, _, body = http_get(srv.url + "/healthz")
    data = json.loads(body)
    assert status == 503 and data["consumer_connected"] is False
    assert data["status"] == "unavailable"      # no broker and no table: nothing useful to serve


def test_sigterm_stops_within_two_seconds(server):
    assert server.stop(signal.SIGTERM) < 2.0


def test_wsgi_entry_gives_the_same_answers(server, publisher, tmp_path):
    """shoal_server.wsgi:application under a stdlib WSGI server vs the dev server, same heartbeats."""
    port = free_port()
    env = dict(os.environ, SHOAL_SERVER_CONFIG=server.config_path)
    script = ("import sys; from wsgiref.simple_server import make_server, WSGIRequestHandler;"
              "from shoal_server.wsgi import application;"
              "WSGIRequestHandler.log_message = lambda *a: None;"
              f"make_server('127.0.0.1', {port}, application).serve_forever()")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "wsgi.err", "wb"))
    try:
        wait_port(port, proc=proc)
        http_get(f"http://127.0.0.1:{port}/healthz")  # first request starts the consumer
        deadline = time.monotonic() + 15
        while not json.loads(http_get(f"http://127.0.0.1:{port}/healthz")[2])["consumer_connected"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        announce(publisher)
        wait_count(server, len(SITES))
        deadline = time.monotonic() + 10
        while len(json.loads(http_get(f"http://127.0.0.1:{port}/all")[2])) < len(SITES):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        def strip(doc):
            return {k: {f: v for f, v in rec.items() if f not in ("last_active", "created")}
                    for k, rec in json.loads(doc).items()}

        for path in ("/nearest/6?ip=" + VICTORIA, "/nearest?ip=" + TOKYO, "/all", "/nearestcvmfs?ip=" + CAPE_TOWN):
            dev = http_get(server.url + path)
            wsgi = http_get(f"http://127.0.0.1:{port}{path}")
            assert dev[0] == wsgi[0] == 200
            assert strip(dev[2]) == strip(wsgi[2]), path
        for path in ("/wpad.dat?ip=" + VICTORIA, "/nearest?ip=bogus"):
            dev, wsgi = http_get(server.url + path), http_get(f"http://127.0.0.1:{port}{path}")
            assert (dev[0], dev[2]) == (wsgi[0], wsgi[2])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
