#!/usr/bin/env python3
"""Ingestion: heartbeats per second shoal-server absorbs from a real broker, next to a bare consumer.

Each consumer (the real server process, then a bare pika consumer that only JSON-decodes and
acks, with the same prefetch and ack batching) is frozen with SIGSTOP once its queue is bound;
the messages are published and queued; the clock starts at SIGCONT and stops when the last
one is absorbed (server: /healthz ``accepted``; bare: the process exits). Two loads: every
heartbeat a new cache (GeoIP lookup included), then 100,000 heartbeats from 10,000 known
caches. An in-process breakdown (no AMQP) shows where the server's time per message goes.
Targets: server within 2x of the bare consumer; >= 10,000 heartbeats/s for new caches; CPU per
heartbeat (``known_cpu_ratio``, ``new_cpu_ratio``: server ÷ bare consumer, each taken within one
run and the median over ``--repeat`` runs, default 5) at most 1.3x for known caches and 2x for new.
The load average is recorded with every run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PREFETCH = 500
ACK_BATCH = 100


def bare_handler(expected: int, clock: Callable[[], float], done: Callable[[Any, float], None]) -> Callable[..., None]:
    """A pika message callback that only JSON-decodes and acks in batches; ``done(channel, cpu)`` after ``expected``."""
    state = {"count": 0, "pending": 0, "cpu0": 0.0}

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if state["count"] == 0:
            state["cpu0"] = clock()
        json.loads(body)
        state["count"] += 1
        state["pending"] += 1
        if state["pending"] >= ACK_BATCH or state["count"] == expected:
            channel.basic_ack(delivery_tag=method.delivery_tag, multiple=True)
            state["pending"] = 0
        if state["count"] == expected:
            done(channel, clock() - state["cpu0"])

    return on_message


def bare_consumer(host: str, port: int, exchange: str, expected: int) -> int:
    """The practical limit: consume, json-decode and ack in batches, nothing else."""
    import pika
    conn = pika.BlockingConnection(pika.ConnectionParameters(host, port, heartbeat=120))
    ch = conn.channel()
    ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=False, auto_delete=False)
    queue = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(queue=queue, exchange=exchange, routing_key="#")
    ch.basic_qos(prefetch_count=PREFETCH)
    spent: List[float] = []

    def done(channel: Any, cpu: float) -> None:
        spent.append(cpu)
        channel.stop_consuming()

    ch.basic_consume(queue=queue, on_message_callback=bare_handler(expected, time.process_time, done))
    print("ready", flush=True)
    ch.start_consuming()
    print("cpu %.6f" % spent[0], flush=True)
    conn.close()
    return 0


def publish(host: str, port: int, exchange: str, bodies: List[bytes]) -> float:
    """Publish without confirms (queued is checked separately); return messages/s."""
    from support.heartbeats import Publisher
    pub = Publisher(exchange, host, port)
    start = time.perf_counter()
    try:
        for body in bodies:
            pub.send(body)
    finally:
        pub.close()
    return len(bodies) / (time.perf_counter() - start)


def wait_queued(node: Optional[common.RabbitNode], expected: int, timeout: float = 120.0) -> None:
    """Wait until the broker holds ``expected`` messages (ready or in flight) in one queue."""
    if node is None:
        time.sleep(2.0)  # an external broker: no rabbitmqctl; give routing a moment
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = node.ctl("list_queues", "-q", "messages")
        counts = [int(x) for x in out.split() if x.isdigit()]
        if counts and max(counts) >= expected:
            return
        time.sleep(0.3)
    raise TimeoutError(f"broker did not queue {expected} messages")


def run_frozen(cmd: List[str], host: str, port: int, node: Any, exchange: str,
               bodies: List[bytes]) -> Tuple[str, float, float]:
    """Start a consumer process (``cmd``; it prints "ready" once bound, then one result line after
    the last message), freeze it, queue ``bodies``, thaw it; return (its line, seconds, publish rate)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGSTOP)
        pub_rate = publish(host, port, exchange, bodies)
        wait_queued(node, len(bodies))
        start = time.perf_counter()
        os.kill(proc.pid, signal.SIGCONT)
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - start
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    return line, elapsed, pub_rate


