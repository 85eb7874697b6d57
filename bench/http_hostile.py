#!/usr/bin/env python3
"""Hostile HTTP clients against the built-in front (httpfront) and cheroot, on loopback.

Each front serves a trivial WSGI app in its own process; for each attack (20 / 200 slow senders
dripping a header line every 5 s or 1 s, 200 idle sockets) ``/healthz`` is probed for 10 s (3 s timeout
per probe), then a 64 MiB header line is sent and the process's RSS read before, at peak and
after. Writes bench/results/http_hostile.json (no plot; not part of run_all). Figures quoted in
docs/security.md, "HTTP front".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from support.hostile import Attack, header_bomb, peak_rss_kib, probe_for, rss_kib, summary  # noqa: E402
from support.rabbitnode import free_port, wait_port  # noqa: E402

SERVER = r'''
import json, sys
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
kind, port, opts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
if kind == "httpfront":
    from shoal_server.httpfront import HTTPFront
    HTTPFront(("127.0.0.1", port), app).serve()
else:
    from cheroot import wsgi
    attrs = {k: opts.pop(k) for k in ("max_request_header_size",) if k in opts}
    server = wsgi.Server(("127.0.0.1", port), app, **opts)
    for k, v in attrs.items():
        setattr(server, k, v)
    server.safe_start()
'''

ATTACKS = [("slow20", {"slow": 20, "interval": 5.0}), ("slow20_1s", {"slow": 20, "interval": 1.0}),
           ("idle200", {"idle": 200}), ("slow200", {"slow": 200, "interval": 5.0})]
FRONTS = [
    ("httpfront", "httpfront", {}),
    ("cheroot defaults", "cheroot", {"numthreads": 16}),
    ("cheroot timeout=2, max_request_header_size=16384", "cheroot",
     {"numthreads": 16, "timeout": 2, "max_request_header_size": 16384}),
]


def run_front(kind: str, opts: Dict[str, Any], seconds: float, bomb_mib: int) -> Dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, kind, str(port), json.dumps(opts)])
    try:
        wait_port(port, timeout=15, proc=proc)
        url = f"http://127.0.0.1:{port}/healthz"
        out: Dict[str, Any] = {"cheroot": _cheroot_version() if kind == "cheroot" else None}
        for name, kw in ATTACKS:
            attack = Attack("127.0.0.1", port, duration=seconds + 4, **kw)  # type: ignore[arg-type]
            attack.start()
            attack.ready.wait(30)
            time.sleep(1.0)
            out[name] = summary(probe_for([url], seconds, timeout=3.0)[url])
            attack.stop()
            attack.join(10)
            time.sleep(2.0)
        before = rss_kib(proc.pid)
        status, sent = header_bomb("127.0.0.1", port, bomb_mib * 1024 * 1024, line=True, timeout=30)
        out["bomb"] = {"mib": bomb_mib, "status": status, "sent_mib": round(sent / 2 ** 20, 1),
                       "rss_before_mib": before / 1024, "rss_peak_mib": peak_rss_kib(proc.pid) / 1024,
                       "rss_after_mib": rss_kib(proc.pid) / 1024}
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def _cheroot_version() -> str:
    import cheroot
    return str(cheroot.__version__)


def main(argv: List[str]) -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    seconds, bomb = (2.0, 4) if args.quick else (10.0, 64)
    results = {label: run_front(kind, dict(opts), seconds, bomb) for label, kind, opts in FRONTS}
    rows = []
    for label, r in results.items():
        rows.append([label] + [f"{r[a]['ok']}/{r[a]['n']}, max {r[a]['max_s']:.2f} s"
                               for a, _ in ATTACKS]
                    + [r["bomb"]["status"], r["bomb"]["rss_peak_mib"], r["bomb"]["rss_after_mib"]])
    md = common.table(["front", "/healthz ok during 20 slow (5 s)", "20 slow (1 s)", "200 idle", "200 slow (5 s)",
                       f"{bomb} MiB header: status", "peak RSS MiB", "RSS after MiB"], rows)
    print(md)
    common.save(args.out, "http_hostile", {"results": results}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
