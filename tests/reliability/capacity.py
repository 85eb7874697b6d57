"""Rough capacity figures for docs/operations.md (not a test; ``.venv/bin/python tests/reliability/capacity.py``).

Starts a private RabbitMQ node and one shoal-server on loopback, then measures:
heartbeats/s the server absorbs for new and for known caches, and HTTP requests/s for
/nearest and /healthz with ``wrk`` at a given table size. docs/performance.md (the benchmark
suite) has the careful figures; this is the quick cross-check the sizing section quotes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from support.heartbeats import Publisher, upstream_heartbeat  # noqa: E402
from support.procs import ServerProcess  # noqa: E402
from support.rabbitnode import RabbitNode  # noqa: E402

EXCHANGE = "shoal-capacity"


def address(i: int) -> str:
    return f"{128 + (i >> 16) % 16}.{(i >> 8) & 255}.{i & 255}.{1 + i % 250}"


def accepted(server: ServerProcess) -> int:
    return int(server.health()["accepted"])


def absorb(server: ServerProcess, pub: Publisher, bodies) -> float:
    """Publish ``bodies`` and return heartbeats/s from the first publish until all were accepted."""
    target = accepted(server) + len(bodies)
    start = time.monotonic()
    for body in bodies:
        pub.send(body)
    while accepted(server) < target:
        if time.monotonic() - start > 300:
            raise RuntimeError("server did not absorb the heartbeats within 300 s")
        time.sleep(0.05)
    return len(bodies) / (time.monotonic() - start)


def wrk(url: str, seconds: int = 10, connections: int = 8) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], capture_output=True,
                         text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def main() -> int:
    caches = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    base = tempfile.mkdtemp(prefix="shoal-capacity-")
    node = RabbitNode(os.path.join(base, "rabbit"))
    server = None
    try:
        node.start()
        rabbit = {"amqp_server_url": "127.0.0.1", "amqp_port": node.amqp_port, "amqp_exchange": EXCHANGE}
        server = ServerProcess(os.path.join(base, "server"), rabbit,
                               {"cache_inactive_time": 3600, "cache_cleanse_interval": 60}).start()
        pub = Publisher(EXCHANGE, port=node.amqp_port)
        now = time.time()
        new = [json.dumps(upstream_heartbeat(address(i), uuid=f"c{i}", timestamp=now)) for i in range(caches)]
        known = [json.dumps(upstream_heartbeat(address(i % caches), uuid=f"c{i % caches}", load=float(i % 977),
                                               timestamp=now)) for i in range(10 * caches)]
        results = {"caches": caches, "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()[0]}
        results["new_caches_per_s"] = round(absorb(server, pub, new))
        results["known_heartbeats_per_s"] = round(absorb(server, pub, known))
        pub.close()
        results["nearest_rps"] = round(wrk(f"{server.url}/nearest/5?ip=142.104.1.1"))
        results["healthz_rps"] = round(wrk(f"{server.url}/healthz"))
        results["loadavg_after"] = os.getloadavg()[0]
        print(json.dumps(results, indent=2))
    finally:
        if server is not None:
            server.stop()
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
