#!/usr/bin/env python3
"""SSL overhead, as in the 2014 report section 4: confirmed publishes, plain AMQP vs mutual TLS.

One private RabbitMQ node runs the shipped ``shoal-server/conf/rabbitmq.conf`` (TLS 1.2/1.3,
peer verification, EXTERNAL login by certificate CN; certificates from ``shoal-ca`` via
tests/support/tlsbroker.py) plus, for the comparison only, a plain listener with PLAIN login.
(a) one heartbeat per new connection, (b) 100 heartbeats over one connection, each waiting
for its confirm; (c) new connections per second the broker accepts from 4 clients, with the
broker's CPU per connection; (d) confirmed heartbeats per second over persistent connections.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import pika  # noqa: E402

from support.tlsbroker import HOST, TLSBroker  # noqa: E402
from support.rabbitnode import RabbitNode  # noqa: E402

EXCHANGE = "shoal"
ROUTING_KEY = "info"
INTERVAL = 30.0   # agents' heartbeat interval, seconds
CLIENTS = 4
WINDOW = 200      # unconfirmed publishes in flight in the pipelined variant of (d)
# The 2014 report, section 4 (WAN, Victoria to the server): plain vs TLS, milliseconds.
REPORT_2014 = {"one_message_ms": (640.0, 860.0), "hundred_messages_ms": (7400.0, 7500.0)}


class BenchBroker(TLSBroker):
    """The shipped TLS configuration, plus a plain listener with PLAIN login for comparison."""

    def __init__(self, base_dir: str) -> None:
        super().__init__(base_dir, plain_login=True)

    def start(self) -> "BenchBroker":
        super().start()
        assert self.node is not None
        self.node.ctl("add_user", "bench", "bench")
        self.node.ctl("set_permissions", "-p", "/", "bench", "^$", "^shoal$", "^$")
        return self

    def plain_params(self) -> pika.ConnectionParameters:
        return pika.ConnectionParameters(HOST, self.plain_port, credentials=pika.PlainCredentials("bench", "bench"),
                                         heartbeat=60)


def body() -> bytes:
    return common.heartbeat_body("bench-agent-0001", "142.90.1.1", 1234.5, time.time())


def one_per_connection(params: pika.ConnectionParameters, count: int) -> List[float]:
    """(a) connect, enable confirms, publish one heartbeat, wait for its confirm, close."""
    times = []
    msg = body()
    for _ in range(count):
        t = time.perf_counter()
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(EXCHANGE, ROUTING_KEY, msg)
        conn.close()
        times.append(time.perf_counter() - t)
    return times


def hundred_over_one(params: pika.ConnectionParameters, reps: int, count: int = 100) -> List[float]:
    """(b) one connection, ``count`` heartbeats in sequence, each waiting for its confirm."""
    times = []
    msg = body()
    for _ in range(reps):
        t = time.perf_counter()
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        for _ in range(count):
            ch.basic_publish(EXCHANGE, ROUTING_KEY, msg)
        conn.close()
        times.append(time.perf_counter() - t)
    return times


# Connection parameters by kind, set before the client processes fork (an SSLContext cannot be pickled).
PARAMS: Dict[str, pika.ConnectionParameters] = {}


def _connect_loop(args: Tuple[str, float]) -> int:
    kind, seconds = args
    params = PARAMS[kind]
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        conn = pika.BlockingConnection(params)
        conn.close()
        n += 1
    return n


def _publish_loop(args: Tuple[str, float]) -> int:
    kind, seconds = args
    params = PARAMS[kind]
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    msg = body()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        ch.basic_publish(EXCHANGE, ROUTING_KEY, msg)
        n += 1
    conn.close()
    return n


def _pipelined_loop(args: Tuple[str, float]) -> int:
    """Publish for ``seconds`` with up to WINDOW unconfirmed messages in flight; return confirmed."""
    kind, seconds = args
    state = {"sent": 0, "acked": 0, "nacked": 0, "deadline": 0.0}
    msg = body()

    def on_open(conn: Any) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch: Any) -> None:
        state["ch"] = ch
        ch.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _frame: start())

    def start() -> None:
        state["deadline"] = time.monotonic() + seconds
        pump()

    def pump() -> None:
        ch = state["ch"]
        now = time.monotonic()
        while state["sent"] - state["acked"] - state["nacked"] < WINDOW and now < state["deadline"]:
            ch.basic_publish(EXCHANGE, ROUTING_KEY, msg)
            state["sent"] += 1
        if now >= state["deadline"] and state["acked"] + state["nacked"] >= state["sent"]:
            ch.connection.close()

    def on_confirm(frame: Any) -> None:
        m = frame.method
        done = state["acked"] + state["nacked"]
        count = max(0, m.delivery_tag - done) if m.multiple else 1
        state["acked" if isinstance(m, pika.spec.Basic.Ack) else "nacked"] += count
        pump()

    conn = pika.SelectConnection(PARAMS[kind], on_open_callback=on_open,
                                 on_close_callback=lambda c, _err: c.ioloop.stop())
    conn.ioloop.call_later(seconds + 30, conn.ioloop.stop)
    conn.ioloop.start()
    return int(state["acked"])


def node_cpu_seconds(node: RabbitNode) -> float:
    """User+system CPU of every process of the node's session (beam, epmd children)."""
    assert node.proc is not None
    sid = node.proc.pid
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:   # session id (field 6 of stat; index 3 after the name)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def node_rss_kib(node: RabbitNode) -> int:
    """RSS of every process of the node's session."""
    assert node.proc is not None
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                sid = int(fh.read().rsplit(")", 1)[1].split()[3])
            if sid == node.proc.pid:
                total += common.rss_kib(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    return total


def held_connections(kind: str, count: int, node: RabbitNode) -> float:
    """(e) broker RSS per open connection (KiB): open ``count`` idle connections, read, close them."""
    before = node_rss_kib(node)
    conns = []
    try:
        for _ in range(count):
            conns.append(pika.BlockingConnection(PARAMS[kind]))
        time.sleep(2.0)
        after = node_rss_kib(node)
    finally:
        for conn in conns:
            conn.close()
    return (after - before) / count


def parallel(fn: Any, kind: str, clients: int, seconds: float,
             node: RabbitNode) -> Tuple[float, float]:
    """Run ``fn`` in ``clients`` processes; return (operations/s, broker CPU ms per operation)."""
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(clients, mp_context=ctx) as pool:
        cpu0, t0 = node_cpu_seconds(node), time.perf_counter()
        counts = list(pool.map(fn, [(kind, seconds)] * clients))
        elapsed, cpu = time.perf_counter() - t0, node_cpu_seconds(node) - cpu0
    total = sum(counts)
    return total / elapsed, cpu * 1000.0 / max(1, total)


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="duration of the (c) and (d) runs")
    args = p.parse_args(argv)
    n_one, n_hundred, seconds = (3, 1, 0.5) if args.quick else (60, 7, args.seconds)
    n_held = 10 if args.quick else 200
    res: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-ssl-") as tmp:
        broker = BenchBroker(os.path.join(tmp, "broker"))
        broker.start()
        try:
            agent = broker.add_agent("bench-agent.example.org")
            # The benchmark holds hundreds of connections as one identity; lift the per-user
            # connection limit rabbitmq-shoal-users sets (3 per agent) for it.
            broker.node.ctl("set_user_limits", agent.cn, '{"max-connections": -1, "max-channels": -1}')
            kinds = {"plain": broker.plain_params(), "tls": broker.params(agent)}
            PARAMS.update(kinds)
            for kind, params in kinds.items():
                one_per_connection(params, 2)  # warm up both sides
                res[f"one_{kind}"] = one_per_connection(params, n_one)
                res[f"hundred_{kind}"] = hundred_over_one(params, n_hundred)
            for kind, params in kinds.items():
                rate, cpu = parallel(_connect_loop, kind, CLIENTS, seconds, broker.node)
                res[f"connect_rate_{kind}"], res[f"connect_cpu_ms_{kind}"] = rate, cpu
                for clients in (1, CLIENTS):
                    rate, cpu = parallel(_publish_loop, kind, clients, seconds, broker.node)
                    res[f"publish_rate_{kind}_{clients}"] = rate
                    res[f"publish_cpu_ms_{kind}_{clients}"] = cpu
                rate, cpu = parallel(_pipelined_loop, kind, 1, seconds, broker.node)
                res[f"pipelined_rate_{kind}"], res[f"pipelined_cpu_ms_{kind}"] = rate, cpu
                res[f"conn_kib_{kind}"] = held_connections(kind, n_held, broker.node)
        finally:
            broker.stop()
    ms = lambda xs, q=50: common.percentile(xs, q) * 1000.0  # noqa: E731
    med = {k: (ms(res[f"{k}_plain"]), ms(res[f"{k}_tls"])) for k in ("one", "hundred")}
    p90 = {k: (ms(res[f"{k}_plain"], 90), ms(res[f"{k}_tls"], 90)) for k in ("one", "hundred")}
    handshake_ms = med["one"][1] - med["one"][0]
    rows = [
        ["(a) 1 heartbeat per new connection", med["one"][0], p90["one"][0], med["one"][1], p90["one"][1],
         med["one"][1] / med["one"][0], "640 / 860 ms"],
        ["(b) 100 heartbeats over 1 connection", med["hundred"][0], p90["hundred"][0], med["hundred"][1],
         p90["hundred"][1], med["hundred"][1] / med["hundred"][0], "7.4 / 7.5 s"],
    ]
    md_a = common.table(["confirmed publish (loopback)", "plain median ms", "plain p90", "TLS median ms", "TLS p90",
                         "TLS / plain", "2014 report (WAN), plain / TLS"], rows)
    rate_rows = [
        ["(c) new connections/s, %d clients" % CLIENTS, res["connect_rate_plain"], res["connect_rate_tls"],
         res["connect_cpu_ms_plain"], res["connect_cpu_ms_tls"]],
        ["(d) confirmed heartbeats/s, 1 persistent connection", res["publish_rate_plain_1"],
         res["publish_rate_tls_1"], res["publish_cpu_ms_plain_1"], res["publish_cpu_ms_tls_1"]],
        ["(d) confirmed heartbeats/s, %d persistent connections" % CLIENTS, res[f"publish_rate_plain_{CLIENTS}"],
         res[f"publish_rate_tls_{CLIENTS}"], res[f"publish_cpu_ms_plain_{CLIENTS}"],
         res[f"publish_cpu_ms_tls_{CLIENTS}"]],
        ["(d) confirmed heartbeats/s, 1 connection, %d in flight" % WINDOW, res["pipelined_rate_plain"],
         res["pipelined_rate_tls"], res["pipelined_cpu_ms_plain"], res["pipelined_cpu_ms_tls"]],
    ]
    md_c = common.table(["throughput", "plain per s", "TLS per s", "broker CPU ms each, plain", "TLS"], rate_rows)
    agents_reconnect = res["connect_rate_tls"] * INTERVAL
    agents_persistent = max(res[f"publish_rate_tls_{CLIENTS}"], res["pipelined_rate_tls"]) * INTERVAL
    summary = (f"TLS handshake (a, TLS - plain median): {handshake_ms:.1f} ms wall, broker CPU "
               f"{res['connect_cpu_ms_tls'] - res['connect_cpu_ms_plain']:.1f} ms more per TLS connection.\n"
               f"(e) an open idle connection costs the broker {res['conn_kib_tls']:.0f} KiB with TLS, "
               f"{res['conn_kib_plain']:.0f} KiB plain ({n_held} held).\n"
               f"At a {INTERVAL:.0f} s interval, the broker's CPU allows ~{agents_reconnect:,.0f} agents that connect "
               f"for every heartbeat, and ~{agents_persistent:,.0f} on persistent TLS connections (memory: "
               f"{res['conn_kib_tls'] * 10000 / 1048576:.1f} GiB per 10,000 connections).")
    print("%s\n\n%s\n\n%s\n" % (md_a, md_c, summary))
    verdict = {"handshake_ms": handshake_ms, "conn_kib_tls": res["conn_kib_tls"], "one_ratio": med["one"][1] / med["one"][0],
               "hundred_ratio": med["hundred"][1] / med["hundred"][0], "agents_reconnecting": agents_reconnect,
               "agents_persistent": agents_persistent}
    common.save(args.out, "ssl_overhead", {"raw": res, "median_ms": med, "p90_ms": p90, "verdict": verdict,
                                           "report_2014_ms": REPORT_2014, "quick": args.quick},
                "%s\n\n%s\n\n%s" % (md_a, md_c, summary.replace("\n", "  \n")))
    fig, axes = common.figure(2)
    labels = ["1 per connection", "100 over 1 connection"]
    axes[0].bar([-0.2, 0.8], [med["one"][0], med["hundred"][0]], 0.4, label="plain")
    axes[0].bar([0.2, 1.2], [med["one"][1], med["hundred"][1]], 0.4, label="mutual TLS")
    axes[0].set_xticks([0, 1], labels)
    axes[0].set(yscale="log", ylabel="ms (median, loopback)", title="Confirmed heartbeats (2014 report §4)")
    axes[0].legend(fontsize=8)
    names = ["new conn/s", "1 persistent", f"{CLIENTS} persistent", f"1, {WINDOW} in flight"]
    plain = [res["connect_rate_plain"], res["publish_rate_plain_1"], res[f"publish_rate_plain_{CLIENTS}"],
             res["pipelined_rate_plain"]]
    tls = [res["connect_rate_tls"], res["publish_rate_tls_1"], res[f"publish_rate_tls_{CLIENTS}"],
           res["pipelined_rate_tls"]]
    axes[1].bar([i - 0.2 for i in range(4)], plain, 0.4, label="plain")
    axes[1].bar([i + 0.2 for i in range(4)], tls, 0.4, label="mutual TLS")
    axes[1].set_xticks(range(4), names, fontsize=7)
    axes[1].set(yscale="log", ylabel="per second", title="Broker throughput (4 clients for new connections)")
    axes[1].legend(fontsize=8)
    common.save_figure(fig, args.out, "ssl_overhead")
    return 0


if __name__ == "__main__":
    sys.exit(main())
