"""The real agent over TLS with its certificate (EXTERNAL), on a private broker set up like production.

The shipped broker permissions let an agent write to the ``shoal`` exchange and nothing else, and
RabbitMQ requires ``user_id`` to be the certificate CN. A listed heartbeat proves TLS with EXTERNAL
login, that the agent needs no more permissions than that, and ``user_id`` (a TLS server refuses
heartbeats without one).
"""
import signal

import pytest

from agenthelp import AgentRunner, entries, wait_until
from support.procs import ServerProcess
from support.tlsbroker import TLSBroker

CN = "squid-tls.agent-test.example.org"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tls = TLSBroker(str(tmp_path_factory.mktemp("agent-tlsbroker")))
    tls.start()
    yield tls
    tls.stop()


@pytest.fixture(scope="module")
def ident(broker):
    # shoal-ca records the grant the server reads: the agent's external_ip, and the interface
    # address it reports as public_ip on this test machine (192.0.2.2).
    return broker.add_agent(CN, networks=["81.2.69.0/24", "192.0.2.0/24"])


@pytest.fixture(scope="module")
def server(broker, ident, tmp_path_factory):
    ident = broker.add_server("shoal-server")
    proc = ServerProcess(str(tmp_path_factory.mktemp("agent-tls-server")), broker.rabbitmq_section(ident),
                         {"cache_inactive_time": 60}, extra={"security": {"grants": broker.grants_path}})
    proc.start(wait_connected=True, timeout=60)
    yield proc
    proc.stop()


def test_agent_over_tls_with_its_certificate_is_listed(broker, ident, server, tmp_path):
    agent = AgentRunner(str(tmp_path / "agent"), broker.rabbitmq_section(ident),
                        {"dnsname": CN, "interval": 1, "external_ip": "81.2.69.20"})
    result = agent.run("--once")
    assert result.returncode == 0, result.stderr + agent.log()
    assert f"as {CN}" in agent.log()          # logged in as the certificate's CN (EXTERNAL)
    record = wait_until(lambda: entries(server).get(agent.uuid), 15, what="TLS agent listed")
    assert record["hostname"] == CN

    # The daemon keeps working over the same TLS connection and stops promptly.
    agent.start()
    first = record["last_active"]
    wait_until(lambda: entries(server)[agent.uuid]["last_active"] > first + 1, 15, what="daemon heartbeats")
    elapsed = agent.stop(signal.SIGTERM)
    assert elapsed is not None and elapsed < 2.0
    assert "Traceback" not in agent.log()


def test_agent_without_a_usable_certificate_fails_at_start_naming_the_key(broker, tmp_path):
    section = broker.rabbitmq_section(None)    # use_ssl without amqp_client_cert/key
    agent = AgentRunner(str(tmp_path / "nocert"), section)
    result = agent.run("--once")
    assert result.returncode == 2
    assert "[rabbitmq] amqp_client_cert: must be set when use_ssl = true" in result.stderr
