"""Legacy agents on a TLS deployment (issue 12 item 2), on a private broker with both kinds at once.

The broker runs the shipped rabbitmq.conf with the shipped rabbitmq-legacy.conf applied as
docs/security.md says, users from rabbitmq-shoal-users (``legacy guest guest`` and ``legacy NAME
PW``). A modern agent (the real shoal-agent, x509/EXTERNAL, its networks granted by shoal-ca)
publishes beside minimal publishers that connect exactly as the upstream releases do:

- 0.9.5 .. 1.0.2 and HEAD without ``use_credentials``: plain AMQP, PLAIN guest/guest, a connection
  per heartbeat, ``basic_publish("shoal", "info", body, content_type=application/json)``, no user_id;
- HEAD with ``use_credentials``: the same with ``amqp_username``/``amqp_password``;
- 0.7.1 with ``use_ssl``: PLAIN guest/guest over TLS, presenting its certificate (pika's default
  credentials; ssl_options with certfile/keyfile), no user_id.

Two servers consume: ``legacy_agents = accept`` and the default (refuse).
"""
from __future__ import annotations

import json
import re
import ssl
import time
import uuid as uuidlib

import pika
import pika.exceptions
import pytest

from support.procs import ServerProcess, http_get
from support.tlsbroker import TLSBroker
from support.upstream import agent_body, fixture_names, load_fixture

pytestmark = pytest.mark.integration

MODERN = "squid.modern.example.org"
OLD_SITE = "81.2.70.0/24"          # where the legacy caches are (no grant: they have no identity)
LEGACY_USER, LEGACY_PASSWORD = "shoal-legacy", "s3cret-legacy"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tls = TLSBroker(str(tmp_path_factory.mktemp("legacy-broker")), legacy=True)
    tls.start()
    try:
        tls.add_legacy("guest", "guest")
        tls.add_legacy(LEGACY_USER, LEGACY_PASSWORD)
        yield tls
    finally:
        tls.stop()


@pytest.fixture(scope="module")
def modern(broker):
    # external_ip, and the interface address the agent reports as public_ip on the test machine
    return broker.add_agent(MODERN, networks=["81.2.69.0/24", "192.0.2.0/24"])


@pytest.fixture(scope="module")
def servers(broker, modern, tmp_path_factory):
    ident = broker.add_server("shoal-server")
    work = tmp_path_factory.mktemp("legacy-servers")
    cache = {"cache_inactive_time": 120, "cache_cleanse_interval": 5}
    security = {"grants": broker.grants_path, "legacy_users": f"guest, {LEGACY_USER}"}
    accept = ServerProcess(str(work / "accept"), broker.rabbitmq_section(ident), cache,
                           extra={"security": {**security, "legacy_agents": "accept"}})
    refuse = ServerProcess(str(work / "refuse"), broker.rabbitmq_section(ident), cache,
                           extra={"security": security})
    started = []
    try:
        for proc in (accept, refuse):
            started.append(proc.start(wait_connected=True, timeout=60))
        yield accept, refuse
    finally:
        for proc in started:
            proc.stop()


# ---- what the upstream releases send, and how ---------------------------------------------------------

def body_095(ip, hostname, uuid=None):
    """shoal-agent 0.9.5 / 0.9.9 with its sample config: max_load read with ConfigParser.get (a string)."""
    return {"uuid": uuid or uuidlib.uuid1().hex, "hostname": hostname, "squid_port": 3128, "verified": False,
            "max_load": "122000", "global_access": True, "domain_access": False, "private_ip": "10.1.0.7",
            "public_ip": ip, "timestamp": time.time(), "load": 1200.5}


def body_071(ip, hostname, uuid=None):
    """shoal-agent 0.7.1: uuid, hostname, squid_port, addresses, timestamp, load."""
    return {"uuid": uuid or uuidlib.uuid1().hex, "hostname": hostname, "squid_port": 3128,
            "private_ip": "10.1.0.8", "public_ip": ip, "timestamp": time.time(), "load": 800.0}


