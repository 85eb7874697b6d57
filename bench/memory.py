#!/usr/bin/env python3
"""Memory: shoal-server RSS at 0, 10,000 and 100,000 caches, and /all and the status page at 10,000.

A real server process is filled through the broker with two heartbeats from each of its caches,
at distinct addresses all over the world (GeoIP places each); RSS is read from /proc after the
table settles.
Target: <= 2 KiB of RSS per cache beyond the empty server (the 2021 server: ~11 KiB).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from support.heartbeats import Publisher  # noqa: E402
from support.procs import http_get  # noqa: E402

TARGET_KIB = 2.0


def fill(srv: Any, host: str, port: int, exchange: str, ips: List[str], start: int, stop: int) -> None:
    """Two heartbeats from each new cache: the table as agents keep it, with the sink's template
    of each cache (repeats.py), which its second heartbeat records, counted."""
    for beat in range(2):
        accepted = srv.health()["accepted"]
        now = time.time()
        pub = Publisher(exchange, host, port)
        try:
            for i in range(start, stop):
                pub.send(common.heartbeat_body(f"m{i:06d}", ips[i], 100.0 + beat + i % 9000, now))
        finally:
            pub.close()
        srv.wait_for(lambda h: h.get("caches") == stop and h["accepted"] >= accepted + stop - start, timeout=600)


def settled_rss(pid: int) -> Dict[str, int]:
    """RSS once it stops moving (the consumer may still be freeing message buffers)."""
    last = -1
    for _ in range(20):
        time.sleep(0.5)
        rss = common.rss_kib(pid)
        if abs(rss - last) < 64:
            break
        last = rss
    return {"rss_kib": common.rss_kib(pid), "anon_kib": common.rss_kib(pid, "RssAnon"),
            "file_kib": common.rss_kib(pid, "RssFile")}


def page_times(url: str, repeat: int) -> Dict[str, float]:
    times, size = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        status, _, body = http_get(url, timeout=60)
        times.append(time.perf_counter() - t)
        assert status == 200, (url, status)
        size = len(body)
    return {"first_ms": times[0] * 1000, "median_ms": common.median(times[1:] or times) * 1000, "bytes": size}


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    sizes = [0, 100, 1000] if args.quick else [0, 10000, 100000]
    page_at = sizes[1]
    ips = common.addresses(max(sizes), seed=23)
    exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
    rows: List[Dict[str, Any]] = []
    pages: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-mem-") as tmp, common.broker() as (host, port, _):
        srv = common.server(os.path.join(tmp, "server"), host, port, exchange,
                            cache={"cache_inactive_time": 3600, "cache_cleanse_interval": 600})
        try:
            # Warm every code path once, so lazy imports and caches count in the baseline.
            for path in ("/nearest?ip=142.104.1.1", "/all", "/", "/healthz", "/wpad.dat"):
                http_get(srv.url + path)
            have = 0
            for n in sizes:
                if n > have:
                    fill(srv, host, port, exchange, ips, have, n)
                    have = n
                rows.append({"caches": n, **settled_rss(srv.proc.pid)})
                if n == page_at:
                    repeat = 3 if args.quick else 7
                    pages["all"] = page_times(srv.url + "/all", repeat)
                    pages["status"] = page_times(srv.url + "/", repeat)
                    pages["status_page_50"] = page_times(srv.url + "/?page=50", repeat)
                    pages["nearest"] = page_times(srv.url + "/nearest?ip=142.104.1.1", repeat)
                    pages["rss_after_pages_kib"] = common.rss_kib(srv.proc.pid)
        finally:
            srv.stop()
    base, base_anon = rows[0]["rss_kib"], rows[0]["anon_kib"]
    for r in rows:
        n = r["caches"] or float("nan")
        r["per_cache_kib"] = (r["rss_kib"] - base) / n
        r["anon_per_cache_kib"] = (r["anon_kib"] - base_anon) / n
    md = common.table(["caches", "RSS (MiB)", "of which file-backed (GeoIP mmap)", "anonymous (MiB)",
                       "KiB per cache beyond empty: anonymous", "all RSS"],
                      [[r["caches"], r["rss_kib"] / 1024, r["file_kib"] / 1024, r["anon_kib"] / 1024,
                        r["anon_per_cache_kib"], r["per_cache_kib"]] for r in rows])
    md_pages = common.table(["request at %d caches" % page_at, "first (ms)", "median after (ms)", "body (KiB)"],
                            [[name, v["first_ms"], v["median_ms"], v["bytes"] / 1024]
                             for name, v in pages.items() if isinstance(v, dict)])
    print("Server RSS\n%s\n\nPages\n%s\n" % (md, md_pages))
    verdict = {"anon_per_cache_kib_at_max": rows[-1]["anon_per_cache_kib"],
               "rss_per_cache_kib_at_max": rows[-1]["per_cache_kib"], "target_kib": TARGET_KIB}
    common.save(args.out, "memory", {"rows": rows, "pages": pages, "verdict": verdict, "quick": args.quick},
                "Server RSS\n\n%s\n\nPages (sequential requests, loopback)\n\n%s" % (md, md_pages))
    fig, axes = common.figure(2)
    axes[0].plot([r["caches"] for r in rows], [r["rss_kib"] / 1024 for r in rows], marker="o", label="RSS")
    axes[0].plot([r["caches"] for r in rows], [r["anon_kib"] / 1024 for r in rows], marker="s",
                 label="anonymous (without the GeoIP file's pages)")
    axes[0].plot([0, sizes[-1]], [base_anon / 1024, (base_anon + TARGET_KIB * sizes[-1]) / 1024], "r--",
                 label=f"target: {TARGET_KIB:g} KiB/cache")
    axes[0].plot([0, sizes[-1]], [base_anon / 1024, (base_anon + 11 * sizes[-1]) / 1024], ":", color="grey",
                 label="2021 server: ~11 KiB/cache")
    axes[0].set(xlabel="caches", ylabel="RSS (MiB)", title="Server memory")
    axes[0].legend(fontsize=8)
    names = [n for n, v in pages.items() if isinstance(v, dict)]
    axes[1].bar([i - 0.2 for i in range(len(names))], [pages[n]["first_ms"] for n in names], 0.4, label="first")
    axes[1].bar([i + 0.2 for i in range(len(names))], [pages[n]["median_ms"] for n in names], 0.4, label="median")
    axes[1].set_xticks(range(len(names)), names)
    axes[1].set(ylabel="ms", title=f"Requests at {page_at:,} caches")
    axes[1].legend(fontsize=8)
    common.save_figure(fig, args.out, "memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
