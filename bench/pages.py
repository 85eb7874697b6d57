"""Status page `/` and `/all` in-process at N caches: steady requests, and the first after a change.

The server's own handlers (``Shoal.status_page``, ``Shoal.all``) on a table of N caches spread
over ~N/20 places; "after a change" means one heartbeat of a known cache was upserted just
before the request (what nearly every request sees while agents talk). Medians of ``--repeat``
runs each (≥ 5), CPU time of the calling thread beside the wall clock; the load average is noted.

    .venv/bin/python bench/pages.py              # 10,000 caches
    .venv/bin/python bench/pages.py --caches 1000 10000 100000
"""
from __future__ import annotations

import os
import random
import sys
import time
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


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--caches", type=int, nargs="*", default=[10000])
    p.add_argument("--repeat", type=int, default=7)
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
    markdown = (common.table(headers, table_rows) +
                f"\n\nIn-process, medians of {reps}; load average {load:.1f} at start, "
                f"{os.getloadavg()[0]:.1f} at the end (2 cores).")
    print(markdown)
    if not args.quick or args.out != common.RESULTS:
        common.save(args.out, "pages", {"quick": args.quick, "rows": rows,
                                         "loadavg": [load, os.getloadavg()[0]]}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
