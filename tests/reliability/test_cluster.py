"""Issue 16 on a real 3-node RabbitMQ cluster on loopback (127.0.0.1/.2/.3), two servers behind HAProxy.

Server A prefers node 1, server B node 3; four agents prefer node 1, two node 3. Faults are
SIGSTOP (a hung node: TCP stays up, nothing answers), long enough for the short net_ticktime to
declare the node down and leave a partition when it resumes (healed by autoheal, the shipped
setting). Every phase asserts: no false purge, no silent loss (every agent heard by the server on
the healthy nodes at least every inactive time), the balancer answering, no traceback.
"""
import os
import signal
import threading
import time

import pytest

from rel_support import SITES, AgentProcess, Watcher, agent_broker, fresh, listed, tails, wait_until
from support.balancer import Balancer
from support.procs import ServerProcess, http_get
from support.rabbitcluster import RabbitCluster

pytestmark = pytest.mark.integration

INTERVAL = 1.0
INACTIVE = 5.0
FAILBACK = 4.0
LONG_HANG = 12.0      # > net_ticktime 4 s: the node is declared down, a partition follows its resumption


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RabbitCluster(str(tmp_path_factory.mktemp("cluster"))).start()
    yield nodes
    nodes.stop()


@pytest.fixture
def deployment(tmp_path, cluster, exchange):
    """Factories for servers and agents on the cluster; everything stopped by PID at teardown."""
    started = []
    common = {"amqp_username": "guest", "amqp_password": "guest", "amqp_exchange": exchange, "heartbeat": 2,
              "connect_timeout": 2, "failback_interval": FAILBACK}

    def server(name, *order, cache=None, general=None):
        proc = ServerProcess(str(tmp_path / name), {**common, "amqp_servers": cluster.amqp_servers(*order)},
                             {"cache_inactive_time": INACTIVE, "cache_cleanse_interval": 0.25, **(cache or {})},
                             general=general or {})
        started.append(proc)
        return proc.start()

    def agent(name, *order):
        site = list(SITES)[len(started) % len(SITES)]
        proc = AgentProcess(str(tmp_path / name), name, {**common, "amqp_servers": cluster.amqp_servers(*order)},
                            INTERVAL, site)
        started.append(proc)
        return proc.start()

    yield server, agent
    for proc in started:
        proc.stop()


class Poller(threading.Thread):
    """GET a URL every 0.2 s and keep every status (None for a connection error)."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.codes, self._halt = url, [], threading.Event()
        self.start()

    def run(self):
        while not self._halt.wait(0.2):
            try:
                self.codes.append(http_get(self.url, timeout=3)[0])
            except OSError:
                self.codes.append(None)

    def stop(self):
        self._halt.set()
        self.join(10)
        return self.codes


def consuming_from(server):
    """The node address the server's consumer is on now (from its log)."""
    tail = server.log().rsplit("consuming heartbeats from ", 1)
    return tail[1].split(":", 1)[0] if len(tail) == 2 else None


def max_gap(watcher, host, start, end):
    """The longest silence of ``host`` between ``start`` and ``end`` as the server saw it."""
    times = sorted(t for t in watcher.last_active.get(host, ()) if t >= start - INACTIVE)
    times = [t for t in times if t <= end] + [end]
    points = [max(start, times[0])] + times if times else [start, end]
    return max(b - a for a, b in zip(points, points[1:]))