def run_bare(host: str, port: int, node: Any, bodies: List[bytes]) -> Dict[str, float]:
    exchange = f"bench-bare-{uuidlib.uuid4().hex[:8]}"
    line, elapsed, pub_rate = run_frozen([sys.executable, os.path.abspath(__file__), "--bare-consumer", host,
                                          str(port), exchange, str(len(bodies))], host, port, node, exchange, bodies)
    cpu = float(line.split()[1])
    return {"rate": len(bodies) / elapsed, "seconds": elapsed, "publish_rate": pub_rate,
            "cpu_us": cpu / len(bodies) * 1e6}


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_server(srv: Any, host: str, port: int, node: Any, exchange: str, bodies: List[bytes]) -> Dict[str, float]:
    before = srv.health()["accepted"]
    expected = before + len(bodies)
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        pub_rate = publish(host, port, exchange, bodies)
        wait_queued(node, len(bodies))
        cpu0 = process_cpu(srv.proc.pid)
        start = time.perf_counter()
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 600
    health: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = srv.health()
        if health["accepted"] + sum(health["dropped"].values()) >= expected:
            break
        time.sleep(0.1)  # each poll costs the server CPU; 0.1 s is <5% of the shortest drain
    elapsed = time.perf_counter() - start
    cpu = process_cpu(srv.proc.pid) - cpu0
    if health["accepted"] < expected:
        raise RuntimeError(f"server dropped heartbeats: {health}")
    return {"rate": len(bodies) / elapsed, "seconds": elapsed, "publish_rate": pub_rate,
            "cpu_us": cpu / len(bodies) * 1e6, "rss_kib": common.rss_kib(srv.proc.pid), "caches": health["caches"]}


