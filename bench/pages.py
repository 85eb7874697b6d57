"""Status page `/` and `/all` at N caches, in-process and over HTTP next to `/healthz`.

In-process: the server's own handlers (``Shoal.status_page``, ``Shoal.all``) on a table of N
caches spread over ~N/20 places; "after a change" means one heartbeat of a known cache was
upserted just before the request (what nearly every request sees while agents talk). Medians
of ``--repeat`` runs each (>= 5); the load average is noted.

Over HTTP: a real shoal-server (the built-in front) filled through a broker with caches GeoIP
places; wrk (1 connection) alternates ``/healthz`` and the page ``--rounds`` times, and the
ratio of their p50 latencies is taken per round (medians of the rounds, and their spread).
``/`` at 1,000 caches with no traffic; ``/all`` and ``/`` at 10,000 caches while a publisher
drives ``--churn`` heartbeats/s of known caches through the broker into the server (the rate
the server really accepted is measured from its ``/healthz`` counter and reported).
Targets: ``/`` <= 3x ``/healthz`` at 1,000; ``/all`` <= 10x ``/healthz`` at 10,000 under >= 300 changes/s.

    .venv/bin/python bench/pages.py              # 10,000 caches in-process, and the HTTP figures
    .venv/bin/python bench/pages.py --caches 1000 10000 100000
"""
from __future__ import annotations

import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from shoal_server.config import ServerConfig  # noqa: E402
from shoal_server.consumer import ConsumerStatus  # noqa: E402
from shoal_server.geo import Location  # noqa: E402
from shoal_server.heartbeat import Heartbeat  # noqa: E402
from shoal_server.render import cache_record, to_json  # noqa: E402
from shoal_server.statuspage import PageRequest, render_status  # noqa: E402
from shoal_server.table import CacheTable  # noqa: E402
from shoal_server.webapp import Shoal  # noqa: E402

TARGETS = {"status_http_ratio_1k_p50": 3.0, "all_http_ratio_10k_churn_p50": 10.0, "churn_rate_min": 300.0,
           "status_steady_10k_ms": 5.0, "status_first_10k_ms": 30.0}


class _NoLocator:
    def locate(self, address: str) -> Optional[Location]:
        return None

    def close(self) -> None:
        pass


def heartbeat(i: int, load: float, now: float) -> Heartbeat:
    return Heartbeat(uuid=f"uuid-{i:07d}", hostname=f"squid{i % 977}-{i}.site{i % 431}.example.org",
                     squid_port=3128, public_ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                     private_ip=None, external_ip=None, load=load, max_load=1000.0, timestamp=now,
                     drift=0.0, verified=bool(i % 3), upstream="both", cache_type="squid",
                     agent_version=None, user_id=None, authenticated=bool(i % 2))


