"""x509 end to end: one private TLS-only broker (the shipped rabbitmq.conf) and real shoal-server processes.

Every refusal is checked three ways: the client fails, the broker or server log says why, and a
heartbeat sent afterwards by a valid agent is listed while the refused one is not.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid as uuidlib

import pika
import pika.exceptions
import pytest

from shoal_server.amqp import connection_params, declare_exchange, make_ssl_context
from support.heartbeats import upstream_heartbeat
from support.procs import ServerProcess, write_ini
from support.rabbitnode import RABBIT_BIN
from support.tlsbroker import TLSBroker, valid_from_past



@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tls = TLSBroker(str(tmp_path_factory.mktemp("tlsbroker")))
    tls.start()
    yield tls
    tls.stop()


@pytest.fixture(scope="module")
def agents(broker):
    """Three agents with valid certificates and broker users; the key is the CN."""
    return broker.add_agents("squid-a.example.org", "squid-b.example.org", "squid-c.example.org")


@pytest.fixture(scope="module")
def allow_list(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "allow.txt"
    # With use_ssl every identity needs its networks granted (secure by default); c also gets an alias.
    path.write_text("squid-a.example.org  81.2.64.0/20\nsquid-b.example.org  81.2.64.0/20\n"
                    "squid-c.example.org  alias-c.example.org 81.2.64.0/20\n"
                    "squid-real.example.org  81.2.64.0/20 192.0.2.0/24\n")   # + the test machine's interface address
    return path


@pytest.fixture(scope="module")
def servers(broker, agents, allow_list, tmp_path_factory):
    """Two shoal-servers on the broker, each with its own certificate: without identity policy, and with it."""
    ident = broker.add_server("shoal-server")
    work = tmp_path_factory.mktemp("servers")
    cache = {"cache_inactive_time": 120, "cache_cleanse_interval": 5}
    # Each test sends fresh uuids from the same few identities: lift the per-identity uuid limit
    # (tested in test_identity_grants.py) so it does not decide these tests.
    plain = ServerProcess(str(work / "plain"), broker.rabbitmq_section(ident), cache,
                          extra={"security": {"require_hostname_match": "false", "require_network_grant": "false",
                                              "max_uuids_per_identity": 1000}})
    strict = ServerProcess(str(work / "policy"), broker.rabbitmq_section(ident), cache,   # the use_ssl defaults
                           extra={"security": {"grants": str(allow_list), "max_uuids_per_identity": 1000}})
    started = []
    try:
        for proc in (plain, strict):
            started.append(proc.start(wait_connected=True, timeout=60))
        yield plain, strict
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def server(servers):
    return servers[0]


class CertAgent:
    """A publisher built like shoal-agent's: shared connection_params, declare_exchange, confirms."""

    def __init__(self, broker, ident):
        self.ident = ident
        self.exchange = broker.exchange
        self.connection = pika.BlockingConnection(broker.params(ident))
        self.channel = self.connection.channel()
        declare_exchange(self.channel, self.exchange)
        self.channel.confirm_delivery()

    def send(self, body, user_id=None, routing_key="info"):
        props = pika.BasicProperties(content_type="application/json",
                                     user_id=self.ident.cn if user_id is None else (user_id or None))
        self.channel.basic_publish(self.exchange, routing_key, json.dumps(body), props)

    def close(self):
        if self.connection.is_open:
            self.connection.close()


def heartbeat(hostname, uuid=None, ip="81.2.69.20"):
    return upstream_heartbeat(ip, hostname=hostname, uuid=uuid or uuidlib.uuid4().hex)


def listed(server):
    return {rec["uuid"]: rec for rec in server.get_json("/all").values()}


def wait_listed(server, uuid, timeout=20):
    server.wait_for(lambda body: any(r["uuid"] == uuid for r in body.values()), timeout=timeout, path="/all")
    return listed(server)


def control(broker, ident, *servers_):
    """Publish a valid heartbeat and wait until every server lists it: everything sent before has been handled."""
    agent = CertAgent(broker, ident)
    try:
        hb = heartbeat(ident.cn)
        agent.send(hb)
    finally:
        agent.close()
    for srv in servers_:
        wait_listed(srv, hb["uuid"])
    return hb