def in_process(new: List[bytes], known: List[bytes]) -> Dict[str, float]:
    """Per-message CPU time of the server's path without AMQP: parse, GeoIP, upsert (microseconds)."""
    from shoal_server.consumer import ConsumerStatus, HeartbeatSink
    from shoal_server.geo import open_locator
    from shoal_server.heartbeat import Limits, parse_heartbeat
    from shoal_server.table import CacheTable
    locator = open_locator("")
    now = time.time()
    limits = Limits()
    us = lambda seconds, n: seconds / n * 1e6  # noqa: E731
    t = time.thread_time()
    hbs = [parse_heartbeat(b, now, limits) for b in new]
    parse = us(time.thread_time() - t, len(new))
    t = time.thread_time()
    places = {hb.public_ip: locator.locate(hb.public_ip or "") for hb in hbs}
    locate = us(time.thread_time() - t, len(hbs))
    located = sum(1 for p in places.values() if p is not None) / max(1, len(places))
    table = CacheTable()
    t = time.thread_time()
    for hb in hbs:
        table.upsert(hb, now, places.__getitem__)
    upsert_new = us(time.thread_time() - t, len(hbs))
    t = time.thread_time()
    for hb in hbs:
        table.upsert(hb, now, places.__getitem__)
    upsert_known = us(time.thread_time() - t, len(hbs))
    sink = HeartbeatSink(CacheTable(), locator, limits, ConsumerStatus())
    t = time.thread_time()
    for b in new:
        sink.handle(b)
    handle_new = us(time.thread_time() - t, len(new))
    t = time.thread_time()
    for b in known:
        sink.handle(b)
    handle_known = us(time.thread_time() - t, len(known))
    locator.close()
    return {"parse_us": parse, "geoip_us": locate, "located_fraction": located, "upsert_new_us": upsert_new,
            "upsert_known_us": upsert_known, "handle_new_us": handle_new, "handle_known_us": handle_known}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bare-consumer"]:
        host, port, exchange, expected = argv[1:5]
        return bare_consumer(host, int(port), exchange, int(expected))
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--new", type=int, default=20000, help="heartbeats from new caches")
    p.add_argument("--caches", type=int, default=10000, help="known caches")
    p.add_argument("--messages", type=int, default=100000, help="heartbeats from known caches")
    p.add_argument("--repeat", type=int, default=None, help="runs of each (medians are reported); default 5, 1 with --quick")
    args = p.parse_args(argv)
    if args.quick:
        args.new, args.caches, args.messages = 300, 100, 600
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    now = time.time()
    ips = common.addresses(args.new, seed=5)
    new = [common.heartbeat_body(f"n{i:06d}", ip, 1000.0 + i % 7000, now) for i, ip in enumerate(ips)]
    known_ids = [(f"n{i:06d}", ips[i]) for i in range(args.caches)]
    local = in_process(new, [common.heartbeat_body(u, ip, 2000.0 + k, now)
                             for k in range(max(1, args.messages // args.caches)) for u, ip in known_ids])
    results: Dict[str, List[Dict[str, float]]] = {"server_new": [], "bare_new": [], "server_known": [],
                                                  "bare_known": []}
    ratios: Dict[str, List[float]] = {"known_cpu_ratio": [], "new_cpu_ratio": []}
    loads: List[float] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-ingest-") as tmp, common.broker() as (host, port, node):
        for rep in range(args.repeat):
            exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
            srv = common.server(os.path.join(tmp, f"server{rep}"), host, port, exchange,
                                cache={"cache_inactive_time": 3600, "cache_cleanse_interval": 600})
            try:
                stamp = time.time()
                new = [common.heartbeat_body(f"n{i:06d}", ip, 1000.0 + i % 7000, stamp) for i, ip in enumerate(ips)]
                results["server_new"].append(run_server(srv, host, port, node, exchange, new))
                stamp = time.time()
                known = [common.heartbeat_body(u, ip, 2000.0 + k, stamp)
                         for k in range(args.messages // args.caches) for u, ip in known_ids]
                results["server_known"].append(run_server(srv, host, port, node, exchange, known))
            finally:
                srv.stop()
            results["bare_new"].append(run_bare(host, port, node, new))
            results["bare_known"].append(run_bare(host, port, node, known))
            for key in results:
                results[key][-1]["loadavg"] = os.getloadavg()[0]
            loads.append(os.getloadavg()[0])
            # Server and bare consumer of the same run saw the same machine: their ratio is what is compared.
            ratios["known_cpu_ratio"].append(results["server_known"][-1]["cpu_us"] / results["bare_known"][-1]["cpu_us"])
            ratios["new_cpu_ratio"].append(results["server_new"][-1]["cpu_us"] / results["bare_new"][-1]["cpu_us"])
    med = {k: common.median([r["rate"] for r in v]) for k, v in results.items()}
    cpu = {k: common.median([r["cpu_us"] for r in v]) for k, v in results.items()}
    rows = [
        ["new caches (GeoIP each)", args.new, med["server_new"], med["bare_new"], med["bare_new"] / med["server_new"],
         cpu["server_new"], cpu["bare_new"], 1e6 / cpu["server_new"]],
        [f"{args.caches:,} known caches", args.messages, med["server_known"], med["bare_known"],
         med["bare_known"] / med["server_known"], cpu["server_known"], cpu["bare_known"], 1e6 / cpu["server_known"]],
    ]
    md = common.table(["load", "messages", "server (hb/s)", "bare pika consumer (hb/s)", "bare / server",
                       "server CPU µs per hb", "bare CPU µs per hb", "server hb/s per CPU-second"], rows)
    md_local = common.table(
        ["parse_heartbeat", "GeoIP locate", "upsert (new)", "upsert (known)", "HeartbeatSink.handle new",
         "handle known", "placed by GeoIP"],
        [[local["parse_us"], local["geoip_us"], local["upsert_new_us"], local["upsert_known_us"],
          local["handle_new_us"], local["handle_known_us"], f"{local['located_fraction']:.0%}"]])
    ratio_med = {k: common.median(v) for k, v in ratios.items()}
    print("Ingestion through the broker (median of %d)\n%s\n\nPer message in-process, microseconds of CPU time\n%s\n"
          % (args.repeat, md, md_local))
    print("CPU per heartbeat, server / bare consumer, per run: known %s, new %s (load average %s); medians %.2f, %.2f"
          % (" ".join(f"{r:.2f}" for r in ratios["known_cpu_ratio"]), " ".join(f"{r:.2f}" for r in ratios["new_cpu_ratio"]),
             " ".join(f"{x:.1f}" for x in loads), ratio_med["known_cpu_ratio"], ratio_med["new_cpu_ratio"]))
    verdict = {"new_rate": med["server_new"], "known_ratio": med["bare_known"] / med["server_known"],
               "new_ratio": med["bare_new"] / med["server_new"], "new_rate_per_cpu": 1e6 / cpu["server_new"],
               "known_cpu_ratio": ratio_med["known_cpu_ratio"], "new_cpu_ratio": ratio_med["new_cpu_ratio"],
               "loadavg": common.median(loads)}
    common.save(args.out, "ingestion", {"runs": results, "medians": med, "cpu_us": cpu, "cpu_ratios": ratios,
                                        "loadavg": loads, "in_process": local, "verdict": verdict,
                                        "sizes": {"new": args.new, "caches": args.caches,
                                                  "messages": args.messages}, "quick": args.quick},
                "Through the broker (median of %d runs)\n\n%s\n\nPer message in-process (µs of thread CPU time)\n\n%s"
                % (args.repeat, md, md_local))
    fig, axes = common.figure(2)
    labels = ["new caches", "known caches"]
    x = range(2)
    axes[0].bar([i - 0.2 for i in x], [med["server_new"], med["server_known"]], 0.4, label="shoal-server")
    axes[0].bar([i + 0.2 for i in x], [med["bare_new"], med["bare_known"]], 0.4, label="bare pika consumer")
    axes[0].axhline(10000, color="red", linestyle="--", label="target: 10,000/s")
    axes[0].set_xticks(list(x), labels)
    axes[0].set(ylabel="heartbeats/s", title="Absorbed from RabbitMQ")
    axes[0].legend(fontsize=8)
    parts = [("parse", local["parse_us"]), ("GeoIP", local["geoip_us"]), ("upsert new", local["upsert_new_us"]),
             ("upsert known", local["upsert_known_us"])]
    axes[1].barh([p[0] for p in parts], [p[1] for p in parts])
    axes[1].set(xlabel="µs per message", title="Server path without AMQP")
    common.save_figure(fig, args.out, "ingestion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
