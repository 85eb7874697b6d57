"""Stale data: expired heartbeats are never listed as fresh, old ones never resurrect a purged cache."""
import json
import signal
import time

import pika

from rel_support import fresh, listed, wait_until
from support.heartbeats import Publisher

INTERVAL = 1.0
EXPIRATION = 2 * INTERVAL   # what the agent stamps on every message


class SideQueue:
    """A queue of our own on the Shoal exchange, read only when we decide: a consumer that went away."""

    def __init__(self, port, exchange):
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=False, auto_delete=False)
        self.queue = self.channel.queue_declare(queue="", exclusive=True).method.queue
        self.channel.queue_bind(queue=self.queue, exchange=exchange, routing_key="#")

    def drain(self):
        """Every message still queued: (properties, decoded body)."""
        out = []
        while True:
            method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return out
            out.append((props, json.loads(body)))

    def close(self):
        if self.connection.is_open:
            self.connection.close()


def test_server_down_longer_than_the_expiration_lists_no_expired_heartbeat_as_fresh(
        tmp_path, rabbit, exchange, servers, agents):
    # Inactive time far longer than the outage: only the expiration (and the queue going away with
    # its server) keeps the dead agent's last heartbeats from being taken as news after the restart.
    general = {"state_dir": str(tmp_path / "state"), "snapshot_interval": 1}
    server = servers(general=general, cache={"cache_inactive_time": 30})
    live = agents("live", interval=INTERVAL, site="cern")
    dead = agents("dead", interval=INTERVAL, site="fnal")
    hosts = [live.hostname, dead.hostname]
    wait_until(lambda: fresh(server, hosts, 0), 20, what="both agents listed")
    time.sleep(1.5)                     # a periodic snapshot holds both
    side = SideQueue(rabbit.amqp_port, exchange)
    try:
        server.stop(signal.SIGKILL)
        time.sleep(1.0)
        dead.stop(signal.SIGKILL)       # its last heartbeats were published while no server listened
        killed_at = time.time()
        time.sleep(EXPIRATION + 3.0)    # down for > the expiration while the live agent keeps publishing
        queued = side.drain()
    finally:
        side.close()
    # The broker dropped every heartbeat older than the expiration from the queue nobody read.
    assert queued, "the side queue got nothing: the agent is not publishing"
    assert {p.expiration for p, _ in queued} == {str(int(EXPIRATION * 1000))}
    assert all(body["timestamp"] > time.time() - EXPIRATION - 1.5 for _, body in queued), \
        [round(time.time() - b["timestamp"], 1) for _, b in queued]
    assert {body["hostname"] for _, body in queued} == {live.hostname}

    server.start(wait_connected=False)
    restarted = time.time()
    wait_until(lambda: fresh(server, [live.hostname], restarted), INTERVAL + 3, what="live agent fresh")
    for _ in range(10):                 # and it stays that way while the broker settles
        records = listed(server)
        if dead.hostname in records:    # from the snapshot, with its true age: not fresh
            assert records[dead.hostname]["last_active"] <= killed_at
        time.sleep(0.3)


def test_a_replayed_old_heartbeat_does_not_resurrect_a_purged_cache(rabbit, exchange, servers, agents):
    inactive = 4.0
    # The only cache: its death is a total silence, which expiry believes after cache_silence_hold.
    server = servers(cache={"cache_inactive_time": inactive, "cache_silence_hold": inactive})
    side = SideQueue(rabbit.amqp_port, exchange)
    try:
        victim = agents("replayed", interval=INTERVAL, site="kek")
        wait_until(lambda: fresh(server, [victim.hostname], 0), 20, what="agent listed")
        wait_until(lambda: "cache expiry resumed" in server.log(), inactive + 10, what="expiry armed")
        victim.stop(signal.SIGKILL)
        captured = [body for _, body in side.drain() if body["hostname"] == victim.hostname]
    finally:
        side.close()
    assert captured, "no heartbeat of the agent was captured"
    wait_until(lambda: victim.hostname not in listed(server), inactive + 5, what="purged")
    # Someone (a stuck queue, a shovel, an attacker with old traffic) delivers its real last heartbeat now.
    replay = Publisher(exchange, port=rabbit.amqp_port)
    try:
        replay.send(captured[-1])
    finally:
        replay.close()
    wait_until(lambda: server.health()["dropped"].get("stale", 0) >= 1, 5, what="replay dropped as stale")
    assert victim.hostname not in listed(server)
