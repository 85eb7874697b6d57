#!/usr/bin/env python3
"""The AMQP floor: CPU per heartbeat of pika consumers that do less than the server, down to nothing.

Where does the server's CPU per known heartbeat go, beyond what any pika consumer pays? Five
consumers, each in its own process, take the same 100,000 heartbeats of 10,000 known caches
(queued while the consumer is frozen, as in ``ingestion.py``; prefetch 500, acks in batches of
100), and each reports the CPU time of its consuming thread from the first message to the last:

- ``blocking``: pika's BlockingConnection, ``json.loads`` and ack: the bare consumer of ``ingestion.py``;
- ``select``: the same on pika's asynchronous SelectConnection (no blocking layer);
- ``shoal loop``: shoal-server's own ``Consumer`` (its reconnect loop, ``process_data_events``
  with a time limit, ack batching) with a sink that only ``json.loads``;
- ``shoal sink``: that ``Consumer`` with the server's real ``HeartbeatSink`` (validation, repeat
  check, table of the 10,000 caches, GeoIP) after the server's GC tuning;
- ``shoal sink, no GC``: the same with the garbage collector off.

The first three give the floor and what Shoal's loop adds to it; the last two what the
server's per-message work costs through a real broker, and the collector's share of it.
Medians of ``--repeat`` runs (default 5), the load average recorded with each.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ingestion  # noqa: E402

KINDS = ["blocking", "select", "shoal loop", "shoal sink", "shoal sink, no GC"]


def select_consumer(host: str, port: int, exchange: str, expected: int) -> None:
    """``blocking`` on SelectConnection: callbacks straight from the ioloop."""
    import pika
    state: Dict[str, Any] = {}

    def done(_channel: Any, cpu: float) -> None:
        print("cpu %.6f" % cpu, flush=True)
        connection.close()

    on_message = ingestion.bare_handler(expected, time.thread_time, done)

    def on_channel(channel: Any) -> None:
        def consume(_frame: Any) -> None:
            channel.basic_consume(queue=state["queue"], on_message_callback=on_message)
            print("ready", flush=True)

        def bound(_frame: Any) -> None:
            channel.basic_qos(prefetch_count=ingestion.PREFETCH, callback=consume)

        def declared(frame: Any) -> None:
            state["queue"] = frame.method.queue
            channel.queue_bind(queue=state["queue"], exchange=exchange, routing_key="#", callback=bound)

        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=False, auto_delete=False,
                                 callback=lambda _f: channel.queue_declare(queue="", exclusive=True, auto_delete=True,
                                                                           callback=declared))

    connection = pika.SelectConnection(pika.ConnectionParameters(host, port, heartbeat=120),
                                       on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
                                       on_close_callback=lambda c, _err: c.ioloop.stop())
    connection.ioloop.start()


def shoal_consumer(host: str, port: int, exchange: str, expected: int, kind: str, prefill: List[bytes]) -> None:
    """shoal-server's Consumer in a thread, with a decode-only sink or the real HeartbeatSink."""
    from shoal_server.amqp import RabbitSettings
    from shoal_server.consumer import Consumer, ConsumerStatus, HeartbeatSink
    from shoal_server.geo import open_locator
    from shoal_server.heartbeat import Limits
    from shoal_server.service import tune_gc
    from shoal_server.table import CacheTable
    stop = threading.Event()
    status = ConsumerStatus()
    real: Optional[HeartbeatSink] = None
    if kind != "shoal loop":
        tune_gc()
        real = HeartbeatSink(CacheTable(), open_locator(""), Limits(), status)
        for body in prefill:     # the 10,000 caches are known before the clock starts
            real.handle(body)
        if kind.endswith("no GC"):
            gc.disable()
    state = {"n": 0, "cpu0": 0.0}

    class Sink:
        def handle(self, body: bytes, user_id: Optional[str] = None) -> None:
            if state["n"] == 0:
                state["cpu0"] = time.thread_time()
            if real is None:
                json.loads(body)
            else:
                real.handle(body, user_id)
            state["n"] += 1
            if state["n"] == expected:
                cpu = time.thread_time() - state["cpu0"]
                # Every message must have been taken in: a dropped one costs less and would flatter us.
                taken = expected if real is None else status.accepted - len(prefill)
                print("cpu %.6f %d" % (cpu, taken), flush=True)
                stop.set()

    settings = RabbitSettings(amqp_server_url=host, amqp_port=port, amqp_exchange=exchange, heartbeat=120)
    thread = threading.Thread(target=Consumer(settings, Sink(), status, stop).run, daemon=True)  # type: ignore[arg-type]
    thread.start()
    while not status.connected:
        time.sleep(0.01)
    print("ready", flush=True)
    thread.join()


