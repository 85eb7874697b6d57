"""What each broker identity can and cannot do (issue 14 item 7), on a private node with the shipped setup.

rabbitmq.conf + rabbitmq-definitions.json (the ``shoal-server-queues`` policy) + the users and
per-user limits rabbitmq-shoal-users creates. The server identity may create only server-named
``amq.gen-*`` queues; RabbitMQ has no permission that forces them exclusive, so the policy makes
any such queue that nobody consumes disappear (``expires``) and bounds what it can collect
(``max-length``) — the narrowest setting RabbitMQ offers.
"""
from __future__ import annotations

import json
import time

import pika
import pika.exceptions
import pytest

from shoal_server.amqp import declare_exchange
from support.tlsbroker import DEFINITIONS, TLSBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    tls = TLSBroker(str(tmp_path_factory.mktemp("limits-broker")))
    tls.start()
    yield tls
    tls.stop()


@pytest.fixture(scope="module")
def idents(broker):
    return broker.add_server("shoal-server"), broker.add_agent("squid.limits.example.org")


def queues(broker):
    rows = broker.node.ctl("list_queues", "-q", "name", "durable", "exclusive", "policy").splitlines()
    return {cols[0]: cols[1:] for cols in (row.split("\t") for row in rows if row.strip() and "\t" in row)}


def refused(attempt, code=403):
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        attempt()
    assert info.value.reply_code == code, info.value


def test_server_identity_gets_only_server_named_queues_and_they_cannot_outlive_it(broker, idents):
    server, _ = idents
    conn = pika.BlockingConnection(broker.params(server))
    try:
        ch = conn.channel()
        declare_exchange(ch, broker.exchange)
        mine = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue   # what the consumer does
        ch.queue_bind(mine, broker.exchange, "#")
        ch.basic_consume(mine, lambda *a: None)
        refused(lambda: conn.channel().queue_declare("shoal-collector", durable=True))        # a named queue
        refused(lambda: conn.channel().queue_declare("amq.gen-mine", durable=True))           # reserved prefix
        refused(lambda: conn.channel().exchange_declare("shoal-evil", "fanout"))
        refused(lambda: conn.channel().exchange_delete(broker.exchange))
        # What permissions cannot stop: a durable, non-exclusive server-named queue bound to shoal.
        rogue_ch = conn.channel()
        rogue = rogue_ch.queue_declare("", durable=True, exclusive=False, auto_delete=False).method.queue
        rogue_ch.queue_bind(rogue, broker.exchange, "#")
        listing = queues(broker)
        assert listing[mine][2] == listing[rogue][2] == "shoal-server-queues"   # the shipped policy applies
    finally:
        conn.close()
    with open(DEFINITIONS) as fh:
        policy = json.load(fh)["policies"][0]
    assert policy["definition"]["expires"] == 60000 and policy["definition"]["max-length"] == 100000
    assert mine not in queues(broker)         # exclusive: gone with the connection
    assert rogue in queues(broker)            # still there ... for at most `expires` unused
    # Same policy with a short expiry, so the test need not wait the shipped 60 s.
    broker.node.ctl("set_policy", "--apply-to", "queues", "shoal-server-queues", r"^amq\.gen-",
                    json.dumps({**policy["definition"], "expires": 1500}))
    deadline = time.monotonic() + 20
    while rogue in queues(broker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rogue not in queues(broker), "an unused amq.gen queue outlived the expires policy"
    broker.node.ctl("set_policy", "--apply-to", "queues", "shoal-server-queues", r"^amq\.gen-",
                    json.dumps(policy["definition"]))


def test_agent_identity_has_a_connection_limit(broker, idents):
    _, agent = idents
    opened = []
    try:
        for _ in range(3):                        # SHOAL_AGENT_MAX_CONNECTIONS default
            opened.append(pika.BlockingConnection(broker.params(agent)))
        offset = len(broker.log())
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(broker.params(agent))
        deadline = time.monotonic() + 10
        while "connection limit" not in broker.log()[offset:] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "connection limit (3) is reached" in broker.log()[offset:]
    finally:
        for conn in opened:
            conn.close()
    pika.BlockingConnection(broker.params(agent)).close()      # usable again once below the limit


def test_user_script_lists_the_limits_it_set(broker, idents):
    out = broker.users("list")
    assert '"max-connections":3' in out.replace(" ", "") and '"max-connections":4' in out.replace(" ", "")
