"""The agent as a daemon on a private RabbitMQ node: one connection, prompt SIGTERM, broker restarts survived."""
import signal
import time

import pika
import pytest

from agenthelp import AgentRunner, entries, wait_until
from support.rabbitnode import RabbitNode

INTERVAL = 1.0
MARGIN = 5.0     # a loaded 2-core machine


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A private broker this module may stop and restart (the shared 5672 broker is never touched)."""
    rabbit = RabbitNode(str(tmp_path_factory.mktemp("agent-rabbit")))
    rabbit.start()
    yield rabbit
    rabbit.stop()


@pytest.fixture
def node_agent(node, tmp_path, exchange):
    made = []

    def make(name="agent", general=None):
        rabbit = {"amqp_server_url": "127.0.0.1", "amqp_port": node.amqp_port, "amqp_exchange": exchange}
        runner = AgentRunner(str(tmp_path / name), rabbit, {"interval": INTERVAL, **(general or {})})
        made.append(runner)
        return runner.start()

    yield make
    for runner in made:
        runner.stop()


def agent_connections(node, uuid):
    """The broker's connections whose client properties carry this agent's name."""
    out = node.ctl("list_connections", "-q", "name", "client_properties")
    return sorted(line.split("\t")[0] for line in out.splitlines() if f"shoal-agent {uuid}" in line)


def test_daemon_keeps_its_entry_fresh_over_one_connection_and_stops_on_sigterm(node, node_agent, server_factory):
    server = server_factory(rabbitmq={"amqp_port": node.amqp_port}, cache={"cache_inactive_time": 3,
                                                                         "cache_cleanse_interval": 0.25})
    agent = node_agent()
    wait_until(lambda: entries(server), 20, what="agent listed")
    uuid = agent.uuid
    first = agent_connections(node, uuid)
    assert len(first) == 1, first

    seen = set()
    deadline = time.monotonic() + 8 * INTERVAL + MARGIN
    while len(seen) < 8 and time.monotonic() < deadline:
        record = entries(server).get(uuid)
        if record:
            seen.add(record["last_active"])
        time.sleep(0.1)
    assert len(seen) >= 8, f"only {len(seen)} heartbeats reached the server"

    last = agent_connections(node, uuid)
    assert last == first, f"connection changed or multiplied: {first} -> {last}"
    assert agent.log().count("connected to AMQP broker") == 1

    elapsed = agent.stop(signal.SIGTERM)
    assert elapsed is not None and elapsed < 2.0, f"SIGTERM took {elapsed:.2f} s"
    assert "stopped by signal 15" in agent.log()
    assert "Traceback" not in agent.log()
    wait_until(lambda: not agent_connections(node, uuid), 10, what="connection closed")


def test_sigint_also_stops_the_daemon_promptly(node_agent):
    agent = node_agent()
    wait_until(lambda: "connected to AMQP broker" in agent.log(), 20, what="agent connected")
    elapsed = agent.stop(signal.SIGINT)
    assert elapsed is not None and elapsed < 2.0


def consume_one(node, exchange, uuid, timeout):
    """Bind a fresh queue and return the seconds until a heartbeat from ``uuid`` arrives."""
    start = time.monotonic()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.amqp_port))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=False, auto_delete=False)
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")
        for method, props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if method is not None and uuid.encode() in body:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"no heartbeat from {uuid} within {timeout} s of the broker restart")
    finally:
        connection.close()


def test_broker_restart_reconnects_within_the_backoff_bound_without_tracebacks(node, node_agent, exchange):
    agent = node_agent(name="restart")
    wait_until(lambda: "connected to AMQP broker" in agent.log(), 20, what="agent connected")
    uuid = agent.uuid
    consume_one(node, exchange, uuid, timeout=10)

    down_at = time.monotonic()
    node.restart()            # same name and ports; every connection is dropped
    outage = time.monotonic() - down_at
    # Retries are capped at min(60 s, interval) = 1 s, so heartbeats resume about one interval
    # after the broker is back, however long it was down.
    resumed = consume_one(node, exchange, uuid, timeout=2 * INTERVAL + MARGIN)
    print(f"broker down {outage:.1f} s; heartbeats resumed {resumed:.1f} s after it was back")

    assert agent.alive, agent.log()[-2000:]
    log = agent.log()
    assert "Traceback" not in log
    assert "heartbeats resumed via 127.0.0.1" in log
    # Quiet while down: a handful of lines for the whole outage, not one per attempt.
    lines = log.splitlines()
    lost = next(i for i, line in enumerate(lines) if "lost the AMQP connection" in line)
    back = next(i for i, line in enumerate(lines) if "heartbeats resumed" in line)
    outage_lines = [line for line in lines[lost:back + 1] if "WARNING" in line or "ERROR" in line]
    assert len(outage_lines) <= 4, outage_lines