def run(kind: str, host: str, port: int, node: Any, bodies: List[bytes], caches: int) -> float:
    """CPU µs per message of one consumer ``kind`` over ``bodies``."""
    if kind == "blocking":
        return ingestion.run_bare(host, port, node, bodies)["cpu_us"]
    exchange = f"bench-floor-{uuidlib.uuid4().hex[:8]}"
    line, _, _ = ingestion.run_frozen([sys.executable, os.path.abspath(__file__), "--consumer", kind, host, str(port),
                                       exchange, str(len(bodies)), str(caches)], host, port, node, exchange, bodies)
    fields = line.split()
    if len(fields) > 2 and int(fields[2]) != len(bodies):
        raise RuntimeError(f"{kind}: {fields[2]} of {len(bodies)} heartbeats accepted")
    return float(fields[1]) / len(bodies) * 1e6


def bodies_for(caches: int, messages: int, stamp: float) -> List[bytes]:
    ips = common.addresses(caches, seed=5)
    return [common.heartbeat_body(f"n{i:06d}", ips[i], 2000.0 + k, stamp)
            for k in range(max(1, messages // caches)) for i in range(caches)]


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--consumer"]:
        kind, host, port, exchange, expected, caches = argv[1:7]
        if kind == "select":
            select_consumer(host, int(port), exchange, int(expected))
        else:
            shoal_consumer(host, int(port), exchange, int(expected), kind, bodies_for(int(caches), int(caches), time.time()))
        return 0
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--caches", type=int, default=10000, help="known caches")
    p.add_argument("--messages", type=int, default=100000, help="heartbeats per consumer")
    p.add_argument("--repeat", type=int, default=None, help="runs of each (default 5, 1 with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.caches, args.messages = 100, 600
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 5)
    runs: Dict[str, List[float]] = {k: [] for k in KINDS}
    loads: List[float] = []
    with common.broker() as (host, port, node):
        for _ in range(repeat):
            bodies = bodies_for(args.caches, args.messages, time.time())
            for kind in KINDS:   # interleaved, so each round's five saw the same machine
                runs[kind].append(run(kind, host, port, node, bodies, args.caches))
            loads.append(os.getloadavg()[0])
    med = {k: common.median(v) for k, v in runs.items()}
    floor = med["blocking"]
    rows = [[k, med[k], med[k] / floor, " ".join(f"{x:.1f}" for x in runs[k])] for k in KINDS]
    md = common.table(["consumer", "CPU µs per heartbeat (median)", "÷ blocking", "runs"], rows)
    md += (f"\n\n{args.messages:,} heartbeats of {args.caches:,} known caches per run, {repeat} rounds; "
           f"load average after each round: {' '.join(f'{x:.1f}' for x in loads)} ({os.cpu_count()} cores).")
    print("AMQP floor\n%s\n" % md)
    verdict = {"blocking_us": floor, "select_us": med["select"], "loop_us": med["shoal loop"],
               "sink_us": med["shoal sink"], "sink_nogc_us": med["shoal sink, no GC"]}
    common.save(args.out, "amqp_floor", {"runs": runs, "medians": med, "verdict": verdict, "loadavg": loads,
                                         "settings": vars(args), "quick": args.quick}, md)
    fig, ax = common.figure(1)
    ax.barh(KINDS[::-1], [med[k] for k in KINDS[::-1]])
    ax.set(xlabel="CPU µs per heartbeat (median)", title=f"Consumers of {args.caches:,} known caches' heartbeats")
    common.save_figure(fig, args.out, "amqp_floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
