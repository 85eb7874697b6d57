"""Shared plumbing for the benchmarks: machine facts, result files, tables, plots, broker and server.

Every benchmark is a script with ``main(argv) -> int`` that prints a table and writes
``bench/results/<name>.json`` and ``<name>.png``; ``--quick`` shrinks it to a smoke run and
``--out`` sends the files elsewhere (the smoke tests use a temp dir). A broker is started
privately (``RabbitNode``) unless ``SHOAL_BENCH_AMQP=host:port`` names one (``run_all`` shares
one node between benchmarks that way).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
RESULTS = os.path.join(BENCH_DIR, "results")
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "shoal-server"))

from support.rabbitnode import RabbitNode, free_port, wait_port  # noqa: E402

__all__ = ["RabbitNode", "free_port", "wait_port"]

WRK_SECONDS = 2.0        # each wrk run (ranking, pages); docs/performance.md says so from this constant
NOISY_SPREAD = 0.3       # repeated medians whose interquartile range exceeds this share of their median


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures meaningless")
    p.add_argument("--out", default=RESULTS, help="where to write <name>.json and <name>.png")
    return p


# ---------------------------------------------------------------- numbers
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def relative_spread(xs: Sequence[float]) -> float:
    """Interquartile range over the median of repeated figures (0: they agree); nan below 2 values."""
    xs = [x for x in xs if x == x]
    if len(xs) < 2 or not median(xs):
        return float("nan")
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return (q3 - q1) / abs(median(xs))


def timed(fn: Any, repeat: int, clock: Any = time.perf_counter) -> List[float]:
    """Seconds of ``repeat`` calls of ``fn()`` by ``clock`` (wall by default).

    ``time.thread_time`` gives the CPU time of the calling thread: on a shared, loaded machine
    it leaves out the time spent waiting for a core, which wall time cannot.
    """
    out = []
    for _ in range(repeat):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


# ---------------------------------------------------------------- machine
def _first_line(cmd: List[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def machine() -> Dict[str, Any]:
    """What the figures were measured on."""
    mem_kib = 0
    with contextlib.suppress(OSError):
        with open("/proc/meminfo") as fh:
            mem_kib = int(fh.readline().split()[1])
    cpu = "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    rabbit = _first_line(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"])
    erlang = _first_line(["dpkg-query", "-W", "-f=${Version}", "erlang-base"])
    import numpy
    import pika
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 1048576, 1),
        "python": platform.python_version(), "rabbitmq": rabbit, "erlang": erlang,
        "pika": pika.__version__, "numpy": numpy.__version__, "kernel": platform.release(),
        "loadavg_at_save": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def command(name: str, argv: Optional[Sequence[str]] = None) -> str:
    """The shell command that reproduces a benchmark's figures (its own arguments, from the repo root)."""
    if argv is None:
        argv = sys.argv[1:] if os.path.basename(sys.argv[0]) == name + ".py" else []
    args = []
    for a in argv:
        if os.path.isabs(a) and os.path.realpath(a).startswith(os.path.realpath(REPO) + os.sep):
            a = os.path.relpath(a, REPO)
        args.append(a if re.fullmatch(r"[\w./:=,@+-]+", a) else "'" + a.replace("'", "'\\''") + "'")
    return " ".join([".venv/bin/python", f"bench/{name}.py", *args])


# ---------------------------------------------------------------- output
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (also readable on a terminal)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "–"
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def save(out_dir: str, name: str, data: Dict[str, Any], markdown: str) -> str:
    """Write ``name.json`` (data + machine + command + the table as Markdown); return the JSON path."""
    os.makedirs(out_dir, exist_ok=True)
    data = {"benchmark": name, "machine": machine(), "command": command(name), "table_md": markdown, **data}
    path = os.path.join(out_dir, name + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)
    return path


def figure(ncols: int = 1, width: float = 6.4) -> Tuple[Any, Any]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4.2))
    return fig, axes


