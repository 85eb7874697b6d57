#!/usr/bin/env python3
"""Ranking: what /nearest costs as the table grows, in-process and over HTTP, next to /healthz.

In-process: the server's ranking path (``rank_table``: live table columns, spatial index,
RankIndex) for a located client, right after a table change, for an unplaced client, and the
plain Python loop the ranking used before (one ``cost()`` per cache) for comparison; plus the
whole WSGI app called directly. Over HTTP: wrk against a real shoal-server (cheroot) filled
through the broker, and against Apache mod_wsgi when the deployment harness (tests/deploy) is
there; at 100,000 caches also while a publisher feeds 333 heartbeats/s (10,000 agents at 30 s)
into the server through the broker, /nearest and /healthz measured under that same stream.
Targets: in-process <= 1 ms at 1,000 caches, <= 20 ms at 100,000 and <= 5 ms at 1,000,000;
/nearest at 10,000 caches <= 3x /healthz over HTTP, at 100,000 under churn <= 2x (p50).
"""
from __future__ import annotations

import heapq
import io
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

from shoal_server.geo import Location  # noqa: E402
from shoal_server.heartbeat import Heartbeat  # noqa: E402
from shoal_server.ranking import Weights, _angle, cost, rank_table  # noqa: E402
from shoal_server.table import CacheTable  # noqa: E402

CLIENT_IP = "142.104.1.1"          # Victoria, BC: GeoLite2 places it
TARGETS = {1000: 1.0, 100000: 20.0, 1000000: 5.0}  # in-process ms
CHURN_SIZE, CHURN_RATE = 100000, 333.0   # caches, heartbeats/s: 10,000 agents at 30 s
PLAIN_MAX = 100000                       # the plain Python loop is not run on larger tables (~3 s each)


def synthetic_table(n: int, seed: int = 7) -> CacheTable:
    """``n`` caches at 2,000 sites spread over the globe, with random loads.

    The spatial index is built in the calling thread (the server builds it in a background
    thread), so that the figures do not depend on when that thread got a core.
    """
    rnd = random.Random(seed)
    sites = [Location(rnd.uniform(-60, 70), rnd.uniform(-180, 180)) for _ in range(min(n, 2000))]
    table = CacheTable(schedule=lambda job: job())
    for i in range(n):
        site = sites[i % len(sites)]
        hb = Heartbeat(uuid=f"c{i:06d}", hostname=f"squid{i}.example.org", squid_port=3128,
                       public_ip=f"{20 + i // 65536 % 200}.{i // 256 % 256}.{i % 256}.{7 + i % 200}",
                       private_ip=None, external_ip=None, load=rnd.uniform(0, 100000), max_load=122000.0,
                       timestamp=0.0, drift=0.0, verified=rnd.random() < 0.5, upstream="both",
                       cache_type="squid", agent_version=None, user_id=None)
        table.upsert(hb, 1000.0, lambda ip, site=site: site)
    return table


def plain_python_rank(entries: Any, client: Location, weights: Weights, n: int) -> list:
    """The ranking loop as it was before the columns: one cost() per cache, then a heap."""
    u = client.unit_vector
    scored = []
    for e in entries:
        angle = _angle(u, e.unit)
        scored.append((cost(angle, e.hb.load, e.hb.max_load, weights), angle, e))
    return heapq.nsmallest(n, scored, key=lambda t: (t[0], t[1], t[2].hb.uuid))


def wsgi_app(table: CacheTable) -> Any:
    """The server's WSGI callable around ``table``, as ShoalService builds it."""
    import web
    from shoal_server.config import ServerConfig
    from shoal_server.consumer import ConsumerStatus
    from shoal_server.geo import open_locator
    from shoal_server.webapp import create_app
    web.config.debug = False
    status = ConsumerStatus()
    status.set_connected(True)
    return create_app(table, open_locator(""), ServerConfig(), status).wsgifunc()


def call_wsgi(app: Any, path: str, query: str = "") -> bytes:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(b""), "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "localhost"}
    status: List[str] = []
    body = b"".join(app(environ, lambda s, h, exc=None: status.append(s)))
    assert status and status[0].startswith("200"), (path, status)
    return body


