#!/usr/bin/env python3
"""Client: wall time and peak RSS of one shoal-client run against a local server, per Python.

Each run is what cron does on a worker: start the interpreter, fetch /nearest from a real
shoal-server on loopback (five caches, fed through the broker), rewrite a CVMFS config file.
Bare interpreter start-up (``python -c pass``) is shown beside it. Target: <= 150 ms wall on
the default Python (the one running this script).
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from support.heartbeats import Publisher  # noqa: E402

TARGET_MS = 150.0
CLIENT_DIR = os.path.join(common.REPO, "shoal-client")
SITES = ["142.90.1.1", "188.184.1.1", "131.225.1.1", "130.87.1.1", "150.203.1.1"]


def pythons() -> List[Tuple[str, str]]:
    """(label, interpreter): the system's default python3, every pyenv version, and this venv's.

    The default is what cron runs on a worker: the system ``python3`` (not a virtualenv, whose
    editable installs add ~40 ms of start-up through their import hooks; shown last for that reason).
    """
    found: List[Tuple[str, str]] = []
    system = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    version = subprocess.run([system, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    found.append((f"default: {system} {version}", system))
    for path in sorted(glob.glob("/root/.pyenv/versions/*/bin/python"),
                       key=lambda p: [int(x) for x in p.split("/")[-3].split(".") if x.isdigit()]):
        found.append((path.split("/")[-3], path))
    if system != sys.executable:
        found.append(("venv " + ".".join(map(str, sys.version_info[:3])) + " (editable installs)", sys.executable))
    return found


GNU_TIME = "/usr/bin/time"


def run_once(python: str, args: List[str], env: Dict[str, str]) -> Tuple[float, float, int]:
    """Wall seconds, peak RSS (KiB; NaN without GNU time) and exit status of one process.

    Linux carries a process's peak RSS across exec, so a child forked from this (large)
    process would report our size: GNU time forks from a small process and reports its child's.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        cmd = [python, *args]
        if os.access(GNU_TIME, os.X_OK):
            cmd = [GNU_TIME, "-f", "%M", "-o", out.name, *cmd]
        t = time.perf_counter()
        status = subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        text = out.read().strip().splitlines()
    rss = float(text[-1]) if text and text[-1].isdigit() else float("nan")
    return wall, rss, status


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    repeat = 2 if args.quick else 9
    rows: List[Dict[str, Any]] = []
    exchange = f"bench-{uuidlib.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="shoal-bench-client-") as tmp, common.broker() as (host, port, _):
        srv = common.server(os.path.join(tmp, "server"), host, port, exchange)
        try:
            pub = Publisher(exchange, host, port)
            for i, ip in enumerate(SITES):
                pub.send(common.heartbeat_body(f"site{i}", ip, 100.0 * i, time.time()))
            pub.close()
            srv.wait_for(lambda h: h.get("caches") == len(SITES), timeout=30)
            ini = os.path.join(tmp, "shoal_client.conf")
            with open(ini, "w") as fh:
                fh.write("[general]\n")
            cvmfs = os.path.join(tmp, "default.local")
            env = dict(os.environ, PYTHONPATH=CLIENT_DIR, PYTHONDONTWRITEBYTECODE="1")
            env.pop("PYTHONHOME", None)
            client_args = ["-m", "shoal_client", "-c", ini, "-s", srv.url + "/nearest", "--cvmfs-config", cvmfs, "-q"]
            found = pythons()
            for label, python in (found[:2] if args.quick else found):
                with open(cvmfs, "w") as fh:
                    fh.write("CVMFS_HTTP_PROXY=DIRECT\n")
                walls, rsss, bare = [], [], []
                status = 0
                for _ in range(repeat):
                    wall, rss, status = run_once(python, client_args, env)
                    walls.append(wall)
                    rsss.append(rss)
                    bare.append(run_once(python, ["-c", "pass"], env)[0])
                with open(cvmfs) as fh:
                    wrote = "squid-site" in fh.read()
                rows.append({"python": label, "interpreter": python, "wall_ms": common.median(walls) * 1000,
                             "wall_p90_ms": common.percentile(walls, 90) * 1000,
                             "startup_ms": common.median(bare) * 1000, "peak_rss_kib": common.median(rsss),
                             "exit": status, "wrote_proxies": wrote})
        finally:
            srv.stop()
    md = common.table(["Python", "wall ms (median)", "p90", "interpreter start-up ms", "peak RSS (MiB)", "exit",
                       "wrote CVMFS_HTTP_PROXY"],
                      [[r["python"], r["wall_ms"], r["wall_p90_ms"], r["startup_ms"], r["peak_rss_kib"] / 1024,
                        r["exit"], "yes" if r["wrote_proxies"] else "NO"] for r in rows])
    print("One shoal-client run (fetch + rewrite), %d runs each\n%s\n" % (repeat, md))
    verdict = {"default_wall_ms": rows[0]["wall_ms"], "target_ms": TARGET_MS,
               "all_succeeded": all(r["exit"] == 0 and r["wrote_proxies"] for r in rows)}
    common.save(args.out, "client", {"rows": rows, "verdict": verdict, "repeat": repeat, "quick": args.quick}, md)
    fig, axes = common.figure(2)
    labels = [r["python"].replace("default: ", "default\n").replace(" (editable installs)", "\n(editable)")
              for r in rows]
    x = range(len(rows))
    axes[0].bar(x, [r["wall_ms"] for r in rows], label="shoal-client run")
    axes[0].bar(x, [r["startup_ms"] for r in rows], label="of which: interpreter start-up (python -c pass)")
    axes[0].axhline(TARGET_MS, color="red", linestyle="--", label=f"target {TARGET_MS:.0f} ms (default Python)")
    axes[0].set_xticks(list(x), labels, fontsize=7)
    axes[0].set(ylabel="ms (median)", title="Wall time of one run")
    axes[0].legend(fontsize=7)
    axes[1].bar(x, [r["peak_rss_kib"] / 1024 for r in rows])
    axes[1].set_xticks(list(x), labels, fontsize=7)
    axes[1].set(ylabel="MiB", title="Peak RSS")
    common.save_figure(fig, args.out, "client")
    return 0 if verdict["all_succeeded"] else 1


if __name__ == "__main__":
    sys.exit(main())
