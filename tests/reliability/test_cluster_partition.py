"""Issue 16 on a real 3-node RabbitMQ cluster: partitions that do not heal by themselves, and a rolling restart.

With ``cluster_partition_handling = ignore`` (RabbitMQ's default) or ``pause_minority``, node 1
hung (SIGSTOP) for longer than net_ticktime and resumed leaves the partition rel1 | rel2+rel3:
rel1 forgets the servers' queues on rel2/rel3, so a heartbeat published there is confirmed and
routed nowhere. Both servers consume on the majority; four of six agents prefer node 1. Every
agent must reach both servers throughout (an unrouted heartbeat is a failure: next broker), nothing
is purged, /healthz says "ok", and the balancer lists every cache. Then node 1 is restarted by hand
(the documented recovery), and the three nodes are restarted one by one under the same load.
"""
import time

import pytest

from rel_support import CLUSTER_FAILBACK as FAILBACK, CLUSTER_INACTIVE as INACTIVE, CLUSTER_INTERVAL as INTERVAL
from rel_support import (VICTORIA, FrontPoller, Watcher, consuming_from, fresh, listed, max_gap, no_traceback,
                         wait_until)
from support.balancer import Balancer
from support.rabbitcluster import RabbitCluster

pytestmark = pytest.mark.integration

HANG = 12.0          # > net_ticktime 4 s: node 1 is declared down; a partition follows its resumption
WATCH = 2 * FAILBACK + INACTIVE   # agents fail back into the cut-off node at least twice meanwhile


@pytest.fixture(scope="module")
def cluster(request, tmp_path_factory):
    """One cluster per partition handling (``indirect`` parametrization), shared by the tests asking for it."""
    nodes = RabbitCluster(str(tmp_path_factory.mktemp(request.param)), partition_handling=request.param).start()
    yield nodes
    nodes.stop()


def start_fleet(deployment, agents):
    """Servers A (node 2 first) and B (node 3 first), ``agents`` = [(name, node order)], all fresh and armed."""
    make_server, make_agent = deployment
    servers = [make_server("serverA", 1, 2, 0), make_server("serverB", 2, 1, 0)]
    crew = [make_agent(name, *order) for name, order in agents]
    hosts = [agent.hostname for agent in crew]
    for server in servers:
        wait_until(lambda: fresh(server, hosts, time.time() - 2 * INTERVAL), 30, what="every agent on both servers")
        wait_until(lambda: "cache expiry resumed" in server.log(), INACTIVE + 15, what="expiry armed")
    return servers, crew, hosts


def restart(cluster, node):
    """Stop ``node`` cleanly and start it again (``systemctl restart``: the documented recovery of a
    partition's minority, and one step of a rolling restart); wait until every node sees all three."""
    node.stop()
    node.start(timeout=150)
    for via in cluster.nodes:
        cluster.wait_running(3, timeout=90, via=via)