def hostnames(server):
    return {r["hostname"] for r in listed(server).values()}


def wait_log(read, needle, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read()
        if needle in text:
            return [line for line in text.splitlines() if needle in line]
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not logged within {timeout} s; log ends with:\n{read()[-2000:]}")


# ---- accepted -------------------------------------------------------------------------------------

def test_agent_with_valid_certificate_is_listed_by_server_with_its_own_certificate(broker, agents, server):
    ident = agents["squid-a.example.org"]
    agent = CertAgent(broker, ident)
    hb = heartbeat(ident.cn)
    agent.send(hb)
    agent.close()
    record = wait_listed(server, hb["uuid"])[hb["uuid"]]
    assert record["hostname"] == "squid-a.example.org"
    wait_log(broker.log, "user 'shoal-server' authenticated and granted access")
    wait_log(broker.log, "user 'squid-a.example.org' authenticated and granted access")
    assert "consuming heartbeats from 127.0.0.1:%d" % broker.port in server.log()


# ---- refused at the door --------------------------------------------------------------------------

def _refused(broker, ident):
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, OSError)) as info:
        CertAgent(broker, ident).close()
    return info.value


def test_client_without_certificate_is_refused(broker, agents, server):
    offset = len(broker.log())
    _refused(broker, None)
    lines = wait_log(lambda: broker.log()[offset:], "Certificate required")
    assert "TLS server" in lines[0]
    control(broker, agents["squid-a.example.org"], server)


def test_certificate_from_another_ca_is_refused(broker, agents, server):
    # Same CN as a real agent and the broker user exists: only the signature is wrong.
    rogue = broker.foreign_identity("agent", "squid-b.example.org")
    offset = len(broker.log())
    _refused(broker, rogue)
    wait_log(lambda: broker.log()[offset:], "Unknown CA")
    before = hostnames(server)
    control(broker, agents["squid-a.example.org"], server)
    assert hostnames(server) - before == {"squid-a.example.org"} - before


def test_expired_certificate_is_refused(broker, agents, server):
    expired = broker.issue("agent", "expired.example.org", valid_from=valid_from_past(400), days=30)
    broker.users("add-agent", expired.cn)    # a broker user exists: only the date is wrong
    offset = len(broker.log())
    _refused(broker, expired)
    wait_log(lambda: broker.log()[offset:], "Certificate Expired")
    control(broker, agents["squid-a.example.org"], server)
    assert "expired.example.org" not in hostnames(server)


def test_plain_amqp_port_is_closed(broker):
    listeners = subprocess.run([os.path.join(RABBIT_BIN, "rabbitmq-diagnostics"), "-n", broker.node.name, "-q",
                                "listeners"], env=broker.node.env, capture_output=True, text=True, timeout=60)
    assert listeners.returncode == 0, listeners.stderr
    protocols = set(re.findall(r"protocol: ([^,\s]+)", listeners.stdout))
    assert protocols == {"amqp/ssl", "clustering"}, listeners.stdout   # no "amqp" (plain) listener at all
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((broker.host, broker.plain_port), timeout=5).close()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.ConnectionParameters(broker.host, broker.plain_port, connection_attempts=1))
    # And plain AMQP spoken to the TLS port gets no further than the handshake.
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        sock.settimeout(5)
        assert not sock.recv(100).startswith(b"\x01\x00\x00")   # no connection.start frame


def test_removed_user_is_cut_off_and_refused_even_with_a_valid_certificate(broker, server):
    ident = broker.add_agent("retired.example.org")
    connected = CertAgent(broker, ident)
    connected.send(heartbeat(ident.cn))
    broker.users("remove", ident.cn)
    with pytest.raises((pika.exceptions.ConnectionClosedByBroker, pika.exceptions.StreamLostError,
                        pika.exceptions.ChannelWrongStateError, pika.exceptions.ConnectionWrongStateError)):
        for _ in range(150):
            connected.connection.process_data_events(0.1)
            connected.send(heartbeat(ident.cn))
    offset = len(broker.log())
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        CertAgent(broker, ident)
    wait_log(lambda: broker.log()[offset:], "user 'retired.example.org'")


