#!/usr/bin/env python3
"""/nearest while the server drains a backlog (named only: ``run_all.py --only backlog``), by WSGI threads.

The soak (§6 of docs/performance.md) shows a server that, once behind on heartbeats, is behind
on requests too. This measures that state directly: a real shoal-server holding ``--caches``
caches is frozen (SIGSTOP) while ``--backlog`` heartbeats of known caches are queued for it,
then thawed; ``--clients`` closed-loop HTTP clients ask ``/nearest`` (keep-alive, client
addresses all over the world) until the server has consumed the whole backlog. The same
clients run for ``--idle`` seconds beforehand with nothing queued. Reported per
``[general] web_threads`` value: requests per second, p50 and p99 latency in both states, and
the heartbeats per second the backlog drained at.
"""
from __future__ import annotations

import http.client
import os
import signal
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import ingestion  # noqa: E402


def ask(port: int, client_ips: List[str], stop: threading.Event, latencies: List[float], errors: List[str]) -> None:
    """One closed-loop client: /nearest for the next address as soon as the last answer is read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    k = 0
    try:
        while not stop.is_set():
            start = time.perf_counter()
            conn.request("GET", f"/nearest?ip={client_ips[k % len(client_ips)]}")
            resp = conn.getresponse()
            if resp.status != 200 or not resp.read().startswith(b"{"):
                errors.append(f"/nearest answered {resp.status}")
                return
            latencies.append(time.perf_counter() - start)
            k += 1
    except (OSError, http.client.HTTPException) as err:
        errors.append(f"/nearest failed: {err}")
    finally:
        conn.close()


def load(port: int, clients: int, client_ips: List[str], until: Any) -> Dict[str, float]:
    """Run ``clients`` clients until ``until()`` returns; their rate and latency percentiles."""
    stop = threading.Event()
    per_client: List[List[float]] = [[] for _ in range(clients)]
    errors: List[str] = []
    threads = [threading.Thread(target=ask, args=(port, client_ips, stop, lat, errors)) for lat in per_client]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        until()
    finally:
        elapsed = time.perf_counter() - start
        stop.set()
        for t in threads:
            t.join()
    if errors:   # a client that stopped early would leave the others' figures looking better
        raise RuntimeError("; ".join(errors))
    lat = [x for part in per_client for x in part]
    return {"seconds": elapsed, "requests": len(lat), "rps": len(lat) / elapsed,
            "p50_ms": common.percentile(lat, 50) * 1000, "p99_ms": common.percentile(lat, 99) * 1000}


def measure(tmp: str, host: str, port: int, node: Any, threads: int, args: Any, ips: List[str],
            client_ips: List[str]) -> Dict[str, Any]:
    exchange = f"bench-backlog-{uuidlib.uuid4().hex[:8]}"
    srv = common.server(os.path.join(tmp, f"server-{threads}"), host, port, exchange,
                        cache={"cache_inactive_time": 3600, "cache_cleanse_interval": 600},
                        general={"web_threads": threads})
    try:
        stamp = time.time()
        ingestion.run_server(srv, host, port, node, exchange,
                             [common.heartbeat_body(f"b{i:06d}", ip, 1000.0 + i, stamp) for i, ip in enumerate(ips)])
        idle = load(srv.port, args.clients, client_ips, lambda: time.sleep(args.idle))
        stamp = time.time()
        backlog = [common.heartbeat_body(f"b{i % len(ips):06d}", ips[i % len(ips)], 2000.0 + i, stamp)
                   for i in range(args.backlog)]
        expected = srv.health()["accepted"] + len(backlog)
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            ingestion.publish(host, port, exchange, backlog)
            ingestion.wait_queued(node, len(backlog))
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)

        def drained() -> None:
            deadline = time.monotonic() + 600
            while srv.health()["accepted"] < expected:
                if time.monotonic() > deadline:
                    raise RuntimeError("the backlog was not consumed in 10 minutes")
                time.sleep(0.2)

        busy = load(srv.port, args.clients, client_ips, drained)
        if srv.health()["caches"] != len(ips):
            raise RuntimeError("the server lost caches while draining")
    finally:
        srv.stop()
    return {"web_threads": threads, "idle": idle, "backlog": busy, "drain_rate": len(backlog) / busy["seconds"],
            "loadavg": os.getloadavg()[0]}


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--caches", type=int, default=100000)
    p.add_argument("--backlog", type=int, default=200000, help="heartbeats queued while the server is frozen")
    p.add_argument("--clients", type=int, default=4, help="closed-loop /nearest clients")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of requests with nothing queued")
    p.add_argument("--threads", default="2,8,16", help="web_threads values, comma-separated")
    args = p.parse_args(argv)
    if args.quick:
        args.caches, args.backlog, args.idle, args.threads = 200, 2000, 1.0, "2"
    ips = common.addresses(args.caches, seed=5)
    client_ips = common.addresses(500, seed=99)
    load_start = os.getloadavg()[0]
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-backlog-") as tmp, common.broker() as (host, port, node):
        for threads in [int(x) for x in args.threads.split(",")]:
            rows.append(measure(tmp, host, port, node, threads, args, ips, client_ips))
            print(f"web_threads {threads}: idle {rows[-1]['idle']['rps']:.0f} req/s, "
                  f"draining {rows[-1]['backlog']['rps']:.0f} req/s", flush=True)
    table = []
    for r in rows:
        for phase in ("idle", "backlog"):
            m = r[phase]
            table.append([r["web_threads"], "nothing queued" if phase == "idle" else f"draining {args.backlog:,}",
                          m["rps"], m["p50_ms"], m["p99_ms"],
                          f"{r['drain_rate']:,.0f}" if phase == "backlog" else "–"])
    md = common.table(["web_threads", "broker holds", "/nearest req/s", "p50 ms", "p99 ms", "heartbeats/s consumed"],
                      table)
    md += (f"\n\n{args.caches:,} caches, {args.clients} closed-loop clients; load average {load_start:.1f} at the "
           f"start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores).")
    print("Backlog\n%s\n" % md)
    by_threads = {r["web_threads"]: r for r in rows}
    ref = by_threads.get(8, rows[0])
    verdict = {"idle_rps": ref["idle"]["rps"], "backlog_rps": ref["backlog"]["rps"], "drain_rate": ref["drain_rate"]}
    common.save(args.out, "backlog", {"rows": rows, "verdict": verdict, "settings": vars(args),
                                      "quick": args.quick}, md)
    fig, ax = common.figure(1)
    labels = [str(r["web_threads"]) for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["idle"]["rps"] for r in rows], width=0.4, label="nothing queued")
    ax.bar([x + 0.2 for x in xs], [r["backlog"]["rps"] for r in rows], width=0.4, label="draining a backlog")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set(xlabel="web_threads", ylabel="/nearest req/s", title=f"/nearest at {args.caches:,} caches, {args.clients} clients")
    ax.legend(fontsize=8)
    common.save_figure(fig, args.out, "backlog")
    return 0


if __name__ == "__main__":
    sys.exit(main())