def in_process(sizes: List[int], quick: bool) -> List[Dict[str, Any]]:
    weights = Weights()
    client = Location(48.43, -123.37)
    rows = []
    for n in sizes:
        table = synthetic_table(n)
        reps = 5 if quick else max(15, min(300, 3_000_000 // max(n, 1)))
        entries = table.snapshot()
        cpu = time.thread_time
        static = common.timed(lambda: rank_table(table, client, None, weights, 5), reps, cpu)
        static_wall = common.timed(lambda: rank_table(table, client, None, weights, 5), reps)
        hb = entries[0].hb

        def after_change() -> None:
            table.upsert(hb, 1000.0, lambda ip: None)
            rank_table(table, client, None, weights, 5)
        changed = common.timed(after_change, reps, cpu)
        upsert_only = common.timed(lambda: table.upsert(hb, 1000.0, lambda ip: None), reps, cpu)
        unplaced = common.timed(lambda: rank_table(table, None, "8.8.8.8", weights, 5), reps, cpu)
        verified = common.timed(lambda: rank_table(table, client, None, weights, 5, True), reps, cpu)
        plain = common.timed(lambda: plain_python_rank(table.snapshot(), client, weights, 5), max(3, reps // 10),
                             cpu) if n <= PLAIN_MAX else []
        app = wsgi_app(table)
        query = f"ip={CLIENT_IP}"
        wsgi_nearest = common.timed(lambda: call_wsgi(app, "/nearest", query), reps, cpu)
        wsgi_health = common.timed(lambda: call_wsgi(app, "/healthz"), reps, cpu)
        index = table.index_stats()
        ms = lambda xs: common.median(xs) * 1000.0  # noqa: E731
        rows.append({
            "caches": n, "rank_ms": ms(static), "rank_p90_ms": common.percentile(static, 90) * 1000.0,
            "rank_wall_ms": ms(static_wall), "rank_wall_p90_ms": common.percentile(static_wall, 90) * 1000.0,
            "rank_after_change_ms": max(0.0, ms(changed) - ms(upsert_only)), "unplaced_ms": ms(unplaced),
            "verified_ms": ms(verified), "plain_python_ms": ms(plain), "wsgi_nearest_ms": ms(wsgi_nearest),
            "wsgi_healthz_ms": ms(wsgi_health), "repeats": reps, "index_cells": index["cells"],
            "index_bytes_per_cache": index["bytes"] / max(n, 1), "unindexed": index["unindexed"],
            "loadavg": os.getloadavg()[0],
        })
    return rows


class ChurnPublisher:
    """A thread publishing ``rate`` heartbeats/s that refresh known caches with new loads, until stopped."""

    def __init__(self, host: str, port: int, exchange: str, ips: List[str], rate: float) -> None:
        self.args, self.ips, self.rate = (host, port, exchange), ips, rate
        self.sent, self.elapsed = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def __enter__(self) -> "ChurnPublisher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def achieved(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    def _run(self) -> None:
        from support.heartbeats import Publisher
        pub = Publisher(self.args[2], self.args[0], self.args[1])
        rnd = random.Random(5)
        start = time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate)
                while self.sent < due:   # paced by the clock: a late thread catches up
                    i = rnd.randrange(len(self.ips))
                    pub.send(common.heartbeat_body(f"h{i:06d}", self.ips[i], rnd.uniform(0, 120000), time.time()))
                    self.sent += 1
                self.elapsed = time.monotonic() - start
                time.sleep(0.003)
        finally:
            pub.close()


def publish(host: str, port: int, exchange: str, bodies: List[bytes]) -> None:
    from support.heartbeats import Publisher
    pub = Publisher(exchange, host, port)
    try:
        for body in bodies:
            pub.send(body)
    finally:
        pub.close()


def start_apache(host: str, port: int, exchange: str) -> Any:
    """shoal-server under Apache mod_wsgi with the shipped conf/shoal.conf (tests/deploy's harness), or None."""
    try:
        sys.path.insert(0, os.path.join(common.REPO, "tests", "deploy"))
        from test_deploy_apache import APACHE, MODULES, Apache, wait_until
        from support.procs import write_ini
    except ImportError as err:
        print(f"(no Apache benchmark: {err})")
        return None
    if not (os.path.exists(APACHE) and os.path.exists(f"{MODULES}/mod_wsgi.so")):
        print("(no Apache benchmark: apache2 with mod_wsgi is not installed)")
        return None
    root = tempfile.mkdtemp(prefix="shoal-bench-apache-")
    os.chmod(root, 0o755)  # Apache's workers (www-data) must reach the daemon socket and the files
    config = os.path.join(root, "shoal_server.conf")
    write_ini(config, {"general": {}, "cache": {"cache_inactive_time": 3600, "cache_cleanse_interval": 60},
                       "rabbitmq": {"amqp_server_url": host, "amqp_port": port, "amqp_exchange": exchange,
                                    "amqp_username": "guest", "amqp_password": "guest", "heartbeat": 120},
                       "logging": {"logging_level": "warning"}})
    os.chmod(config, 0o644)
    apache = Apache(root, config)
    apache.bench_root = root
    apache.start()
    try:
        wait_until(lambda: apache.get_json("/healthz").get("consumer_connected"), 60, "Apache's consumer connected")
    except BaseException:
        stop_apache(apache)
        raise
    return apache


def stop_apache(apache: Any) -> None:
    import shutil
    apache.stop()
    shutil.rmtree(apache.bench_root, ignore_errors=True)


def over_http(sizes: List[int], quick: bool, seconds: float, conns: List[int],
              apache_too: bool = True) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="shoal-bench-rank-") as tmp, common.broker() as (host, port, _):
        srv = common.server(os.path.join(tmp, "server"), host, port, exchange,
                            cache={"cache_inactive_time": 3600, "cache_cleanse_interval": 60})
        apache = None if quick or not apache_too else start_apache(host, port, exchange)
        servers = [("cheroot", srv)] + ([("apache mod_wsgi", apache)] if apache else [])
        try:
            ips = common.addresses(max(sizes), seed=11)
            have = 0
            for n in sizes:
                now = time.time()
                publish(host, port, exchange, [common.heartbeat_body(f"h{i:06d}", ips[i], 1000.0 + i % 5000, now)
                                               for i in range(have, n)])
                for _, server in servers:
                    deadline = time.monotonic() + 180
                    while server.get_json("/healthz").get("caches") != n:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{server.url} did not reach {n} caches")
                        time.sleep(0.1)
                have = n
                if n == (sizes[-1] if quick else CHURN_SIZE):   # the smoke run, too, so that this cannot rot
                    rows += under_churn(srv, (host, port, exchange), ips[:n], seconds, conns, 1 if quick else 5)
                for name, server in servers:
                    for c in conns:
                        health = common.wrk(server.url + "/healthz", c, seconds)
                        near = common.wrk(server.url + f"/nearest?ip={CLIENT_IP}", c, seconds)
                        rows.append({"server": name, "caches": n, "connections": c,
                                     "healthz_rps": health["rps"], "nearest_rps": near["rps"],
                                     "healthz_p50_ms": health["p50_ms"], "nearest_p50_ms": near["p50_ms"],
                                     "healthz_p99_ms": health["p99_ms"], "nearest_p99_ms": near["p99_ms"],
                                     "ratio_p50": near["p50_ms"] / health["p50_ms"],
                                     "ratio_rps": health["rps"] / near["rps"],
                                     "errors": health["errors"] + near["errors"]})
        finally:
            srv.stop()
            if apache is not None:
                stop_apache(apache)
    return rows


def under_churn(srv: Any, broker: Any, ips: List[str], seconds: float, conns: List[int],
                rounds: int = 5) -> List[Dict[str, Any]]:
    """/healthz and /nearest with CHURN_RATE heartbeats/s landing on the server throughout.

    ``rounds`` alternating wrk runs of each per connection count; the row gives the medians of
    their p50s (and rates), so one unlucky run on a shared machine does not decide the ratio.
    """
    rows: List[Dict[str, Any]] = []
    accepted = lambda: srv.get_json("/healthz").get("accepted", 0)  # noqa: E731
    with ChurnPublisher(*broker, ips, CHURN_RATE) as churn:
        time.sleep(min(2.0, seconds))   # the stream is flowing before anything is measured
        for c in conns:
            before, t0 = accepted(), time.monotonic()
            runs = [(common.wrk(srv.url + "/healthz", c, seconds),
                     common.wrk(srv.url + f"/nearest?ip={CLIENT_IP}", c, seconds)) for _ in range(rounds)]
            rate = (accepted() - before) / (time.monotonic() - t0)
            med = lambda side, key: common.median([run[side][key] for run in runs])  # noqa: E731
            rows.append({"server": "cheroot, 333 hb/s", "caches": len(ips), "connections": c,
                         "healthz_rps": med(0, "rps"), "nearest_rps": med(1, "rps"),
                         "healthz_p50_ms": med(0, "p50_ms"), "nearest_p50_ms": med(1, "p50_ms"),
                         "healthz_p99_ms": med(0, "p99_ms"), "nearest_p99_ms": med(1, "p99_ms"),
                         "ratio_p50": med(1, "p50_ms") / med(0, "p50_ms"),
                         "ratio_p50_rounds": [n["p50_ms"] / h["p50_ms"] for h, n in runs],
                         "ratio_rps": med(0, "rps") / med(1, "rps"),
                         "errors": sum(h["errors"] + n["errors"] for h, n in runs), "heartbeats_per_s": rate,
                         "rounds": rounds, "loadavg": os.getloadavg()[0]})
        rows[-1]["publisher_rate"] = churn.achieved
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=common.WRK_SECONDS, help="duration of each wrk run")
    p.add_argument("--sizes", type=int, nargs="+", help="table sizes in-process")
    p.add_argument("--http-sizes", type=int, nargs="+", help="table sizes over HTTP")
    p.add_argument("--no-http", action="store_true")
    p.add_argument("--no-apache", action="store_true", help="over HTTP, the cheroot server only")
    args = p.parse_args(argv)
    sizes = args.sizes or ([10, 100] if args.quick else [10, 100, 1000, 10000, 100000, 1000000])
    local = in_process(sizes, args.quick)
    md_local = common.table(
        ["caches", "rank", "p90", "rank, wall", "wall p90", "after a change", "unplaced client", "verified only",
         "plain Python loop", "WSGI /nearest", "WSGI /healthz", "index B/cache", "load avg"],
        [[r["caches"], r["rank_ms"], r["rank_p90_ms"], r["rank_wall_ms"], r["rank_wall_p90_ms"],
          r["rank_after_change_ms"], r["unplaced_ms"],
          r["verified_ms"], r["plain_python_ms"], r["wsgi_nearest_ms"], r["wsgi_healthz_ms"],
          r["index_bytes_per_cache"], r["loadavg"]] for r in local])
    print("In-process ranking, n=5, median ms of thread CPU time (wall where marked)\n" + md_local + "\n")
    http: List[Dict[str, Any]] = []
    md_http = ""
    if not args.no_http and common.have("wrk"):
        http_sizes = args.http_sizes or ([10] if args.quick else [10, 1000, 10000, 100000])
        http = over_http(http_sizes, args.quick, 1.0 if args.quick else args.seconds, [1, 8], not args.no_apache)
        md_http = common.table(
            ["server", "caches", "conns", "/healthz req/s", "/nearest req/s", "/healthz p50 ms", "/nearest p50 ms",
             "/nearest p99 ms", "p50 ratio", "errors", "heartbeats/s", "load avg"],
            [[r["server"], r["caches"], r["connections"], r["healthz_rps"], r["nearest_rps"], r["healthz_p50_ms"],
              r["nearest_p50_ms"], r["nearest_p99_ms"], r["ratio_p50"], r["errors"], r.get("heartbeats_per_s", "–"),
              r.get("loadavg", "–")] for r in http])
        print("Over HTTP (wrk, loopback)\n" + md_http + "\n")
    verdict = {f"in_process_{n}": next((r["rank_ms"] for r in local if r["caches"] == n), None) for n in TARGETS}
    at10k = [r for r in http if r["caches"] == 10000 and r["server"] == "cheroot"]
    apache10k = [r for r in http if r["caches"] == 10000 and r["server"] != "cheroot"]
    verdict["apache_ratio_10k_p50"] = max((r["ratio_p50"] for r in apache10k), default=None)
    verdict["http_ratio_10k_p50"] = max((r["ratio_p50"] for r in at10k), default=None)
    verdict["http_ratio_10k_rps"] = max((r["ratio_rps"] for r in at10k), default=None)
    churn = [r for r in http if r["caches"] == CHURN_SIZE and "hb/s" in r["server"]]
    verdict["http_ratio_100k_churn_p50"] = max((r["ratio_p50"] for r in churn), default=None)
    md = "In-process ranking, n=5, median ms of thread CPU time (wall where marked)\n\n" + md_local + ("\n\nOver HTTP (wrk, loopback)\n\n" + md_http if md_http else "")
    common.save(args.out, "ranking", {"in_process": local, "http": http, "verdict": verdict, "quick": args.quick}, md)
    plot(args.out, local, http)
    return 0