@pytest.mark.parametrize("cluster", ["ignore", "pause_minority"], indirect=True)
def test_a_lasting_partition_loses_no_minority_agent(tmp_path, cluster, deployment):
    crew_spec = [(f"minor{i}", (0, 1, 2)) for i in range(4)] + [("two", (1, 2, 0)), ("three", (2, 1, 0))]
    (a, b), crew, hosts = start_fleet(deployment, crew_spec)
    balancer = Balancer(str(tmp_path / "haproxy"), [a.port, b.port]).start()
    watchers = [Watcher(a), Watcher(b)]
    for watcher in watchers:
        watcher.start()
    front = FrontPoller(f"{balancer.url}/nearest/{len(hosts)}?ip={VICTORIA}")
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    healed = None
    try:
        start = time.time()
        node1.pause()
        time.sleep(HANG)
        node1.resume()
        resumed = time.time()
        # The partition persists: node 2 sees node 1 running but partitioned (or node 1 paused itself).
        partition = wait_until(lambda: cluster.partitions(node2) != "[]" and cluster.partitions(node2), 30,
                               step=0.5, what="a partition after the long hang")
        time.sleep(max(0.0, resumed + WATCH - time.time()))
        still = cluster.partitions(node2)
        health = [s.health() for s in (a, b)]
        end = time.time()
        heal_start = time.time()
        restart(cluster, node1)
        healed = time.time() - heal_start
        wait_until(lambda: all(fresh(s, hosts, time.time() - 2 * INTERVAL) for s in (a, b)), 30,
                   what="every agent fresh on both servers after the heal")
    finally:
        front.stop()
        for watcher in watchers:
            watcher.stop()
        balancer.stop()
        node1.resume()
    gaps = {(name, h): max_gap(w, h, start, end, INACTIVE) for name, w in zip("AB", watchers) for h in hosts}
    unrouted = sum(agent.output().count("has no server queue bound") for agent in crew)
    print(f"{cluster.partition_handling}: partition {partition} still {still} {WATCH:.0f} s after "
          f"the resume; max silence of an agent on A/B {max(gaps.values()):.1f} s; {unrouted} unrouted publishes "
          f"moved on; manual heal {healed:.1f} s; balancer {len(front.answers)} answers, "
          f"{len(front.missing(hosts))} incomplete")
    # The partition is real and lasting: this is not autoheal's case.
    assert still != "[]", still
    # No silent loss: both servers heard every agent, the four on the cut-off node too, at least every inactive time.
    assert max(gaps.values()) < INACTIVE, {k: round(v, 1) for k, v in gaps.items() if v >= INACTIVE}
    assert unrouted > 0          # the agents did publish on the cut-off node and moved on
    # No false purge; /healthz truthful (the servers are on the majority and hear everyone); no traceback.
    assert "purged" not in a.log() and "purged" not in b.log()
    assert [h["status"] for h in health] == ["ok", "ok"], health
    assert all(h["caches"] == len(hosts) for h in health), health
    assert no_traceback(a.log(), b.log(), *(agent.output() for agent in crew)) == []
    # The balancer listed every cache in every answer.
    assert front.answers and front.missing(hosts) == [], front.missing(hosts)[:5]


@pytest.mark.parametrize("cluster", ["pause_minority"], indirect=True)
def test_a_rolling_restart_of_the_three_nodes(tmp_path, cluster, deployment):
    """Each node stopped cleanly (``rabbitmqctl stop``, as a package upgrade does) and started again,
    waiting for it to rejoin before the next: servers and agents follow, the balancer lists every
    cache throughout, nothing is purged. A clean stop is no partition: the handling mode plays no part."""
    for via in cluster.nodes:      # an earlier test may have left a partition: start from a clean cluster
        if cluster.partitions(via) != "[]":
            restart(cluster, via)
    crew_spec = [(f"roll{i}", (i % 3, (i + 1) % 3, (i + 2) % 3)) for i in range(6)]
    (a, b), crew, hosts = start_fleet(deployment, crew_spec)
    balancer = Balancer(str(tmp_path / "haproxy"), [a.port, b.port]).start()
    watchers = [Watcher(a), Watcher(b)]
    for watcher in watchers:
        watcher.start()
    front = FrontPoller(f"{balancer.url}/nearest/{len(hosts)}?ip={VICTORIA}")
    rejoin = []
    try:
        start = time.time()
        for node in cluster.nodes:
            stopped = time.time()
            restart(cluster, node)
            rejoin.append(time.time() - stopped)
            # Both servers fresh before the next node goes (they may have followed a failover).
            wait_until(lambda: all(fresh(s, hosts, time.time() - 2 * INTERVAL) for s in (a, b)), 30,
                       what=f"every agent fresh on both servers after restarting {node.host}")
        wait_until(lambda: consuming_from(b) == cluster.nodes[2].host and consuming_from(a) == cluster.nodes[1].host,
                   FAILBACK + 60, what="both servers back on their first node")
        end = time.time()
        health = [s.health() for s in (a, b)]
    finally:
        front.stop()
        for watcher in watchers:
            watcher.stop()
        balancer.stop()
    gaps = {(name, h): max_gap(w, h, start, end, INACTIVE) for name, w in zip("AB", watchers) for h in hosts}
    print(f"rolling restart: all three running again {', '.join(f'{r:.1f}' for r in rejoin)} s after each stop; {end - start:.0f} s in all; max silence of "
          f"an agent on A/B {max(gaps.values()):.1f} s; balancer {len(front.answers)} answers, "
          f"{len(front.missing(hosts))} incomplete")
    assert front.answers and front.missing(hosts) == [], front.missing(hosts)[:5]
    assert "purged" not in a.log() and "purged" not in b.log()
    assert max(gaps.values()) < INACTIVE, {k: round(v, 1) for k, v in gaps.items() if v >= INACTIVE}
    assert [h["status"] for h in health] == ["ok", "ok"], health
    assert no_traceback(a.log(), b.log(), *(agent.output() for agent in crew)) == []