def legacy_publish(params, body):
    """One heartbeat the way every upstream release sends it: connect, publish, close; no user_id."""
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.basic_publish(exchange="shoal", routing_key="info", body=json.dumps(body),
                              properties=pika.BasicProperties(content_type="application/json"))
    finally:
        connection.close()


def params_071(broker, ident):
    """0.7.1 with use_ssl: TLS presenting its certificate, but pika's default PLAIN guest/guest."""
    context = ssl.create_default_context(cafile=broker.ca_cert)
    context.load_cert_chain(ident.cert, ident.key)
    return pika.ConnectionParameters(broker.host, broker.port, ssl_options=pika.SSLOptions(context, "localhost"),
                                     credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1)


def listed(server):
    return {rec["uuid"]: rec for rec in server.get_json("/all").values()}


def wait_listed(server, *uuids, timeout=30):
    server.wait_for(lambda body: set(uuids) <= {r["uuid"] for r in body.values()}, timeout=timeout, path="/all")
    return listed(server)


def run_modern_agent(broker, modern, tmp_path):
    from agent.agenthelp import AgentRunner   # the real shoal-agent command
    agent = AgentRunner(str(tmp_path / "modern"), broker.rabbitmq_section(modern),
                        {"dnsname": MODERN, "external_ip": "81.2.69.20", "interval": 1})
    result = agent.run("--once")
    assert result.returncode == 0, result.stderr + agent.log()
    return agent


# ---- the tests ---------------------------------------------------------------------------------------

def test_modern_and_legacy_agents_at_once(broker, modern, servers, tmp_path):
    accept, refuse = servers
    agent = run_modern_agent(broker, modern, tmp_path)
    old_095 = body_095("81.2.70.11", "squid_05.old-site.example.org")          # guest/guest, plain
    old_head = body_095("81.2.70.12", "squid-head.old-site.example.org")       # use_credentials, plain
    old_071 = body_071("81.2.70.13", "squid-071.old-site.example.org")          # PLAIN over TLS
    legacy_publish(broker.legacy_params("guest", "guest"), old_095)
    legacy_publish(broker.legacy_params(LEGACY_USER, LEGACY_PASSWORD), old_head)
    legacy_publish(params_071(broker, broker.issue("agent", "squid-071.old-site.example.org")), old_071)

    records = wait_listed(accept, agent.uuid, old_095["uuid"], old_head["uuid"], old_071["uuid"])
    assert records[agent.uuid]["authenticated"] is True and records[agent.uuid]["hostname"] == MODERN
    for body in (old_095, old_head, old_071):
        assert records[body["uuid"]]["authenticated"] is False
        assert records[body["uuid"]]["hostname"] == body["hostname"]
    metrics = _text(accept, "/metrics")
    assert re.search(r"^shoal_caches_unauthenticated 3\.0$", metrics, re.M), metrics
    page = _text(accept, "/")
    assert 'id="unauthenticated-count">3<' in page and page.count('data-authenticated="false"') == 3

    # The default server (legacy_agents = refuse) serves the modern agent only, and says why.
    wait_listed(refuse, agent.uuid)
    refuse.wait_for(lambda h: h["dropped"].get("no_user_id", 0) >= 3, timeout=20)
    assert set(listed(refuse)) == {agent.uuid}
    assert "dropped heartbeat (user -): no_user_id" in refuse.log()


def test_legacy_senders_cannot_take_over_an_authenticated_uuid_or_host_name(broker, modern, servers, tmp_path):
    accept, _ = servers
    agent = run_modern_agent(broker, modern, tmp_path)
    wait_listed(accept, agent.uuid)
    before = dict(accept.health()["dropped"])
    guest = broker.legacy_params("guest", "guest")
    legacy_publish(guest, body_071("81.2.70.66", "squid-thief.example.org", uuid=agent.uuid))   # its uuid
    legacy_publish(guest, body_071("81.2.70.66", MODERN))                                     # its name
    control = body_071("81.2.70.67", "squid-control.old-site.example.org")
    legacy_publish(guest, control)            # same login, sent last: handled after the two attempts
    wait_listed(accept, control["uuid"])
    dropped = accept.health()["dropped"]
    assert dropped.get("owner_mismatch", 0) == before.get("owner_mismatch", 0) + 1
    assert dropped.get("hostname_reserved", 0) == before.get("hostname_reserved", 0) + 1
    record = listed(accept)[agent.uuid]
    assert record["hostname"] == MODERN and record["external_ip"] == "81.2.69.20" and record["authenticated"]
    assert [r for r in listed(accept).values() if r["hostname"] == MODERN and not r["authenticated"]] == []