def save_figure(fig: Any, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- broker and server
@contextlib.contextmanager
def broker(base_dir: Optional[str] = None) -> Iterator[Tuple[str, int, Optional[RabbitNode]]]:
    """Yield (host, port, node): $SHOAL_BENCH_AMQP if set, else a private node stopped on exit."""
    env = os.environ.get("SHOAL_BENCH_AMQP")
    if env:
        host, port = env.rsplit(":", 1)
        yield host, int(port), shared_node()
        return
    with tempfile.TemporaryDirectory(prefix="shoal-bench-rabbit-") as tmp:
        node = RabbitNode(base_dir or tmp)
        node.start()
        try:
            yield "127.0.0.1", node.amqp_port, node
        finally:
            node.stop()


def shared_node() -> Optional[RabbitNode]:
    """A handle (for rabbitmqctl only) on the node run_all started: $SHOAL_BENCH_NODE = name:base_dir."""
    spec = os.environ.get("SHOAL_BENCH_NODE")
    if not spec:
        return None
    name, base_dir = spec.split(":", 1)
    return RabbitNode(base_dir, name=name)


def server(workdir: str, host: str, port: int, exchange: str, cache: Optional[Dict[str, Any]] = None,
           general: Optional[Dict[str, Any]] = None) -> Any:
    """A started shoal-server process (tests/support/procs.py) on the given broker."""
    from support.procs import ServerProcess
    rabbit = {"amqp_server_url": host, "amqp_port": port, "amqp_username": "guest", "amqp_password": "guest",
              "amqp_exchange": exchange, "heartbeat": 120}
    general = {"web_threads": 8, **(general or {})}
    proc = ServerProcess(workdir, rabbit, cache or {}, general)
    # Log warnings only: an info line per event would be part of what we measure.
    with open(proc.config_path) as fh:
        text = fh.read().replace("logging_level = info", "logging_level = warning")
    with open(proc.config_path, "w") as fh:
        fh.write(text)
    return proc.start(wait_connected=True, timeout=60)


# First octets of address blocks allocated to networks all over the world, so that GeoLite2
# places most generated addresses (a miss costs less than a hit, which would flatter us).
WORLD_OCTETS = (1, 14, 24, 27, 36, 41, 42, 43, 49, 50, 58, 59, 60, 61, 62, 66, 72, 77, 78, 80, 81, 82, 83,
                84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 98, 99, 101, 103, 108, 109, 110, 111, 112,
                113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 128, 129, 130, 131, 134,
                137, 141, 142, 146, 150, 151, 152, 155, 164, 175, 176, 177, 178, 179, 180, 181, 182, 183,
                185, 186, 187, 188, 189, 190, 191, 193, 194, 195, 196, 197, 200, 201, 202, 203, 210, 211,
                212, 213, 217, 218, 219, 220, 221, 222)


def addresses(count: int, seed: int = 1) -> List[str]:
    """``count`` distinct global IPv4 addresses spread over the world (none the server would refuse)."""
    import ipaddress
    import random
    rnd = random.Random(seed)
    seen: Dict[str, None] = {}
    while len(seen) < count:
        ip = f"{rnd.choice(WORLD_OCTETS)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        if ipaddress.ip_address(ip).is_global:   # 203.0.113.0/24 and friends are documentation
            seen.setdefault(ip)
    return list(seen)


def heartbeat_body(uuid: str, ip: str, load: float, now: float) -> bytes:
    """A heartbeat as the 2014-2024 agent sends it (about 300 bytes)."""
    return json.dumps({
        "uuid": uuid, "hostname": f"squid-{uuid}.example.org", "squid_port": 3128, "public_ip": ip,
        "private_ip": "10.0.0.5", "external_ip": None, "load": load, "max_load": 122000,
        "timestamp": now, "verified": False, "upstream": "both", "cache_type": "squid",
        "agent_version": "2.0.0",
    }).encode()


def publish_paced(host: str, port: int, exchange: str, rate: float, seconds: float, body: Callable[[int], bytes],
                  sent: Any, stop: Any = None) -> None:
    """Publish ``body(k)`` for k = 0, 1, ... at ``rate`` per second for ``seconds`` (or until ``stop`` is set).

    Open loop: a message is due at ``k / rate`` from the start; whatever is due is sent at once,
    so a stall is followed by a burst and the achieved rate is what the broker let us reach.
    ``sent`` (a shared ``Value``) counts what was handed to the broker.
    """
    from support.heartbeats import Publisher
    pub = Publisher(exchange, host, port)
    start = time.monotonic()
    k = 0
    try:
        while stop is None or not stop.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            due = min(int(elapsed * rate) + 1, int(seconds * rate))
            while k < due:
                pub.send(body(k))
                k += 1
                if k % 100 == 0:
                    sent.value = k
            time.sleep(max(0.0, min(0.05, start + k / rate - time.monotonic())))
    finally:
        sent.value = k
        pub.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process from /proc (VmRSS, or RssAnon / RssFile), in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wrk(url: str, connections: int, seconds: float, threads: int = 1) -> Dict[str, float]:
    """Run wrk against a loopback URL; return requests/s, latency percentiles (ms) and errors."""
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError("benchmarks load loopback addresses only")
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, int(round(seconds)))}s", "--latency",
                          "--timeout", "10s", url], capture_output=True, text=True, timeout=seconds + 30)
    text = out.stdout
    result = {"rps": _grab(r"Requests/sec:\s+([\d.]+)", text), "requests": _grab(r"(\d+) requests in", text)}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        result[f"p{q}_ms"] = _ms(float(m.group(1)), m.group(2)) if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["errors"] = (int(errors.group(1)) if errors else 0) + (sum(map(int, sock.groups())) if sock else 0)
    if out.returncode != 0 or result["rps"] != result["rps"]:
        raise RuntimeError(f"wrk failed: {out.stderr.strip() or text}")
    return result


def _grab(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else float("nan")


def _ms(value: float, unit: str) -> float:
    return value / 1000.0 if unit == "us" else value * 1000.0 if unit == "s" else value


def have(program: str) -> bool:
    return shutil.which(program) is not None