def test_hung_node_short_and_long_then_partition_heal_and_spread_back(tmp_path, cluster, deployment):
    make_server, make_agent = deployment
    a = make_server("serverA", 0, 1, 2)
    b = make_server("serverB", 2, 0, 1)
    crew = [make_agent(f"one{i}", 0, 1, 2) for i in range(4)] + [make_agent(f"three{i}", 2, 0, 1) for i in range(2)]
    hosts = [agent.hostname for agent in crew]
    for server in (a, b):
        wait_until(lambda: fresh(server, hosts, time.time() - 2 * INTERVAL), 30, what="six agents on both servers")
        wait_until(lambda: "cache expiry resumed" in server.log(), INACTIVE + 15, what="expiry armed")
    balancer = Balancer(str(tmp_path / "haproxy"), [a.port, b.port]).start()
    watch_a, watch_b = Watcher(a), Watcher(b)
    watch_a.start()
    watch_b.start()
    front = Poller(f"{balancer.url}/nearest/3?ip=142.104.1.1")
    node3 = cluster.nodes[2]
    late = None
    try:
        # Short hang: shorter than net_ticktime, the node is never declared down.
        start = time.time()
        node3.pause()
        time.sleep(2.0)
        node3.resume()
        time.sleep(3.0)
        short_end = time.time()
        # Long hang: node 3 is declared down, its queue (server B's) goes, B fails over.
        long_start = time.time()
        node3.pause()
        late = make_agent("late", 2, 0, 1)      # its first broker hangs in the handshake
        wait_until(lambda: late.hostname in listed(a), 15, what="a new agent past the hung first broker")
        late_listed = time.time() - long_start
        health_a = a.health()
        time.sleep(max(0.0, long_start + LONG_HANG - time.time()))
        health_b = b.health()
        node3.resume()
        resumed = time.time()
        cluster.wait_running(3, timeout=90)
        healed = time.time() - resumed
        wait_until(lambda: all(fresh(s, hosts, time.time() - 2 * INTERVAL) for s in (a, b)), 30,
                   what="every agent fresh on both servers after the heal")
        wait_until(lambda: consuming_from(b) == node3.host, FAILBACK + 60, what="server B back on node 3",
                   explain=lambda: tails({"server B": b.log()}))
        wait_until(lambda: all(agent_broker(agent) == node3.host for agent in crew[4:]),
                   FAILBACK + 45, what="node-3 agents back on node 3",
                   explain=lambda: tails({agent.name: agent.output() for agent in crew[4:]}))
        wait_until(lambda: all(fresh(s, hosts, time.time() - 2 * INTERVAL) for s in (a, b)), 30,
                   what="every agent fresh on both servers after spreading back")
        end = time.time()
    finally:
        codes = front.stop()
        watch_a.stop()
        watch_b.stop()
        balancer.stop()
        node3.resume()

    gaps = {h: max_gap(watch_a, h, start, end) for h in hosts}
    print(f"short hang {short_end - start:.1f} s, long hang {LONG_HANG} s; max silence per agent on A "
          f"{max(gaps.values()):.1f} s; new agent listed {late_listed:.1f} s after the hang began; cluster "
          f"running again {healed:.1f} s after the resume; balancer {codes.count(200)}/{len(codes)} 200")
    # No silent loss: server A (on healthy nodes) heard every agent throughout, also those on node 3.
    assert max(gaps.values()) < INACTIVE, gaps
    # No false purge on either server.
    assert "purged" not in a.log() and "purged" not in b.log()
    assert set(hosts) <= set(listed(b))
    # Agents failed over (hung handshake too), and nothing logged a traceback.
    assert late_listed < 10, late_listed
    for text in [a.log(), b.log()] + [agent.output() for agent in crew + [late]]:
        assert "Traceback" not in text
    # /healthz said the truth; the balancer answered every request.
    assert health_a["status"] == "ok", health_a
    assert health_b["status"] in ("ok", "stale") and health_b["caches"] >= len(hosts), health_b
    assert codes and all(code == 200 for code in codes), [c for c in codes if c != 200][:5]
    # Spread back: B's queue and the node-3 agents are on node 3 again.
    assert consuming_from(b) == node3.host and "moving back from AMQP broker" in b.log()


def test_the_whole_cluster_hung_behind_the_balancer(tmp_path, cluster, deployment):
    """Every node paused for three inactive times: both servers keep their tables, say "stale",
    and the balancer keeps answering with the full table; then everything is fresh by itself."""
    make_server, make_agent = deployment
    a = make_server("serverA", 0, 1, 2)
    b = make_server("serverB", 2, 0, 1)
    crew = [make_agent(f"all{i}", i % 3, (i + 1) % 3, (i + 2) % 3) for i in range(6)]
    hosts = [agent.hostname for agent in crew]
    for server in (a, b):
        wait_until(lambda: fresh(server, hosts, time.time() - 2 * INTERVAL), 30, what="six agents on both servers")
        wait_until(lambda: "cache expiry resumed" in server.log(), INACTIVE + 15, what="expiry armed")
    balancer = Balancer(str(tmp_path / "haproxy"), [a.port, b.port]).start()
    front = Poller(f"{balancer.url}/all")
    try:
        start = time.time()
        for node in cluster.nodes:
            node.pause()
        time.sleep(3 * INACTIVE)
        states = [s.health()["status"] for s in (a, b)]
        for node in cluster.nodes:
            node.resume()
        resumed = time.time()
        cluster.wait_running(3, timeout=90)
        wait_until(lambda: all(fresh(s, hosts, resumed) for s in (a, b)), 60, what="every agent fresh again")
        recovered = time.time() - resumed
        time.sleep(INACTIVE + 1)
        status = [s.health()["status"] for s in (a, b)]
    finally:
        codes = front.stop()
        balancer.stop()
        for node in cluster.nodes:
            node.resume()
    print(f"cluster hung {resumed - start:.1f} s; fresh again {recovered:.1f} s after the resume; "
          f"balancer {codes.count(200)}/{len(codes)} 200")
    assert states == ["stale", "stale"], states
    assert status == ["ok", "ok"], status
    assert "purged" not in a.log() and "purged" not in b.log()
    assert codes and all(code == 200 for code in codes), [c for c in codes if c != 200][:5]
    assert set(listed(a)) == set(hosts) == set(listed(b))