def test_legacy_logins_may_only_publish_heartbeats(broker, modern, servers):
    """The legacy user has agent rights: no consuming, declaring, deleting, other keys; no user_id of others."""
    connection = pika.BlockingConnection(broker.legacy_params(LEGACY_USER, LEGACY_PASSWORD))
    attempts = {
        "consume": lambda ch: ch.queue_declare("", exclusive=True),
        "declare": lambda ch: ch.exchange_declare("shoal-evil", "fanout"),
        "delete": lambda ch: ch.exchange_delete("shoal"),
        "routing key": lambda ch: (ch.confirm_delivery(), ch.basic_publish("shoal", "other", b"{}")),
    }
    try:
        for what, attempt in attempts.items():
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                attempt(connection.channel())
            assert info.value.reply_code == 403, (what, info.value)
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:   # speaking for a certified agent
            channel.basic_publish("shoal", "info", b"{}", pika.BasicProperties(user_id=MODERN))
        assert info.value.reply_code == 406
    finally:
        if connection.is_open:
            connection.close()


def test_password_logins_cannot_reach_certificate_users(broker, modern, servers):
    """PLAIN is on for legacy agents, but certificate users have no password: PLAIN cannot log in as them."""
    for password in ("", "guest", MODERN):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(broker.legacy_params(MODERN, password))
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(broker.legacy_params("shoal-server", password, tls=True))


def test_a_cache_outside_a_changed_grant_leaves_the_live_servers(broker, modern, servers, tmp_path):
    """Re-granting with shoal-ca (the documented step) takes effect on running servers: never served outside it."""
    from support.tlsbroker import run_ca
    agent = run_modern_agent(broker, modern, tmp_path)
    for server in servers:
        wait_listed(server, agent.uuid)
    run_ca("--dir", broker.ca_dir, "grant", MODERN, "--network", OLD_SITE)      # moves it elsewhere
    try:
        for server in servers:
            server.wait_for(lambda body: all(r["hostname"] != MODERN for r in body.values()), timeout=40,
                            path="/all")
            assert "removed" in server.log() and "the new grants do not cover" in server.log()
    finally:
        run_ca("--dir", broker.ca_dir, "grant", MODERN, "--network", "81.2.69.0/24", "--network", "192.0.2.0/24")


def _text(server, path):
    status, _, body = http_get(server.url + path)
    assert status == 200, (path, status)
    return body.decode()


def test_every_upstream_fixture_is_listed_in_legacy_mode(broker, modern, servers):
    """Each release's heartbeat (tests/compat/fixtures, with its sample config's values), sent the
    way that release logs in — 0.7.1 PLAIN over TLS, the later ones PLAIN on the plain listener —
    is listed unauthenticated by the accepting server and refused by the default one."""
    accept, refuse = servers
    sent = {}
    for name in fixture_names():
        fixture = load_fixture(name)
        body = agent_body(name, fresh_uuid=True)
        if fixture["release"] == "0.7.1":
            params = params_071(broker, broker.issue("agent", f"legacy-{name.replace('.', '-')}.example.org"))
        else:
            params = broker.legacy_params("guest", "guest")
        legacy_publish(params, body)
        sent[body["uuid"]] = fixture["expect"]
    records = wait_listed(accept, *sent)
    for uuid, expect in sent.items():
        assert records[uuid]["authenticated"] is False, uuid
        assert records[uuid]["hostname"] == expect["hostname"], (uuid, records[uuid])
        assert records[uuid]["public_ip"] == expect["public_ip"], (uuid, records[uuid])
    assert not set(sent) & set(listed(refuse))
