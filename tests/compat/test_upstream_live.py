"""Upstream agents' heartbeats, published on the machine's broker as each release publishes them, to a real
shoal-server; the answers read the way upstream's clients and the WLCG WPAD service read them."""
from __future__ import annotations

import ipaddress
import json
import re
import time

import pika
import pytest

from support.procs import ServerProcess, http_get
from support.upstream import agent_body, config_path, encode, fixture_names, load_fixture

pytestmark = pytest.mark.integration

NAMES = fixture_names()
VICTORIA = "142.104.1.1"


def publish_as_upstream(exchange: str, body: bytes) -> None:
    """What every release does for each heartbeat (README.md here): connect with PLAIN guest/guest
    on vhost /, publish to an exchange it never declares with routing key ``info`` and only
    ``content_type`` set, close."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        connection.channel().basic_publish(exchange=exchange, routing_key="info", body=body,
                                           properties=pika.BasicProperties(content_type="application/json"))
    finally:
        connection.close()


def publish_all(exchange: str, **overrides) -> None:
    for name in NAMES:
        assert load_fixture(name)["amqp"]["routing_key"] == "info"
        publish_as_upstream(exchange, encode(agent_body(name, **overrides)))


# ---- the consumers' reads, written from their code (not copied) -------------------------------------

def regex_client_records(text: str, keys) -> list:
    """How shoal-client 0.7.1 (2014), 1.0.4 and HEAD read a /nearest answer: no JSON parser, one
    regular expression per key (``"key": value`` up to the next comma), values matched by position,
    the number of caches being the number of ``"load": `` matches; quotes stripped, numbers converted,
    text containing "null" is None."""
    count = len(re.findall(r'"load": ([^,}]+)', text))
    records = [{} for _ in range(count)]
    for key in keys:
        for i, raw in enumerate(re.findall('"' + key + r'": ([^,]+)[,|}]', text)):
            if raw.isdigit():
                value = int(raw)
            else:
                try:
                    value = float(raw)
                except ValueError:
                    value = None if "null" in raw else raw.strip('"')
            records[i][key] = value
    return records


CLIENT_2014_KEYS = ["load", "distance", "squid_port", "last_active", "created", "external_ip", "hostname",
                    "public_ip", "private_ip"]
CLIENT_1X_KEYS = CLIENT_2014_KEYS + ["local"]


def wlcg_wpad_groups(feed: dict, org_of) -> dict:
    """The WLCG WPAD service's grouping of Shoal squids (DrDaveD/wlcg-wpad pyweb/wlcg_wpad.py):
    skip a squid without public_ip, group by the ISP organisation of public_ip, name the group
    city.country_code, list private_ip (else public_ip) with port 3128."""
    orgs: dict = {}
    for squid, info in feed.items():
        if "public_ip" not in info:
            continue
        org = org_of(info["public_ip"])          # a None public_ip crashes their ISP lookup
        group = orgs.setdefault(org, {"ips": {}, "names": [], "proxies": [{"default": []}]})
        group["ips"][squid] = info["public_ip"]
        name = ".".join(p for p in (info.get("city", ""), info.get("country_code", "")) if p)
        if name not in group["names"]:
            group["names"].append(name)
        ip = info["private_ip"] if "private_ip" in info else info["public_ip"]
        group["proxies"][0]["default"].append(ip + ":3128")
    return orgs


def shoal_feed(all_json: dict) -> dict:
    """The feed wlcg-wpad reads (shoal-squids.json), made from /all: one entry per host name with
    public_ip, private_ip, city and country_code, keys whose value is null left out."""
    feed = {}
    for record in all_json.values():
        geo = record.get("geo_data") or {}
        entry = {"public_ip": record["public_ip"], "private_ip": record["private_ip"],
                 "city": geo.get("city"), "country_code": geo.get("country_code")}
        feed[record["hostname"]] = {k: v for k, v in entry.items() if v is not None}
    return feed


# ---- tests -----------------------------------------------------------------------------------------

def test_every_upstream_agent_is_listed_in_all_and_nearest(server, exchange):
    publish_all(exchange)
    listed = server.wait_for(lambda d: len(d) == len(NAMES), timeout=15, path="/all")
    by_host = {r["hostname"]: r for r in listed.values()}
    for name in NAMES:
        expect = load_fixture(name)["expect"]
        record = by_host[expect["hostname"]]
        assert record["squid_port"] == expect["squid_port"]
        assert record["public_ip"] == expect["public_ip"]
        assert record["max_load"] == (122000.0 if expect["max_load"] == "default" else expect["max_load"])
        assert record["global_access"] is True and record["local"] is None
    nearest = server.get_json(f"/nearest/20?ip={VICTORIA}")
    assert {r["hostname"] for r in nearest.values()} == set(by_host)
    assert all(set(r["geo_data"]) >= {"metro_code", "postal_code"} for r in nearest.values())
    assert by_host["squid_05.example.org"]["geo_data"]["metro_code"] == 602      # Batavia, IL: Chicago DMA
    assert by_host["squid.heprc.example.ca"]["geo_data"]["postal_code"] == "V8W"

    health = server.health()
    expected = {}
    for name in NAMES:
        for reason in load_fixture(name)["expect"]["repairs"]:
            expected[reason] = expected.get(reason, 0) + 1
    assert health["repaired"] == expected and health["accepted"] == len(NAMES) and not health["dropped"]
    _, _, metrics = http_get(server.url + "/metrics")
    assert b'shoal_heartbeats_repaired_total{reason="max_load_not_positive"} 2.0' in metrics


def test_upstream_clients_read_our_nearest_answer(server, exchange):
    publish_all(exchange)
    server.wait_for(lambda d: len(d) == len(NAMES), timeout=15, path="/all")
    # 0.7.1 asks shoal_server_url as configured; 1.0.4 and HEAD append "/<numcaches + 5>/".
    for path in (f"/nearest?ip={VICTORIA}", f"/nearest/10/?ip={VICTORIA}", f"/nearestcvmfs/8/?ip={VICTORIA}"):
        status, _, body = http_get(server.url + path)
        assert status == 200
        truth = json.loads(body)
        text = body.decode("utf-8")
        old = regex_client_records(text, CLIENT_2014_KEYS)
        assert len(old) == len(truth) > 0
        # 0.7.1 writes 'http://%s:%s;' % (hostname, squid_port) for each cache, in order.
        proxies = ["http://%s:%s" % (r["hostname"], r["squid_port"]) for r in old]
        assert proxies == ["http://%s:%s" % (truth[str(i)]["hostname"], truth[str(i)]["squid_port"])
                           for i in range(len(truth))]
        new = regex_client_records(text, CLIENT_1X_KEYS)
        for i, record in enumerate(new):
            assert set(record) == set(CLIENT_1X_KEYS), record        # no KeyError in getAvailableIp
            assert record["public_ip"] == truth[str(i)]["public_ip"] and record["public_ip"]
            assert record["private_ip"] == truth[str(i)]["private_ip"]
            assert record["local"] is None        # the text "false" would read as true
    # A worker behind the NAT of the 1.0.2 cloud VM: that cache is local, so 1.x tries its private_ip.
    nat = load_fixture("1.0.2-virtio")["body"]["external_ip"]
    text = http_get(server.url + f"/nearest/10/?ip={nat}")[2].decode()
    local = [r for r in regex_client_records(text, CLIENT_1X_KEYS) if r["local"] == "true"]
    assert [(r["hostname"], r["private_ip"]) for r in local] == [("vm-206-12-96-15.cloud.example.ca", "10.0.0.8")]


def test_wlcg_wpad_groups_every_cache_by_public_ip(server, exchange):
    publish_all(exchange)
    listed = server.wait_for(lambda d: len(d) == len(NAMES), timeout=15, path="/all")
    assert all(isinstance(r["public_ip"], str) for r in listed.values())   # never null, NAT agents included
    feed = shoal_feed(listed)
    orgs = wlcg_wpad_groups(feed, org_of=lambda ip: ".".join(ip.split(".")[:2]))   # stand-in ISP lookup
    assert sum(len(g["ips"]) for g in orgs.values()) == len(NAMES)
    cloud = orgs["206.12"]
    assert sorted(cloud["proxies"][0]["default"]) == ["10.0.0.17:3128", "10.0.0.8:3128", "10.0.0.9:3128"]
    assert cloud["names"] == ["Vancouver.CA"]


def test_refused_sender_is_visible_with_its_clock_offset(server, exchange):
    publish_as_upstream(exchange, encode(agent_body("HEAD-virtio", now=time.time() + 600)))
    publish_as_upstream(exchange, encode(agent_body("0.9.5-sample")))
    server.wait_for(lambda h: h["refused"]["senders"] == 1 and h["accepted"] == 1, timeout=15)
    health = server.health()
    assert health["refused"]["by_reason"] == {"future": 1} and health["dropped"] == {"future": 1}
    status, headers, page = http_get(server.url + "/")
    section = page.decode().split('id="refused"', 1)[1]
    assert "squid-head.cloud.example.ca" in section and "future" in section
    assert re.search(r"\+(59[89]|60[0-2]) s \(ahead\)", section), section[:2000]
    assert "e6a1d2c4dcf011f0a0b10242ac120004" in section


def test_heartbeat_window_admits_a_clock_ahead_when_configured(server_factory, exchange):
    server = server_factory(cache={"heartbeat_window": 900})
    publish_as_upstream(exchange, encode(agent_body("HEAD-virtio", now=time.time() + 600)))
    listed = server.wait_for(lambda d: len(d) == 1, timeout=15, path="/all")
    assert listed["0"]["hostname"] == "squid-head.cloud.example.ca"


def _tokens_are_routable(text: str) -> None:
    for token in re.findall(r"[0-9a-fA-F:.]{2,}", text):
        try:
            addr = ipaddress.ip_address(token)
        except ValueError:
            continue
        assert addr.is_global or addr.is_private and not (addr.is_loopback or addr.is_unspecified
                                                          or addr.is_link_local or addr.is_reserved), token


def test_only_routable_things_are_served(server, exchange):
    good = agent_body("0.9.9-sample")
    hostile = [
        dict(good, uuid="h1", hostname="127.0.0.1"), dict(good, uuid="h2", hostname="::"),
        dict(good, uuid="h3", hostname="0.0.0.0"), dict(good, uuid="h4", public_ip="255.255.255.255"),
        dict(good, uuid="h5", public_ip="240.0.0.1"), dict(good, uuid="h6", public_ip="127.0.0.1"),
        dict(good, uuid="h7", public_ip=None, external_ip="10.1.1.1"),
        dict(good, uuid="h8", hostname="squid.h8.example.org", public_ip="::1"),
    ]
    repaired = [dict(good, uuid="r1", hostname="localhost.localdomain", public_ip="131.225.69.21"),
                dict(good, uuid="r2", hostname="squid.r2.example.org", private_ip="127.0.0.1")]
    for body in hostile + repaired + [good]:
        publish_as_upstream(exchange, json.dumps(body).encode())
    server.wait_for(lambda h: h["accepted"] == 3 and sum(h["dropped"].values()) == len(hostile), timeout=15)
    listed = server.get_json("/all")
    assert {r["hostname"] for r in listed.values()} == {"squid01.cern.example.ch", "131.225.69.21",
                                                         "squid.r2.example.org"}
    assert server.health()["dropped"] == {"bad_hostname": 3, "bad_ip": 4, "no_global_address": 1}
    for path in ("/all", f"/nearest/100?ip={VICTORIA}", f"/nearestverified?ip={VICTORIA}", f"/wpad.dat?ip={VICTORIA}"):
        status, _, body = http_get(server.url + path)
        assert status == 200
        _tokens_are_routable(body.decode())
    pac = http_get(server.url + f"/wpad.dat?ip={VICTORIA}")[2].decode()
    hosts = re.findall(r"PROXY ([^;\"]+):\d+", pac)
    # Each route of the PAC (stratum-1, Frontier, other URLs) lists them: the same three, nothing else.
    assert sorted(set(hosts)) == ["131.225.69.21", "squid.r2.example.org", "squid01.cern.example.ch"]


def test_upstream_routes_answer(server, exchange):
    publish_all(exchange)
    server.wait_for(lambda d: len(d) == len(NAMES), timeout=15, path="/all")
    for path in ("/all/5", "/all/", "/all/12/"):
        assert len(server.get_json(path)) == len(NAMES)          # upstream ignored N too
    assert server.get_json(f"/nearest/0?ip={VICTORIA}") == {}
    assert len(server.get_json(f"/nearest/12345?ip={VICTORIA}")) == len(NAMES)
    assert len(server.get_json(f"/nearest/3/?ip={VICTORIA}")) == 3
    for path in ("/nearestcvmfs/2", "/nearestconditions/2/"):
        assert http_get(server.url + path)[0] == 200
    conditions = {r["hostname"] for r in server.get_json("/nearestconditions/20").values()}
    cvmfs = {r["hostname"] for r in server.get_json("/nearestcvmfs/20").values()}
    assert "frontier.kek.example.jp" in conditions and "frontier.kek.example.jp" not in cvmfs
    assert len(conditions) == len(NAMES) and len(cvmfs) == len(NAMES) - 1   # the rest serve both
    status, headers, page = http_get(server.url + "/10")
    assert status == 200 and page.count(b"<tr data-uuid=") == len(NAMES)
    status, headers, page = http_get(server.url + "/10/?page=1")
    assert status == 200
    for path in ("/favicon.ico", "/static/img/icons/favicon.ico"):
        status, headers, icon = http_get(server.url + path)
        assert status == 200 and headers["Content-Type"] == "image/x-icon" and icon[:4] == b"\x00\x00\x01\x00"


@pytest.mark.parametrize("release", ["shoal-server-0.7.3", "shoal-agent-1.0.2", "HEAD"])
def test_upstream_server_config_runs_the_server(tmp_path, exchange, release):
    """An upstream shoal_server.conf, only the exchange, port and log path changed, serves; HEAD's
    (use_credentials = False beside amqp_username = shoal) logs in as guest, as upstream did."""
    text = open(config_path(release, "server")).read()
    proc = ServerProcess(str(tmp_path / "upstream"), {})
    text = text.replace("amqp_exchange = shoal", f"amqp_exchange = {exchange}")
    text = text.replace("amqp_server_url = localhost", "amqp_server_url = 127.0.0.1")
    text = text.replace("[general]\n", f"[general]\nhost = 127.0.0.1\nport = {proc.port}\n", 1)
    text = text.replace("log_file = /var/log/shoal_server.log", f"log_file = {proc.log_path}")
    with open(proc.config_path, "w") as handle:
        handle.write(text)
    try:
        proc.start()
        publish_all(exchange)
        proc.wait_for(lambda d: len(d) == len(NAMES), timeout=15, path="/all")
        assert "Traceback" not in proc.log()
    finally:
        proc.stop()


def test_refused_broker_login_is_logged_at_error(server_factory, tmp_path):
    """With upstream's logging_level = ERROR, a consumer the broker refuses must not sit silent."""
    server = server_factory(rabbitmq={"use_credentials": "true", "amqp_username": "no-such-user",
                                      "amqp_password": "wrong"},
                            extra={"logging": {"logging_level": "error"}}, wait_connected=False)
    deadline = time.monotonic() + 20
    while "refused the login" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = [line for line in server.log().splitlines() if "refused the login" in line]
    assert lines and " ERROR " in lines[0] and "no-such-user" in lines[0]
    assert not server.health()["consumer_connected"]