def test_node_kill_and_restart(tmp_path, cluster, deployment):
    """A node SIGKILLed (server B's queue and two agents on it) and started again: B and the agents
    fail over at once, nothing is purged, the balancer answers, and they spread back afterwards."""
    make_server, make_agent = deployment
    a = make_server("serverA", 0, 1, 2)
    b = make_server("serverB", 1, 0, 2)
    crew = [make_agent(f"kill{i}", i % 3, (i + 1) % 3, (i + 2) % 3) for i in range(6)]
    hosts = [agent.hostname for agent in crew]
    for server in (a, b):
        wait_until(lambda: fresh(server, hosts, time.time() - 2 * INTERVAL), 30, what="six agents on both servers")
        wait_until(lambda: "cache expiry resumed" in server.log(), INACTIVE + 15, what="expiry armed")
    balancer = Balancer(str(tmp_path / "haproxy"), [a.port, b.port]).start()
    watch_b = Watcher(b)
    watch_b.start()
    front = Poller(f"{balancer.url}/nearest/3?ip=142.104.1.1")
    node2 = cluster.nodes[1]
    try:
        killed = time.time()
        os.killpg(node2.proc.pid, 9)
        node2.proc.wait(10)
        node2.proc = None
        wait_until(lambda: all(fresh(s, hosts, time.time() - 2 * INTERVAL) for s in (a, b)), 30,
                   what="every agent fresh on both servers without node 2")
        fresh_after_kill = time.time() - killed
        node2.start()
        cluster.wait_running(3, timeout=90)
        wait_until(lambda: consuming_from(b) == node2.host, FAILBACK + 60, what="server B back on node 2")
        wait_until(lambda: all(fresh(s, hosts, time.time() - 2 * INTERVAL) for s in (a, b)), 30,
                   what="every agent fresh after the restart")
        end = time.time()
    finally:
        codes = front.stop()
        watch_b.stop()
        balancer.stop()
    gaps = {h: max_gap(watch_b, h, killed, end) for h in hosts}
    print(f"node 2 killed: both servers fresh {fresh_after_kill:.1f} s later; max silence per agent on B "
          f"{max(gaps.values()):.1f} s; balancer {codes.count(200)}/{len(codes)} 200")
    assert "purged" not in a.log() and "purged" not in b.log()
    assert codes and all(code == 200 for code in codes), [c for c in codes if c != 200][:5]
    for text in [a.log(), b.log()] + [agent.output() for agent in crew]:
        assert "Traceback" not in text
    assert consuming_from(b) == node2.host and "moving back from AMQP broker" in b.log()


def test_a_server_down_longer_than_the_inactive_time_restarts_warm_behind_the_balancer(tmp_path, cluster,
                                                                                       deployment):
    """Issue 16 (5.): server B SIGKILLed and kept down for twice the inactive time while the agents
    go on; the balancer sends everyone to A meanwhile, and B's first answer after the restart is
    its snapshot (marked stale), not an empty table; then B is fresh and "ok" on its own."""
    make_server, make_agent = deployment
    state = tmp_path / "stateB"
    a = make_server("serverA", 0, 1, 2)
    b = make_server("serverB", 1, 2, 0, general={"state_dir": str(state), "snapshot_interval": 1})
    crew = [make_agent(f"warm{i}", i % 3, (i + 1) % 3, (i + 2) % 3) for i in range(6)]
    hosts = [agent.hostname for agent in crew]
    for server in (a, b):
        wait_until(lambda: fresh(server, hosts, time.time() - 2 * INTERVAL), 30, what="six agents on both servers")
    wait_until(lambda: "cache expiry resumed" in b.log(), INACTIVE + 15, what="expiry armed")
    time.sleep(2.0)                                          # a periodic snapshot with all six
    balancer = Balancer(str(tmp_path / "haproxy"), [a.port, b.port]).start()
    front = Poller(f"{balancer.url}/nearest/3?ip=142.104.1.1")
    try:
        b.stop(signal.SIGKILL)
        time.sleep(2 * INACTIVE)
        b.start(wait_connected=False)
        first = set(listed(b))
        first_state = b.health()["status"]
        wait_until(lambda: fresh(b, hosts, time.time() - 2 * INTERVAL), 30, what="B fresh again",
                   explain=lambda: tails({"server B": b.log()}))
        wait_until(lambda: b.health()["status"] == "ok", INACTIVE + 10, what="B says ok")
    finally:
        codes = front.stop()
        balancer.stop()
    print(f"server B down {2 * INACTIVE:g} s: first answer {len(first)}/{len(hosts)} caches, /healthz "
          f"{first_state!r}; balancer {codes.count(200)}/{len(codes)} 200")
    assert set(hosts) <= first, first
    assert first_state in ("stale", "ok")
    assert "purged" not in a.log() and "purged" not in b.log()
    assert codes and all(code == 200 for code in codes), [c for c in codes if c != 200][:5]


