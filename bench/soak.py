#!/usr/bin/env python3
"""Soak (not in make bench's default run, nor CI): 100,000 agents at a 30 s interval and 200 /nearest req/s.

A real shoal-server on a private broker; one process publishes each simulated agent's
heartbeat once per interval, evenly spread (3,333/s at the defaults); another sends /nearest
requests open-loop at a fixed rate over keep-alive connections, for client addresses all over
the world, and measures each latency from its scheduled start (so a stalled server cannot
hide queued requests). Every 5 s the server's RSS, CPU time and counters are sampled. At the
end the server is given up to ``--drain`` seconds to consume what is still queued, then the
published count is held against the consumed one and the table's size against the agents.
Passes when no request failed and nothing was lost.

    .venv/bin/python bench/soak.py                               # 10 minutes, the issue's load
    .venv/bin/python bench/run_all.py --only soak                # the same, then docs/performance.md
    .venv/bin/python bench/soak.py --agents 10000 --minutes 2    # a lighter run
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
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SAMPLE_EVERY = 5.0


def agent_bodies(count: int, ips: List[str]) -> Callable[[int], bytes]:
    """Heartbeat ``k`` of the stream: agent ``k % count``, with a fresh load and timestamp."""
    rnd = random.Random(3)
    return lambda k: common.heartbeat_body(f"soak{k % count:06d}", ips[k % count], rnd.uniform(0, 60000), time.time())


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
    p.add_argument("--agents", type=int, default=100000)
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=200.0, help="/nearest requests per second")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--drain", type=float, default=120.0, help="seconds allowed to consume the backlog at the end")
    args = p.parse_args(argv)
    if args.quick:
        args.agents, args.interval, args.rate, args.minutes = 200, 5.0, 20.0, 10 / 60
    seconds = args.minutes * 60
    ips = common.addresses(args.agents, seed=31)
    client_ips = common.addresses(500, seed=99)
    exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("fork")
    load = os.getloadavg()[0]
    samples: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-soak-") as tmp, common.broker() as (host, port, _):
        srv = common.server(os.path.join(tmp, "server"), host, port, exchange,
                            cache={"cache_inactive_time": max(180.0, 3 * args.interval), "cache_cleanse_interval": 15})
        try:
            sent = ctx.Value("l", 0)
            out = ctx.Queue()
            rate = args.agents / args.interval
            pub = ctx.Process(target=common.publish_paced, args=(host, port, exchange, rate, seconds,
                                                                 agent_bodies(args.agents, ips), sent))
            req = ctx.Process(target=requests, args=(srv.port, args.rate, seconds, client_ips, out))
            pub.start()
            req.start()
            t0, cpu0 = time.monotonic(), common.cpu_seconds(srv.proc.pid)
            # The request process hands its rows over only at the end (a queue holds it up until read).
            while pub.is_alive() or time.monotonic() - t0 < seconds + 1.0:
                time.sleep(SAMPLE_EVERY if time.monotonic() - t0 > SAMPLE_EVERY else 1.0)
                health = srv.health()
                samples.append({"t": time.monotonic() - t0, "rss_kib": common.rss_kib(srv.proc.pid),
                                "anon_kib": common.rss_kib(srv.proc.pid, "RssAnon"), "caches": health["caches"],
                                "accepted": health["accepted"], "dropped": sum(health["dropped"].values()),
                                "sent": sent.value, "cpu_s": common.cpu_seconds(srv.proc.pid) - cpu0})
                if time.monotonic() - t0 > seconds + 120:
                    raise RuntimeError("soak did not finish in time")
            rows = out.get(timeout=120)
            req.join(30)
            pub.join(30)
            wall, cpu = time.monotonic() - t0, common.cpu_seconds(srv.proc.pid) - cpu0
            drain_start = time.monotonic()
            while True:   # what the broker still holds for the server, consumed before counting
                final = srv.health()
                if final["accepted"] + sum(final["dropped"].values()) >= sent.value:
                    break
                if time.monotonic() - drain_start > args.drain:
                    break
                time.sleep(0.5)
            drain = time.monotonic() - drain_start
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
    published, accepted, dropped = sent.value, final["accepted"], sum(final["dropped"].values())
    missing = max(0, min(args.agents, published) - final["caches"])   # agents heard from, not in the table
    summary = {
        "requests": len(rows), "errors": errors, "achieved_rps": len(rows) / seconds,
        "p50_ms": common.percentile(lat, 50) * 1000, "p99_ms": common.percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
        "heartbeats_sent": published, "heartbeat_rate": published / seconds, "accepted": accepted,
        "dropped": dropped, "dropped_by_reason": final["dropped"], "caches_end": final["caches"], "missing_from_table": missing,
        "lost": max(0, published - accepted) + missing, "drain_s": drain,
        "server_cpu_cores": cpu / wall, "server_cpu_us_per_heartbeat": 1e6 * cpu / max(1, published),
        "rss_start_mib": samples[0]["rss_kib"] / 1024 if samples else float("nan"),
        "rss_end_mib": samples[-1]["rss_kib"] / 1024 if samples else float("nan"),
        "rss_max_mib": max(s["rss_kib"] for s in samples) / 1024 if samples else float("nan"),
        "loadavg": [load, os.getloadavg()[0]],
    }
    md = common.table(
        ["agents", "heartbeats/s", "minutes", "published", "accepted", "dropped (invalid)", "not in table",
         "backlog drained in s", "/nearest req", "errors", "p50 ms", "p99 ms", "max ms", "server CPU (cores)",
         "RSS start → end (max) MiB"],
        [[args.agents, summary["heartbeat_rate"], args.minutes, published, accepted, dropped, missing, drain,
          f"{summary['requests']:,} ({summary['achieved_rps']:.0f}/s)", errors, summary["p50_ms"], summary["p99_ms"],
          summary["max_ms"], summary["server_cpu_cores"],
          "%.0f → %.0f (%.0f)" % (summary["rss_start_mib"], summary["rss_end_mib"], summary["rss_max_mib"])]])
    md += (f"\n\nOpen loop: {args.rate:.0f} /nearest req/s, {args.agents / args.interval:,.0f} heartbeats/s "
           f"({args.agents:,} agents every {args.interval:.0f} s); load average {load:.1f} at the start, "
           f"{summary['loadavg'][1]:.1f} at the end ({os.cpu_count()} cores).")
    print("Soak\n%s\n" % md)
    ok = errors == 0 and summary["lost"] == 0
    verdict = {k: summary[k] for k in ("heartbeat_rate", "lost", "errors", "p99_ms")}
    common.save(args.out, "soak", {"summary": summary, "windows": windows, "samples": samples, "ok": ok,
                                   "verdict": verdict, "settings": vars(args), "quick": args.quick}, md)
    fig, axes = common.figure(2)
    axes[0].plot([w["t"] for w in windows], [w["p99_ms"] for w in windows], label="p99")
    axes[0].plot([w["t"] for w in windows], [w["p50_ms"] for w in windows], label="p50")
    axes[0].set(xlabel="s", ylabel="ms", title=f"/nearest latency at {args.rate:.0f} req/s (per {SAMPLE_EVERY:.0f} s)")
    axes[0].legend(fontsize=8)
    axes[1].plot([s["t"] for s in samples], [s["rss_kib"] / 1024 for s in samples], label="RSS")
    axes[1].plot([s["t"] for s in samples], [s["anon_kib"] / 1024 for s in samples], label="anonymous")
    axes[1].plot([s["t"] for s in samples], [100 * s["cpu_s"] / max(s["t"], 1e-9) for s in samples],
                 label="server CPU, % of a core (cumulative)")
    axes[1].set(xlabel="s", ylabel="MiB / %", title=f"Server memory, {args.agents:,} agents every {args.interval:.0f} s")
    axes[1].legend(fontsize=8)
    common.save_figure(fig, args.out, "soak")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
