#!/usr/bin/env python3
"""Spread: how a site's workers share its squids, before and after grouping equally good caches.

A simulated site (1,000 worker addresses, 4 squids at the same place with slightly different
loads, 2 remote caches) asks the server's WSGI app, in process, once per worker:
- "ranked only": what every client before issue 15 wrote, one ``;`` failover group per cache
  in rank order (CVMFS then always uses the first: every worker on the least loaded squid);
- "client |": shoal-client's CVMFS_HTTP_PROXY from /nearest with its ``group`` numbers; CVMFS
  picks a random member of the first ``|`` group (simulated with a seeded random choice);
- "PAC": /wpad.dat for that worker evaluated by pacparser (the library CVMFS uses) for a
  stratum-1 URL; CVMFS uses the first proxy of the answer.
For each: the share of workers on each site squid, the largest share over the fair one, and
where the workers of squid 1 go when it fails (the next proxy they try).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
from collections import Counter
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, os.path.join(common.REPO, "shoal-client"))
from shoal_client.proxies import cache_groups, cache_urls, cvmfs_proxy_value  # noqa: E402
from shoal_server.config import load_config  # noqa: E402
from shoal_server.consumer import ConsumerStatus  # noqa: E402
from shoal_server.geo import Location  # noqa: E402
from shoal_server.heartbeat import Limits, parse_heartbeat  # noqa: E402
from shoal_server.table import CacheTable  # noqa: E402
from shoal_server.webapp import create_app  # noqa: E402
from support import pacrun  # noqa: E402

SITE, REMOTE = Location(41.8, -88.3), Location(49.2, -123.1)
SQUIDS = [("squid%d.site.example" % (i + 1), "131.225.30.%d" % (i + 1), load)
          for i, load in enumerate((20000.0, 21000.0, 22500.0, 24000.0))]   # of max_load 100,000
REMOTES = [("far1.remote.example", "142.90.1.1", 50000.0), ("far2.remote.example", "142.90.1.2", 60000.0)]


class Places:
    def locate(self, ip: str) -> Optional[Location]:
        return SITE if ip.startswith("131.225.") else REMOTE if ip.startswith("142.90.") else None

    def close(self) -> None:
        pass


def build_app(margin: float) -> Any:
    config = load_config(None)
    config = dataclasses.replace(config, cache=dataclasses.replace(config.cache, cache_group_margin=margin))
    table, places = CacheTable(), Places()
    for host, ip, load in SQUIDS + REMOTES:
        body = {"uuid": host, "hostname": host, "squid_port": 3128, "public_ip": ip, "load": load,
                "max_load": 100000.0, "upstream": "both", "timestamp": 1000.0}
        table.upsert(parse_heartbeat(json.dumps(body).encode(), 1000.0, Limits()), 1000.0, places.locate)
    return create_app(table, places, config, ConsumerStatus(), clock=lambda: 1000.0)


def workers(n: int) -> List[str]:
    # A site's worker subnet(s): consecutive addresses, as a batch system's nodes have.
    return ["131.225.%d.%d" % (64 + i // 250, 1 + i % 250) for i in range(n)]


def name(url: str) -> str:
    return url.split("://", 1)[-1].rsplit(":", 1)[0]


def summarize(label: str, first: List[str], second: List[str]) -> Dict[str, Any]:
    n = len(first)
    counts = Counter(first)
    shares = {host: 100.0 * counts.get(host, 0) / n for host, _, _ in SQUIDS}
    fair = 100.0 / len(SQUIDS)
    failover = Counter(s for f, s in zip(first, second) if f == SQUIDS[0][0])
    return {"route": label, "shares": shares, "max_over_fair": max(shares.values()) / fair,
            "failover_of_squid1": dict(failover), "workers": n}


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--margin", type=float, default=load_config(None).cache.cache_group_margin)
    args = p.parse_args(argv)
    n = 40 if args.quick else args.workers
    app, rnd = build_app(args.margin), random.Random(15)
    ips = workers(n)
    ranked_first, ranked_second, bar_first, bar_second, pacs = [], [], [], [], []
    for ip in ips:
        document = json.loads(app.request("/nearest?ip=%s" % ip).data)
        urls = cache_urls(document)[0]
        ranked_first.append(name(urls[0]))
        ranked_second.append(name(urls[1]))
        groups = cache_groups(document)[0]
        value = cvmfs_proxy_value(groups, [])
        first_group = value.split(";")[0].split("|")
        pick = rnd.choice(first_group)             # CVMFS: a random member of the group
        rest = [u for u in first_group if u != pick] or value.split(";")[1].split("|")
        bar_first.append(name(pick))
        bar_second.append(name(rnd.choice(rest)))  # on failure CVMFS takes another member
        pacs.append(app.request("/wpad.dat?ip=%s" % ip).data.decode())
    answers = pacrun.find_proxies([(pac, *pacrun.STRATUM1) for pac in pacs])
    pac_chains = [pacrun.cvmfs_chain(a).split(";") for a in answers]  # type: ignore[arg-type]
    rows = [summarize("ranked only (before)", ranked_first, ranked_second),
            summarize("shoal-client (one group)", bar_first, bar_second),
            summarize("PAC (per-client order)", [name(c[0]) for c in pac_chains], [name(c[1]) for c in pac_chains])]
    headers = ["route", *[h.split(".")[0] + " %" for h, _, _ in SQUIDS], "max / fair", "squid1 fails: its workers go to"]
    table_rows = [[r["route"], *[r["shares"][h] for h, _, _ in SQUIDS], r["max_over_fair"],
                   ", ".join("%s %d" % (k.split(".")[0], v) for k, v in sorted(r["failover_of_squid1"].items()))]
                  for r in rows]
    md = common.table(headers, table_rows)
    print(md)
    common.save(args.out, "spread", {"quick": args.quick, "workers": n, "margin": args.margin,
                                     "squids": SQUIDS, "remotes": REMOTES, "rows": rows}, md)
    fig, ax = common.figure()
    width = 0.25
    for k, r in enumerate(rows):
        xs = [i + (k - 1) * width for i in range(len(SQUIDS))]
        ax.bar(xs, [r["shares"][h] for h, _, _ in SQUIDS], width, label=r["route"])
    ax.axhline(100.0 / len(SQUIDS), color="grey", linestyle=":", label="fair share")
    ax.set_xticks(range(len(SQUIDS)))
    ax.set_xticklabels([h.split(".")[0] for h, _, _ in SQUIDS])
    ax.set_ylabel("%% of %d workers using it first" % n)
    ax.set_title("One site, 4 squids: who serves the workers")
    ax.legend()
    common.save_figure(fig, args.out, "spread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
