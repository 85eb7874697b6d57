#!/usr/bin/env python3
"""Soak (not part of make bench or CI): 10,000 agents at a 30 s interval and 200 /nearest requests/s.

A real shoal-server on a private broker; one process publishes each simulated agent's
heartbeat once per interval, evenly spread; another sends /nearest requests open-loop at a
fixed rate over keep-alive connections, for client addresses all over the world, and
measures each latency from its scheduled start (so a stalled server cannot hide queued
requests). Every 5 s the server's RSS and counters are sampled. Passes when nothing failed.
"""
from __future__ import annotations

import http.client
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SAMPLE_EVERY = 5.0


def agents(host: str, port: int, exchange: str, count: int, interval: float, seconds: float, ips: List[str],
           sent: Any) -> None:
    """Publish one heartbeat per agent per ``interval``, spread evenly, for ``seconds``."""
    from support.heartbeats import Publisher
    pub = Publisher(exchange, host, port)
    rnd = random.Random(3)
    start = time.monotonic()
    k = 0
    try:
        while True:
            due = start + k * interval / count
            if due - start >= seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            i = k % count
            pub.send(common.heartbeat_body(f"soak{i:05d}", ips[i], rnd.uniform(0, 60000), time.time()))
            k += 1
            if k % 100 == 0:
                sent.value = k
    finally:
        sent.value = k
        pub.close()


def requests(port: int, rate: float, seconds: float, client_ips: List[str], out: Any, workers: int = 8) -> None:
    """Open-loop GETs of /nearest at ``rate`` per second; put (t, latency s, ok) rows on ``out``."""
    start = time.monotonic() + 0.5
    total = int(rate * seconds)
    lock = threading.Lock()
    state = {"next": 0}
    rows: List[tuple] = []

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while True:
            with lock:
                k = state["next"]
                state["next"] += 1
            if k >= total:
                break
            due = start + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ok = False
            try:
                conn.request("GET", f"/nearest?ip={client_ips[k % len(client_ips)]}")
                resp = conn.getresponse()
                ok = resp.status == 200 and resp.read().startswith(b"{")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with lock:
                rows.append((due - start, time.monotonic() - due, ok))
        conn.close()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(rows)


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=10000)
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=200.0, help="/nearest requests per second")
    p.add_argument("--minutes", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.quick:
        args.agents, args.interval, args.rate, args.minutes = 200, 5.0, 20.0, 10 / 60
    seconds = args.minutes * 60
    ips = common.addresses(args.agents, seed=31)
    client_ips = common.addresses(500, seed=99)
    exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("fork")
    samples: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-soak-") as tmp, common.broker() as (host, port, _):
        srv = common.server(os.path.join(tmp, "server"), host, port, exchange,
                            cache={"cache_inactive_time": max(180.0, 3 * args.interval), "cache_cleanse_interval": 15})
        try:
            sent = ctx.Value("l", 0)
            out = ctx.Queue()
            pub = ctx.Process(target=agents, args=(host, port, exchange, args.agents, args.interval, seconds, ips,
                                                    sent))
            req = ctx.Process(target=requests, args=(srv.port, args.rate, seconds, client_ips, out))
            pub.start()
            req.start()
            t0 = time.monotonic()
            # The request process hands its rows over only at the end (a queue holds it up until read).
            while pub.is_alive() or time.monotonic() - t0 < seconds + 1.0:
                time.sleep(SAMPLE_EVERY if time.monotonic() - t0 > SAMPLE_EVERY else 1.0)
                health = srv.health()
                samples.append({"t": time.monotonic() - t0, "rss_kib": common.rss_kib(srv.proc.pid),
                                "anon_kib": common.rss_kib(srv.proc.pid, "RssAnon"), "caches": health["caches"],
                                "accepted": health["accepted"], "dropped": sum(health["dropped"].values()),
                                "sent": sent.value})
                if time.monotonic() - t0 > seconds + 120:
                    raise RuntimeError("soak did not finish in time")
            rows = out.get(timeout=120)
            req.join(30)
            pub.join(30)
            time.sleep(1.0)
            final = srv.health()
        finally:
            srv.stop()
    lat = [r[1] for r in rows]
    errors = sum(1 for r in rows if not r[2])
    windows = []
    for w in range(int(seconds // SAMPLE_EVERY) + 1):
        sel = [r[1] for r in rows if w * SAMPLE_EVERY <= r[0] < (w + 1) * SAMPLE_EVERY]
        if sel:
            windows.append({"t": w * SAMPLE_EVERY, "p50_ms": common.percentile(sel, 50) * 1000,
                            "p99_ms": common.percentile(sel, 99) * 1000, "n": len(sel)})
    summary = {
        "requests": len(rows), "errors": errors, "p50_ms": common.percentile(lat, 50) * 1000,
        "p99_ms": common.percentile(lat, 99) * 1000, "max_ms": max(lat) * 1000 if lat else float("nan"),
        "achieved_rps": len(rows) / seconds, "heartbeats_sent": sent.value, "accepted": final["accepted"],
        "dropped": sum(final["dropped"].values()), "caches_end": final["caches"],
        "rss_start_mib": samples[0]["rss_kib"] / 1024 if samples else float("nan"),
        "rss_end_mib": samples[-1]["rss_kib"] / 1024 if samples else float("nan"),
        "rss_max_mib": max(s["rss_kib"] for s in samples) / 1024 if samples else float("nan"),
    }
    md = common.table(["agents", "interval s", "minutes", "/nearest req", "errors", "p50 ms", "p99 ms", "max ms",
                       "heartbeats sent", "accepted", "dropped", "RSS start → end (max) MiB"],
                      [[args.agents, args.interval, args.minutes, summary["requests"], errors, summary["p50_ms"],
                        summary["p99_ms"], summary["max_ms"], summary["heartbeats_sent"], summary["accepted"],
                        summary["dropped"], "%.0f → %.0f (%.0f)" % (summary["rss_start_mib"], summary["rss_end_mib"],
                                                                     summary["rss_max_mib"])]])
    print("Soak\n%s\n" % md)
    ok = errors == 0 and summary["dropped"] == 0 and summary["accepted"] == summary["heartbeats_sent"]
    common.save(args.out, "soak", {"summary": summary, "windows": windows, "samples": samples, "ok": ok,
                                   "settings": vars(args), "quick": args.quick}, md)
    fig, axes = common.figure(2)
    axes[0].plot([w["t"] for w in windows], [w["p99_ms"] for w in windows], label="p99")
    axes[0].plot([w["t"] for w in windows], [w["p50_ms"] for w in windows], label="p50")
    axes[0].set(xlabel="s", ylabel="ms", title=f"/nearest latency at {args.rate:.0f} req/s (per {SAMPLE_EVERY:.0f} s)")
    axes[0].legend(fontsize=8)
    axes[1].plot([s["t"] for s in samples], [s["rss_kib"] / 1024 for s in samples], label="RSS")
    axes[1].plot([s["t"] for s in samples], [s["anon_kib"] / 1024 for s in samples], label="anonymous")
    axes[1].set(xlabel="s", ylabel="MiB", title=f"Server memory, {args.agents:,} agents every {args.interval:.0f} s")
    axes[1].legend(fontsize=8)
    common.save_figure(fig, args.out, "soak")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