# ---- refused after login ----------------------------------------------------------------------------

def test_publishing_with_another_agents_user_id_closes_the_channel(broker, agents, server):
    ident = agents["squid-a.example.org"]
    agent = CertAgent(broker, ident)
    offset = len(broker.log())
    spoofed = heartbeat("squid-b.example.org")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        agent.send(spoofed, user_id="squid-b.example.org")
    agent.close()
    assert info.value.reply_code == 406 and "PRECONDITION_FAILED" in info.value.reply_text
    wait_log(lambda: broker.log()[offset:],
             "user_id property set to 'squid-b.example.org' but authenticated user was 'squid-a.example.org'")
    control(broker, agents["squid-b.example.org"], server)
    assert spoofed["uuid"] not in listed(server)


def test_heartbeat_without_user_id_is_dropped_when_tls_is_on(broker, agents, server):
    agent = CertAgent(broker, agents["squid-a.example.org"])
    anonymous = heartbeat("squid-a.example.org")
    agent.send(anonymous, user_id="")
    agent.close()
    control(broker, agents["squid-a.example.org"], server)
    assert anonymous["uuid"] not in listed(server)
    wait_log(server.log, "no_user_id")


def test_valid_agent_cannot_take_over_another_agents_uuid(broker, agents, server):
    owner, thief = agents["squid-a.example.org"], agents["squid-b.example.org"]
    agent = CertAgent(broker, owner)
    hb = heartbeat(owner.cn)
    agent.send(hb)
    agent.close()
    wait_listed(server, hb["uuid"])
    agent = CertAgent(broker, thief)
    agent.send(heartbeat(thief.cn, uuid=hb["uuid"], ip="81.2.70.66"))
    agent.send(heartbeat(thief.cn))            # same channel: handled after the hijack attempt
    agent.close()
    server.wait_for(lambda h: h["dropped"].get("owner_mismatch"), timeout=20)
    record = listed(server)[hb["uuid"]]
    assert record["hostname"] == owner.cn and record["public_ip"] == "81.2.69.20"
    lines = wait_log(server.log, "owner_mismatch")
    assert "user squid-b.example.org" in lines[0] and "belongs to 'squid-a.example.org'" in lines[0]


def test_policy_refuses_a_hostname_that_is_not_the_cn(broker, agents, servers):
    plain, strict = servers
    ident = agents["squid-c.example.org"]
    agent = CertAgent(broker, ident)
    foreign = heartbeat("squid-a.example.org")          # another site's name
    alias = heartbeat("alias-c.example.org")             # granted by the allow-list
    own = heartbeat("squid-c.example.org")
    for hb in (foreign, alias, own):
        agent.send(hb)
    agent.close()
    wait_listed(strict, own["uuid"])
    wait_listed(plain, own["uuid"])
    on_strict = listed(strict)
    assert foreign["uuid"] not in on_strict
    assert on_strict[alias["uuid"]]["hostname"] == "alias-c.example.org"
    assert foreign["uuid"] in listed(plain)               # without the policy the name is taken on trust
    lines = wait_log(strict.log, "hostname_mismatch")
    assert "user squid-c.example.org may not advertise squid-a.example.org" in lines[0]


def test_agent_may_only_publish_heartbeats(broker, agents):
    """Agent permissions: no reading, no declaring, no deleting the exchange, routing key ``info`` only."""
    agent = CertAgent(broker, agents["squid-a.example.org"])
    attempts = {
        "consume": lambda ch: ch.queue_bind(ch.queue_declare("", exclusive=True).method.queue, "shoal", "#"),
        "declare": lambda ch: ch.exchange_declare("shoal-evil", "fanout"),
        "delete": lambda ch: ch.exchange_delete("shoal"),
        "routing key": lambda ch: (ch.confirm_delivery(),
                                   ch.basic_publish("shoal", "other", b"{}",
                                                    pika.BasicProperties(user_id="squid-a.example.org"))),
        "other exchange": lambda ch: (ch.confirm_delivery(), ch.basic_publish("amq.topic", "info", b"{}")),
    }
    for what, attempt in attempts.items():
        channel = agent.connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            attempt(channel)
        assert info.value.reply_code == 403, (what, info.value)
    agent.close()


