"""A broker that accepts TCP and never answers (a paused VM, a dead balancer backend) on one private node.

pika gives up such a handshake with AMQPConnectorStackTimeout, which is neither AMQPError nor
OSError: before issue 16 it escaped the agent's and the consumer's failover loops, so both
logged a traceback and retried the same hung broker forever instead of the next of amqp_servers.
"""
import socket
import threading
import time

import pytest

from rel_support import fresh, listed, wait_until

CONNECT_TIMEOUT = 2.0


class SilentBroker(threading.Thread):
    """A TCP listener on a free loopback port that accepts connections and never sends a byte."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent():
    broker = SilentBroker()
    yield broker
    broker.close()


@pytest.mark.integration
def test_agent_and_server_walk_past_a_hung_first_broker(rabbit, servers, agents, silent):
    order = f"127.0.0.1:{silent.port}, 127.0.0.1:{rabbit.amqp_port}"
    settings = {"amqp_servers": order, "connect_timeout": CONNECT_TIMEOUT}
    started = time.monotonic()
    server = servers(rabbitmq=settings)   # waits until the consumer is connected (to the second broker)
    server_connected = time.monotonic() - started
    agent = agents("hung1", interval=1.0, rabbitmq=settings)
    wait_until(lambda: fresh(server, [agent.hostname], 0), 3 * CONNECT_TIMEOUT + 10, what="agent listed")
    assert silent.accepted, "the hung broker was never tried"
    for text in (server.log(), agent.output()):
        assert "Traceback" not in text
    assert f"connected to AMQP broker 127.0.0.1:{rabbit.amqp_port}" in agent.output()
    assert server_connected < 2 * CONNECT_TIMEOUT + 15, server_connected
    assert agent.hostname in listed(server)