def plot(out: str, local: List[Dict[str, Any]], http: List[Dict[str, Any]]) -> None:
    fig, axes = common.figure(2)
    ax = axes[0]
    xs = [r["caches"] for r in local]
    for key, label in (("rank_ms", "ranking (columns)"), ("rank_after_change_ms", "after a table change"),
                       ("unplaced_ms", "unplaced client"), ("plain_python_ms", "plain Python loop (before)"),
                       ("wsgi_nearest_ms", "WSGI /nearest, in-process")):
        ax.plot(xs, [r[key] for r in local], marker="o", label=label)
    for n, ms in TARGETS.items():
        ax.plot([n], [ms], marker="_", markersize=25, color="red")
    ax.set(xscale="log", yscale="log", xlabel="caches", ylabel="ms (median)", title="In-process (red: targets)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for server in sorted({r["server"] for r in http}):
        for c in sorted({r["connections"] for r in http}):
            sel = [r for r in http if r["server"] == server and r["connections"] == c]
            ax.plot([r["caches"] for r in sel], [r["nearest_p50_ms"] for r in sel], marker="o",
                    label=f"{server} /nearest, {c} conn")
            ax.plot([r["caches"] for r in sel], [r["healthz_p50_ms"] for r in sel], marker="x", linestyle="--",
                    label=f"{server} /healthz, {c} conn")
    ax.set(xscale="log", yscale="log", xlabel="caches", ylabel="p50 latency, ms", title="Over HTTP (wrk)")
    if http:
        ax.legend(fontsize=7)
    common.save_figure(fig, out, "ranking")


if __name__ == "__main__":
    sys.exit(main())