def build(n: int, seed: int = 1) -> Shoal:
    rng = random.Random(seed)
    places = [Location(rng.uniform(-55, 80), rng.uniform(-180, 180), city=f"City{p}", country_code="XX",
                       country_name=f"Country{p % 90}") for p in range(max(1, n // 20))]
    where = {f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}": places[rng.randrange(len(places))] for i in range(n)}
    table = CacheTable()
    now = time.time()
    for i in range(n):
        table.upsert(heartbeat(i, rng.uniform(0, 1000), now), now, where.get)
    shoal = Shoal(table, _NoLocator(), ServerConfig(), ConsumerStatus())  # type: ignore[arg-type]
    shoal._bench_where = where  # type: ignore[attr-defined]
    shoal._bench_rng = rng  # type: ignore[attr-defined]
    return shoal


def change(shoal: Shoal, n: int) -> None:
    rng = shoal._bench_rng  # type: ignore[attr-defined]
    i = rng.randrange(n)
    now = time.time()
    shoal.table.upsert(heartbeat(i, rng.uniform(0, 1000), now), now, shoal._bench_where.get)  # type: ignore


def scratch_status(shoal: Shoal) -> str:
    """The page rendered from nothing (what every request cost before the per-version views)."""
    return render_status(shoal.table.snapshot(), time.time(), PageRequest(), 100, 60.0, True, shoal.outline)


def scratch_all(shoal: Shoal) -> str:
    entries = sorted(shoal.table.snapshot(), key=lambda e: (e.hb.hostname, e.uuid))
    return to_json(cache_record(e) for e in entries)


def measure(shoal: Shoal, n: int, repeat: int) -> Dict[str, Any]:
    calls = {"status": lambda: shoal.status_page({}),
             "status_scratch": lambda: scratch_status(shoal),
             "all_scratch": lambda: scratch_all(shoal),
             "status_page_50": lambda: shoal.status_page({"page": "50", "sort": "load"}),
             "all": lambda: shoal.all(),
             "healthz": lambda: shoal.healthz()}
    row: Dict[str, Any] = {"caches": n}
    for name, call in calls.items():
        call()
        steady = common.timed(call, repeat)
        first = []
        for _ in range(repeat):
            change(shoal, n)
            first.extend(common.timed(call, 1))
        row[name + "_steady_ms"] = 1000 * common.median(steady)
        row[name + "_first_ms"] = 1000 * common.median(first)
    return row


def fill(srv: Any, host: str, port: int, exchange: str, ips: List[str], have: int, n: int) -> None:
    """Publish heartbeats of caches ``have .. n-1`` and wait until the server's table holds ``n``."""
    from support.heartbeats import Publisher
    pub = Publisher(exchange, host, port)
    try:
        now = time.time()
        for i in range(have, n):
            pub.send(common.heartbeat_body(f"page{i:06d}", ips[i], 1000.0 + i % 5000, now))
    finally:
        pub.close()
    deadline = time.monotonic() + 300
    while srv.health()["caches"] != n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{srv.url} did not reach {n} caches")
        time.sleep(0.2)


def against_healthz(srv: Any, path: str, rounds: int, seconds: float) -> Dict[str, Any]:
    """wrk on ``/healthz`` then ``path``, ``rounds`` times; medians, and the p50 ratio per round."""
    runs = [(common.wrk(srv.url + "/healthz", 1, seconds), common.wrk(srv.url + path, 1, seconds))
            for _ in range(rounds)]
    for _, page in runs:
        if not page["requests"]:   # not one answer within the run: its latency exceeded the run
            page.update(p50_ms=float("inf"), p99_ms=float("inf"))
    ratios = [page["p50_ms"] / health["p50_ms"] for health, page in runs]
    return {"path": path, "rounds": rounds, "healthz_p50_ms": common.median([h["p50_ms"] for h, _ in runs]),
            "p50_ms": common.median([p["p50_ms"] for _, p in runs]),
            "p99_ms": common.median([p["p99_ms"] for _, p in runs]),
            "rps": common.median([p["rps"] for _, p in runs]), "ratio_p50": common.median(ratios),
            "ratios": ratios, "spread": common.relative_spread(ratios),
            "errors": sum(h["errors"] + p["errors"] for h, p in runs)}


def over_http(sizes: List[int], churn: float, rounds: int, seconds: float) -> Dict[str, Any]:
    """`/` at the small size with no traffic, then `/all` and `/` at the large size under churn."""
    small, large = sizes
    exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
    ips = common.addresses(large, seed=17)
    rows: List[Dict[str, Any]] = []
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="shoal-bench-pages-") as tmp, common.broker() as (host, port, _):
        srv = common.server(os.path.join(tmp, "server"), host, port, exchange,
                            cache={"cache_inactive_time": 3600, "cache_cleanse_interval": 60})
        try:
            fill(srv, host, port, exchange, ips, 0, small)
            rows.append({"caches": small, "churn": 0.0, **against_healthz(srv, "/", rounds, seconds)})
            fill(srv, host, port, exchange, ips, small, large)
            rnd = random.Random(5)
            picks = [rnd.randrange(large) for _ in range(4096)]
            body = lambda k: common.heartbeat_body(  # noqa: E731
                f"page{picks[k % 4096]:06d}", ips[picks[k % 4096]], float(k % 60000), time.time())
            sent, stop = ctx.Value("l", 0), ctx.Event()
            pub = ctx.Process(target=common.publish_paced, args=(host, port, exchange, churn, 3600.0, body, sent, stop))
            pub.start()
            try:
                time.sleep(1.0)   # the stream is flowing before the clock starts
                for path in ("/all", "/"):
                    before, t0 = srv.health()["accepted"], time.monotonic()
                    row = against_healthz(srv, path, rounds, seconds)
                    rate = (srv.health()["accepted"] - before) / (time.monotonic() - t0)
                    rows.append({"caches": large, "churn": rate, **row})
            finally:
                stop.set()
                pub.join(30)
                if pub.is_alive():
                    pub.kill()
            final = srv.health()
        finally:
            srv.stop()
    return {"rows": rows, "churn_target": churn, "seconds": max(1, round(seconds)), "published": sent.value,
            "dropped": sum(final["dropped"].values())}


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--caches", type=int, nargs="*", default=[10000])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--http-caches", type=int, nargs=2, default=[1000, 10000], metavar=("STATUS", "CHURN"),
                   help="table sizes over HTTP: `/` with no traffic, then `/all` and `/` under churn")
    p.add_argument("--churn", type=float, default=400.0, help="heartbeats/s published during the churn runs")
    p.add_argument("--rounds", type=int, default=5, help="wrk rounds per figure (>= 5)")
    p.add_argument("--seconds", type=float, default=common.WRK_SECONDS, help="duration of each wrk run")
    p.add_argument("--no-http", action="store_true")
    args = p.parse_args(argv)
    sizes = [100, 1000] if args.quick else args.caches
    load = os.getloadavg()[0]
    rows = []
    reps = 2 if args.quick else max(5, args.repeat)
    for n in sizes:
        shoal = build(n)
        rows.append(measure(shoal, n, reps))
    headers = ["caches", "/ steady ms", "/ first after a change ms", "/ from scratch ms",
               "/?sort=load&page=50 steady", "first after a change", "/all steady ms", "/all first after a change ms",
               "/all from scratch ms", "/healthz ms"]
    table_rows = [[r["caches"], r["status_steady_ms"], r["status_first_ms"], r["status_scratch_steady_ms"],
                   r["status_page_50_steady_ms"], r["status_page_50_first_ms"], r["all_steady_ms"], r["all_first_ms"],
                   r["all_scratch_steady_ms"], r["healthz_steady_ms"]] for r in rows]
    markdown = (f"In-process, medians of {reps} (ms)\n\n" + common.table(headers, table_rows))
    http: Dict[str, Any] = {"rows": []}
    if not args.no_http and common.have("wrk"):
        http_sizes = [100, 200] if args.quick else args.http_caches
        http = over_http(http_sizes, 50.0 if args.quick else args.churn, 2 if args.quick else max(5, args.rounds),
                         1.0 if args.quick else args.seconds)
        markdown += ("\n\nOver HTTP (built-in front, wrk with 1 connection, "
                     f"{len(http['rows'][0]['ratios'])} rounds of {http['seconds']:.0f} s per figure)\n\n" +
                     common.table(["page", "caches", "changes/s accepted", "/healthz p50 ms", "page p50 ms",
                                   "page p99 ms", "page req/s", "p50 ratio (median of rounds)", "spread of ratios",
                                   "errors"],
                                  [[r["path"], r["caches"], r["churn"], r["healthz_p50_ms"], r["p50_ms"], r["p99_ms"],
                                    r["rps"], r["ratio_p50"], r["spread"], r["errors"]] for r in http["rows"]]))
    end = os.getloadavg()[0]
    markdown += f"\n\nLoad average {load:.1f} at the start, {end:.1f} at the end ({os.cpu_count()} cores)."
    print(markdown)
    verdict = verdicts(rows, http["rows"])
    spreads = [r["spread"] for r in http["rows"]]
    common.save(args.out, "pages", {"quick": args.quick, "rows": rows, "http": http, "verdict": verdict,
                                     "spread": max((x for x in spreads if x == x), default=None),
                                     "loadavg": [load, end]}, markdown)
    plot(args.out, rows, http["rows"])
    return 0


def verdicts(rows: List[Dict[str, Any]], http: List[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """The figures the targets are held against (None where not measured)."""
    at10k = next((r for r in rows if r["caches"] == 10000), None)
    status1k = next((r for r in http if r["path"] == "/" and r["caches"] == 1000 and not r["churn"]), None)
    all10k = next((r for r in http if r["path"] == "/all" and r["caches"] == 10000), None)
    return {"status_steady_10k_ms": at10k and at10k["status_steady_ms"],
            "status_first_10k_ms": at10k and at10k["status_first_ms"],
            "status_http_ratio_1k_p50": status1k and status1k["ratio_p50"],
            "all_http_ratio_10k_churn_p50": all10k and all10k["ratio_p50"],
            "churn_rate_10k": all10k and all10k["churn"]}


def plot(out: str, rows: List[Dict[str, Any]], http: List[Dict[str, Any]]) -> None:
    fig, axes = common.figure(2)
    ax = axes[0]
    xs = [r["caches"] for r in rows]
    for key, label in (("status_steady_ms", "/ steady"), ("status_first_ms", "/ first after a change"),
                       ("status_scratch_steady_ms", "/ from scratch (before)"), ("all_first_ms", "/all after a change"),
                       ("all_scratch_steady_ms", "/all from scratch (before)")):
        ax.plot(xs, [r[key] for r in rows], marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="caches", ylabel="ms (median)", title="In-process")
    ax.legend(fontsize=7)
    ax = axes[1]
    labels = [f"{r['path']} at {r['caches']:,}" + (f"\n{r['churn']:.0f} changes/s" if r["churn"] else "") for r in http]
    ax.bar(range(len(http)), [r["ratio_p50"] for r in http])
    ax.set_xticks(range(len(http)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set(ylabel="p50 ÷ /healthz p50", title="Over HTTP (wrk, 1 connection)")
    common.save_figure(fig, out, "pages")


if __name__ == "__main__":
    sys.exit(main())
