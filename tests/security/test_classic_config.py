"""The classic Erlang-terms broker configuration printed in docs/security.md, run on a private node."""
from __future__ import annotations

import json
import os
import re
import socket
import time

import pika
import pika.exceptions
import pytest

from shoal_server.amqp import declare_exchange
from support.heartbeats import upstream_heartbeat
from support.tlsbroker import TLSBroker

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "security.md")


def documented_terms() -> str:
    with open(DOC) as fh:
        text = fh.read()
    block = re.search(r"<!-- classic-config-begin -->\s*```erlang\n(.*?)```\s*<!-- classic-config-end -->", text, re.S)
    assert block, "docs/security.md lost its classic-config block"
    return block.group(1)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tls = TLSBroker(str(tmp_path_factory.mktemp("classic")), classic=documented_terms())
    tls.start()
    yield tls
    tls.stop()


def test_documented_classic_config_admits_certified_agents_only(broker):
    server, agent = broker.add_server("shoal-server"), broker.add_agent("squid.classic.example.org")
    consumer = pika.BlockingConnection(broker.params(server))
    channel = consumer.channel()
    declare_exchange(channel, broker.exchange)      # loaded from the definitions file at boot
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, broker.exchange, "#")

    publisher = pika.BlockingConnection(broker.params(agent))
    pub = publisher.channel()
    pub.confirm_delivery()
    hb = upstream_heartbeat("142.90.100.40", hostname=agent.cn)
    pub.basic_publish(broker.exchange, "info", json.dumps(hb), pika.BasicProperties(user_id=agent.cn))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        pub.basic_publish(broker.exchange, "info", b"{}", pika.BasicProperties(user_id="shoal-server"))
    assert info.value.reply_code == 406
    publisher.close()

    deadline = time.monotonic() + 10
    got = None
    while got is None and time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        got = (props, body) if method else None
        consumer.sleep(0.1) if got is None else None
    consumer.close()
    assert got is not None and got[0].user_id == agent.cn and json.loads(got[1])["uuid"] == hb["uuid"]

    with pytest.raises((pika.exceptions.AMQPConnectionError, OSError)):
        pika.BlockingConnection(broker.params(None))            # no client certificate
    with pytest.raises((pika.exceptions.AMQPConnectionError, OSError)):
        pika.BlockingConnection(broker.params(broker.foreign_identity("agent", agent.cn)))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((broker.host, broker.plain_port), timeout=5).close()
    deadline = time.monotonic() + 15          # the broker writes its log asynchronously
    while "Fatal - Certificate required" not in broker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Fatal - Certificate required" in broker.log() and "Fatal - Unknown CA" in broker.log()
