"""``shoal-agent --dry-run`` and ``--once`` against the machine's real broker and a real shoal-server."""
import json
import os
import time

import pika

from agenthelp import dry_run_heartbeat, entries, wait_until
from support.rabbitnode import free_port


def test_dry_run_prints_the_heartbeat_and_saves_nothing(agent_factory):
    agent = agent_factory(general={"cache_port": 3129, "max_load": 50000, "upstream": "cvmfs"})
    result = agent.run("--dry-run")
    data = dry_run_heartbeat(result)
    assert data["hostname"] == "squid.agent-test.example.org"
    assert data["external_ip"] == "142.90.100.20"
    assert data["squid_port"] == 3129 and data["max_load"] == 50000 and data["upstream"] == "cvmfs"
    assert isinstance(data["load"], float) and data["load"] >= 0
    assert abs(data["timestamp"] - time.time()) < 30
    assert not os.path.exists(agent.state_dir), "a dry run must not create state"
    assert "dry run saves nothing" in result.stderr


def test_once_is_listed_by_the_server_and_a_second_run_updates_the_same_entry(server_factory, agent_factory):
    server = server_factory(cache={"cache_inactive_time": 120, "cache_cleanse_interval": 1})
    agent = agent_factory(general={"squid_port": 3129, "interval": 30})
    first = agent.run("--once")
    assert first.returncode == 0, first.stderr + agent.log()
    uuid = agent.uuid
    record = wait_until(lambda: entries(server).get(uuid), 15, what="agent listed")
    assert record["hostname"] == "squid.agent-test.example.org"
    assert record["squid_port"] == 3129
    assert record["external_ip"] == "142.90.100.20"
    assert isinstance(record["load"], (int, float)) and not isinstance(record["load"], bool) and record["load"] >= 0

    second = agent.run("--once")
    assert second.returncode == 0, second.stderr
    assert agent.uuid == uuid
    updated = wait_until(lambda: (entries(server).get(uuid) or {}).get("last_active", 0) > record["last_active"]
                         and entries(server)[uuid], 15, what="entry refreshed")
    assert updated["created"] == record["created"]
    assert len(entries(server)) == 1, "the second run created a duplicate entry"


def test_once_without_a_broker_exits_1_with_the_reason(agent_factory):
    port = free_port()
    agent = agent_factory(rabbitmq={"amqp_port": port, "connect_timeout": 3})
    start = time.monotonic()
    result = agent.run("--once")
    assert result.returncode == 1
    assert f"heartbeat not sent: no broker took the heartbeat: 127.0.0.1:{port}" in result.stderr
    assert "Connection refused" in result.stderr or "ConnectionRefused" in result.stderr
    assert "Traceback" not in result.stderr + agent.log()
    assert time.monotonic() - start < 30


def test_fails_over_to_the_next_broker_in_amqp_servers(server_factory, agent_factory):
    server = server_factory(cache={"cache_inactive_time": 60})
    dead = free_port()
    agent = agent_factory(rabbitmq={"amqp_servers": f"127.0.0.1:{dead}, 127.0.0.1:5672"})
    result = agent.run("--once")
    assert result.returncode == 0, result.stderr + agent.log()
    assert "connected to AMQP broker 127.0.0.1:5672" in agent.log()
    wait_until(lambda: agent.uuid in entries(server), 15, what="listed through the second broker")


def test_message_properties_user_id_expiration_and_content_type(agent_factory, exchange):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=False, auto_delete=False)
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")
        agent = agent_factory(general={"interval": 7.5})
        result = agent.run("--once")
        assert result.returncode == 0, result.stderr + agent.log()
        method, props, body = None, None, None
        deadline = time.monotonic() + 10
        while method is None and time.monotonic() < deadline:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.1)
        assert method is not None, "no heartbeat arrived"
        assert method.routing_key == "info"
        assert props.content_type == "application/json"
        assert props.user_id == "guest"          # the authenticated user; the broker checks it
        assert props.expiration == "15000"       # twice the 7.5 s interval, in ms
        assert json.loads(body)["uuid"] == agent.uuid
    finally:
        connection.close()