def test_server_identity_cannot_publish(broker, servers):
    ident = broker.issue("server", "shoal-server")      # the server's certificate (re-issued, same CN)
    agent = CertAgent(broker, ident)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        agent.send(heartbeat("evil.example.org"))
    assert info.value.reply_code == 403
    agent.close()


# ---- the real shoal-agent command -------------------------------------------------------------------

def run_agent(broker, workdir, ident, dnsname, rabbitmq_overrides=None):
    """``shoal-agent --once`` with a generated config; return (exit code, its log + stderr, uuid)."""
    os.makedirs(workdir, exist_ok=True)
    conf = os.path.join(workdir, "shoal_agent.conf")
    log = os.path.join(workdir, "agent.log")
    write_ini(conf, {
        "general": {"external_ip": "81.2.69.30", "dnsname": dnsname, "squid_port": 3128,
                    "state_dir": os.path.join(workdir, "state"), "interval": 30},
        "rabbitmq": broker.rabbitmq_section(ident, **(rabbitmq_overrides or {})),
        "logging": {"log_file": log, "logging_level": "info"},
    })
    out = subprocess.run([sys.executable, "-m", "shoal_agent", "--config", conf, "--once"], capture_output=True,
                         text=True, timeout=90, stdin=subprocess.DEVNULL)
    try:
        with open(log) as fh:
            text = fh.read()
    except OSError:
        text = ""
    uuid_path = os.path.join(workdir, "state", "uuid")
    uuid = open(uuid_path).read().strip() if os.path.exists(uuid_path) else None
    return out.returncode, text + out.stderr, uuid


def test_real_shoal_agent_with_its_certificate_is_listed(broker, servers, tmp_path):
    plain, strict = servers
    ident = broker.add_agent("squid-real.example.org")
    code, log, uuid = run_agent(broker, str(tmp_path / "agent"), ident, ident.cn)
    assert code == 0, log
    for srv in (plain, strict):                       # the policy server accepts it too: hostname == CN
        record = wait_listed(srv, uuid)[uuid]
        assert record["hostname"] == "squid-real.example.org"
    wait_log(broker.log, "user 'squid-real.example.org' authenticated and granted access")


def test_real_shoal_agent_with_a_foreign_certificate_fails_and_says_why(broker, servers, tmp_path):
    plain, _ = servers
    rogue = broker.foreign_identity("agent", "squid-rogue.example.org")
    offset = len(broker.log())
    code, log, uuid = run_agent(broker, str(tmp_path / "agent"), rogue, rogue.cn)
    assert code == 1, log
    # Under TLS 1.3 the client may see the broker's alert (TLSV1_ALERT_UNKNOWN_CA) or only the
    # closed connection (SSLEOFError), depending on timing; the broker always names the reason.
    assert "heartbeat not sent" in log and "SSL" in log, log
    wait_log(lambda: broker.log()[offset:], "Fatal - Unknown CA")
    control(broker, broker_agent(broker), plain)
    assert uuid not in listed(plain)


def broker_agent(broker):
    return broker.issue("agent", "squid-a.example.org")


def test_clients_verify_the_broker(broker, agents):
    """A broker certificate from another CA, or for another name, is refused by the client side."""
    ident = agents["squid-a.example.org"]
    other_ca = os.path.join(broker.base_dir, "other-ca", "ca.crt")
    if not os.path.exists(other_ca):
        broker.foreign_identity("agent", "unused.example.org")
    untrusting = dataclasses.replace(broker.settings(ident), amqp_ca_cert=other_ca)
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)) as info:
        pika.BlockingConnection(connection_params(untrusting, broker.host, broker.port))
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    params = broker.params(ident)
    context = make_ssl_context(broker.ca_cert, ident.cert, ident.key)
    params.ssl_options = pika.SSLOptions(context, server_hostname="rabbit.other.example.org")
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)) as info:
        pika.BlockingConnection(params)
    assert "Hostname mismatch" in str(info.value) or "doesn't match" in str(info.value)