def test_two_thousand_simulated_agents_and_a_node_kill(tmp_path, cluster, deployment, exchange):
    """2,000 uuids from four failover publishers (the agent's own Publisher) spread over the nodes;
    node 2, holding server B's queue and a quarter of the publishers, is killed mid-run."""
    import json

    from shoal_agent.amqp import RabbitSettings
    from shoal_agent.publisher import Publisher, PublishError
    from support.heartbeats import upstream_heartbeat

    fleet, cycle, inactive = 2000, 10.0, 25.0
    make_server, _ = deployment
    a = make_server("serverA", 0, 1, 2, cache={"cache_inactive_time": inactive})
    b = make_server("serverB", 1, 0, 2, cache={"cache_inactive_time": inactive})
    sent, errors, halt = [0], [], threading.Event()

    def run(part, order):
        settings = RabbitSettings(amqp_servers=tuple(cluster.amqp_servers(*order).split(", ")), amqp_exchange=exchange,
                                  heartbeat=2, connect_timeout=2, failback_interval=FAILBACK)
        pub = Publisher(settings, confirm_timeout=1.0)
        uuids = range(part, fleet, 4)
        while not halt.is_set():
            began = time.monotonic()
            for i in uuids:
                body = json.dumps(upstream_heartbeat(f"188.184.{i // 250}.{i % 250 + 1}", uuid=f"sim-{i:04d}",
                                                     hostname=f"sim{i}.squid.example.org")).encode()
                try:
                    pub.publish(body, "20000")
                    sent[0] += 1
                except PublishError as err:
                    errors.append(str(err))
            halt.wait(max(0.0, cycle - (time.monotonic() - began)))
        pub.close()

    orders = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1)]
    threads = [threading.Thread(target=run, args=(p, orders[p]), daemon=True) for p in range(4)]
    for thread in threads:
        thread.start()
    node2 = cluster.nodes[1]
    if node2.proc is None:   # an earlier test's restart failed: bring the cluster back first
        node2.start()
        cluster.wait_running(3, timeout=90)
    try:
        for server in (a, b):
            wait_until(lambda: len(listed(server)) == fleet, 60, step=0.5, what="2,000 caches on both servers")
        time.sleep(cycle)
        before = {name: s.health()["accepted"] for name, s in (("a", a), ("b", b))}
        sent_before = sent[0]
        os.killpg(node2.proc.pid, 9)
        node2.proc.wait(10)
        node2.proc = None
        time.sleep(3 * cycle)
        after = {name: s.health()["accepted"] for name, s in (("a", a), ("b", b))}
        sent_during = sent[0] - sent_before
        counts = {name: len(listed(s)) for name, s in (("a", a), ("b", b))}
    finally:
        halt.set()
        for thread in threads:
            thread.join(30)
        if node2.proc is None:
            node2.start()
            cluster.wait_running(3, timeout=90)
    lost = {name: 1 - (after[name] - before[name]) / sent_during for name in after}
    print(f"2,000 simulated agents, node 2 killed: {sent_during} heartbeats confirmed in {3 * cycle:.0f} s; "
          f"lost on A {100 * lost['a']:.2f} %, on B {100 * lost['b']:.2f} %; {len(errors)} publish errors")
    assert counts == {"a": fleet, "b": fleet}, counts
    assert "purged" not in a.log() and "purged" not in b.log()
    assert lost["a"] < 0.01 and lost["b"] < 0.05, lost
    assert sent_during >= 2 * fleet
