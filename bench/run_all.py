#!/usr/bin/env python3
"""Run the benchmarks (``make bench``) and rewrite the figures in docs/performance.md from that run.

One private RabbitMQ node is shared by the benchmarks that need a plain broker (the SSL one
starts its own TLS node). Each benchmark runs as its own process and writes
``bench/results/<name>.json`` and ``.png``; the load average before and after each is kept in
``bench/results/run_all.json``. The blocks between the ``<!-- bench:NAME -->`` markers of
docs/performance.md are then regenerated from those files: each table with the command that
reproduces it and the load it ran under, the machine, a noise note (a warning when the load
average exceeded the cores or repeated medians disagreed), and the targets met or missed.
The soak (10 minutes) and the backlog benchmark that explains it run only when named:
``run_all.py --only soak,backlog``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

BENCHMARKS = ["ssl_overhead", "ingestion", "amqp_floor", "ranking", "memory", "client", "pages", "spread"]
LONG = ["soak", "backlog"]        # run only when named in --only (the soak, and the backlog that explains it)
ARGS = {"pages": ["--caches", "1000", "10000", "100000"]}
DOC = os.path.join(common.REPO, "docs", "performance.md")
RUN_LOG = "run_all.json"

Results = Dict[str, Optional[Dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Target:
    """One published goal: which benchmark's verdict key holds the figure, and how it is judged."""

    bench: str
    key: str
    what: str
    goal: str
    fmt: str
    met: Optional[Callable[[float], bool]] = None   # None: the figure is reported, not judged


TARGETS = [
    Target("ranking", "in_process_1000", "ranking in-process, 1,000 caches", "≤ 1 ms", "{:.3f} ms",
           lambda v: v <= 1.0),
    Target("ranking", "in_process_100000", "ranking in-process, 100,000 caches", "≤ 20 ms", "{:.2f} ms",
           lambda v: v <= 20.0),
    Target("ranking", "in_process_1000000", "ranking in-process, 1,000,000 caches", "≤ 5 ms", "{:.2f} ms",
           lambda v: v <= 5.0),
    Target("ranking", "http_ratio_10k_p50",
           "/nearest vs /healthz over HTTP, 10,000 caches (p50 latency, worst of 1 and 8 connections)", "≤ 3×",
           "{:.2f}×", lambda v: v <= 3.0),
    Target("ranking", "apache_ratio_10k_p50", "the same under Apache mod_wsgi (shipped shoal.conf)", "≤ 3×",
           "{:.2f}×", lambda v: v <= 3.0),
    Target("ranking", "http_ratio_10k_rps",
           "/healthz req/s ÷ /nearest req/s, 10,000 caches (worst of 1 and 8 connections)", "≤ 3×", "{:.2f}×",
           lambda v: v <= 3.0),
    Target("ranking", "http_ratio_100k_churn_p50",
           "/nearest vs /healthz over HTTP, 100,000 caches under a stream of changes (p50)", "≤ 2×", "{:.2f}×",
           lambda v: v <= 2.0),
    Target("ingestion", "known_ratio", "ingestion, known caches: bare consumer ÷ server (wall clock)", "≤ 2×",
           "{:.2f}×", lambda v: v <= 2.0),
    Target("ingestion", "new_ratio", "ingestion, new caches: bare consumer ÷ server (wall clock)", "≤ 2×",
           "{:.2f}×", lambda v: v <= 2.0),
    Target("ingestion", "known_cpu_ratio", "ingestion, known caches: server ÷ bare consumer, CPU per heartbeat",
           "≤ 1.3×", "{:.2f}×", lambda v: v <= 1.3),
    Target("ingestion", "new_cpu_ratio", "ingestion, new caches: server ÷ bare consumer, CPU per heartbeat",
           "≤ 2×", "{:.2f}×", lambda v: v <= 2.0),
    Target("ingestion", "new_rate", "ingestion, every heartbeat a new cache (wall clock, shared machine)",
           "≥ 10,000/s", "{:,.0f}/s", lambda v: v >= 10000),
    Target("ingestion", "new_rate_per_cpu", "ingestion, every heartbeat a new cache, per second of server CPU",
           "≥ 10,000/s", "{:,.0f}/s", lambda v: v >= 10000),
    Target("memory", "anon_per_cache_kib_at_max", "memory per cache at 100,000 (anonymous RSS)", "≤ 2 KiB",
           "{:.2f} KiB", lambda v: v <= 2.0),
    Target("memory", "rss_per_cache_kib_at_max", "memory per cache at 100,000 (all RSS, incl. GeoIP file pages)",
           "≤ 2 KiB", "{:.2f} KiB", lambda v: v <= 2.0),
    Target("pages", "status_steady_10k_ms", "status page in-process, 10,000 caches, steady", "≤ 5 ms", "{:.2f} ms",
           lambda v: v <= 5.0),
    Target("pages", "status_first_10k_ms", "status page in-process, 10,000 caches, first request after a change",
           "≤ 30 ms", "{:.2f} ms", lambda v: v <= 30.0),
    Target("pages", "status_http_ratio_1k_p50", "status page / vs /healthz over HTTP, 1,000 caches (p50)", "≤ 3×",
           "{:.2f}×", lambda v: v <= 3.0),
    Target("pages", "all_http_ratio_10k_churn_p50",
           "/all vs /healthz over HTTP, 10,000 caches, under the change stream below (p50)", "≤ 10×", "{:.2f}×",
           lambda v: v <= 10.0),
    Target("pages", "churn_rate_10k", "… changes per second the server accepted during it", "≥ 300/s",
           "{:,.0f}/s", lambda v: v >= 300.0),
    Target("soak", "heartbeat_rate", "soak: heartbeats per second published (100,000 agents at 30 s)",
           "≥ 3,333/s", "{:,.0f}/s", lambda v: v >= 3333 * 0.99),
    Target("soak", "lost", "soak: heartbeats published but not consumed, or consumed but not in the table", "0",
           "{:,.0f}", lambda v: v == 0),
    Target("soak", "errors", "soak: failed /nearest requests (200 req/s)", "0", "{:,.0f}", lambda v: v == 0),
    Target("soak", "p99_ms", "soak: /nearest p99 latency (open loop)", "reported", "{:.1f} ms"),
    Target("client", "default_wall_ms", "shoal-client run, default Python", "≤ 150 ms", "{:.0f} ms",
           lambda v: v <= 150.0),
]


def load(out: str, name: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(out, name + ".json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def load_average(machine: Dict[str, Any]) -> float:
    # Results written before the key was renamed say "at_start" but were taken at the end.
    return machine.get("loadavg_at_save", machine.get("loadavg_at_start", float("nan")))


def machine_md(data: Dict[str, Any], first_load: Optional[float]) -> str:
    m = data["machine"]
    shown = first_load if first_load is not None else load_average(m)
    return common.table(
        ["nproc", "CPU", "memory", "Python", "RabbitMQ", "Erlang", "pika", "numpy", "load average at start", "date"],
        [[m["nproc"], m["cpu"], f"{m['memory_gib']} GiB", m["python"], m["rabbitmq"], m["erlang"], m["pika"],
          m["numpy"], f"{shown:.1f}", m["date"]]])


def targets_md(res: Results) -> str:
    """One row per target of issues 8 and 17 with the measured figure and met / missed."""
    rows: List[List[Any]] = []
    for t in TARGETS:
        value = ((res.get(t.bench) or {}).get("verdict") or {}).get(t.key)
        shown = "not measured" if value is None else t.fmt.format(value)
        verdict = "–" if value is None or t.met is None else ("met" if t.met(value) else "**missed**")
        rows.append([t.what, t.goal, shown, verdict, f"`bench/{t.bench}.py`"])
    return common.table(["target (issues 8, 17)", "goal", "measured (median)", "verdict", "from"], rows)


# A benchmark keeps the cores busy itself (a server and its load generator, the broker beside
# them): a load average up to the cores plus this is its own, beyond it other work competed.
SELF_LOAD = 1.0


def noisy(res: Results, runs: Dict[str, Dict[str, Any]], nproc: int) -> List[str]:
    """Why the figures of this run are suspect (empty: a quiet run)."""
    why = []
    for name, run in runs.items():
        worst = max(run.get("load_start", 0.0), run.get("load_end", 0.0))
        if worst > nproc + SELF_LOAD:
            why.append(f"{name}: load average {run['load_start']:.1f} → {run['load_end']:.1f} on {nproc} cores")
    for name, data in res.items():
        spread = (data or {}).get("spread")
        if spread is not None and spread == spread and spread > common.NOISY_SPREAD:
            why.append(f"{name}: repeated medians spread over {100 * spread:.0f}% of their median")
    return why


def noise_md(res: Results, runs: Dict[str, Dict[str, Any]], nproc: int) -> str:
    lines = []
    why = noisy(res, runs, nproc)
    if why:
        lines.append("**Warning: a noisy run.** " + "; ".join(why) + ". Processes queued for the CPU, so absolute "
                     "figures may be off by 2× either way: compare the ratios taken within one table.\n")
    rows = [[name, f"{run['load_start']:.1f}", f"{run['load_end']:.1f}", run["seconds"], run["exit"], run["date"]]
            for name, run in runs.items()]
    if rows:
        lines.append(common.table(["benchmark", "load average before", "after", "seconds", "exit", "finished"], rows))
        lines.append("")
    lines.append(f"Every figure is a median; each wrk run lasts {common.WRK_SECONDS:.0f} s "
                 "(`common.WRK_SECONDS`, the default of `--seconds`).")
    return "\n".join(lines)


def provenance(name: str, data: Dict[str, Any], run: Optional[Dict[str, Any]]) -> str:
    """The line under each table: the command reproducing it and the load it ran under."""
    cmd = data.get("command") or f".venv/bin/python bench/{name}.py"
    if run is not None:
        loads = f"load average {run['load_start']:.1f} before, {run['load_end']:.1f} after"
    else:
        loads = f"load average {load_average(data['machine']):.1f} at the end"
    return f"Reproduce: `{cmd}` ({loads}; {data['machine']['date']})."


def update_doc(out: str, doc: str = DOC) -> List[str]:
    """Replace each ``<!-- bench:NAME -->...<!-- /bench:NAME -->`` block; return the names replaced."""
    res = {name: load(out, name) for name in BENCHMARKS + LONG}
    log = load(out, RUN_LOG[:-5]) or {}
    runs: Dict[str, Dict[str, Any]] = log.get("runs", {})
    blocks: Dict[str, str] = {}
    for name, data in res.items():
        if data is not None and not data.get("quick"):
            body = f"{data['table_md']}\n\n{provenance(name, data, runs.get(name))}"
            png = os.path.join(out, name + ".png")
            if os.path.exists(png):
                body += f"\n\n![{name}]({os.path.relpath(png, os.path.dirname(doc))})"
            blocks[name] = body
    some = next((d for d in res.values() if d is not None), None)
    if some is not None:
        first = [r["load_start"] for r in runs.values()]
        blocks["machine"] = machine_md(some, first[0] if first else None)
        blocks["noise"] = noise_md(res, runs, some["machine"]["nproc"])
    blocks["targets"] = targets_md(res)
    with open(doc) as fh:
        text = fh.read()
    done = []
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n)(?:.*?\n)?(<!-- /bench:{name} -->)", re.S)
        text, n = pattern.subn(lambda m: m.group(1) + body + "\n" + m.group(2), text)
        if n:
            done.append(name)
    tmp = doc + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, doc)
    return done


def record_run(out: str, name: str, run: Dict[str, Any], fresh: bool) -> None:
    """Keep ``run`` in run_all.json (a full run starts the file afresh; --only replaces its own entries)."""
    log = {} if fresh else (load(out, RUN_LOG[:-5]) or {})
    log.setdefault("runs", {})[name] = run
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, RUN_LOG)
    with open(path + ".tmp", "w") as fh:
        json.dump(log, fh, indent=1)
    os.replace(path + ".tmp", path)


def names_of(only: Optional[Sequence[str]]) -> List[str]:
    """``--only a,b c`` as a list, checked against the benchmarks known."""
    if not only:
        return list(BENCHMARKS)
    names = [n for item in only for n in item.split(",") if n]
    unknown = [n for n in names if n not in BENCHMARKS + LONG]
    if unknown:
        raise SystemExit(f"run_all.py: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS + LONG)})")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="NAME[,NAME]",
                   help=f"run these only (of {', '.join(BENCHMARKS)}; and {', '.join(LONG)}, never run otherwise)")
    p.add_argument("--doc-only", action="store_true", help="only rewrite docs/performance.md from the results")
    args = p.parse_args(argv)
    failed = []
    if not args.doc_only:
        names = names_of(args.only)
        extra = ["--quick"] if args.quick else []
        with tempfile.TemporaryDirectory(prefix="shoal-bench-node-") as tmp:
            node = common.RabbitNode(tmp)
            node.start()
            env = dict(os.environ, SHOAL_BENCH_AMQP=f"127.0.0.1:{node.amqp_port}",
                       SHOAL_BENCH_NODE=f"{node.name}:{tmp}")
            try:
                for k, name in enumerate(names):
                    start, load_start = time.monotonic(), os.getloadavg()[0]
                    print(f"==> bench/{name}.py (load average {load_start:.1f})", flush=True)
                    code = subprocess.call([sys.executable, os.path.join(common.BENCH_DIR, name + ".py"),
                                            "--out", args.out, *ARGS.get(name, []), *extra], env=env)
                    run = {"load_start": load_start, "load_end": os.getloadavg()[0],
                           "seconds": round(time.monotonic() - start), "exit": code,
                           "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
                    print(f"<== {name}: exit {code} after {run['seconds']} s (load average {run['load_end']:.1f})\n",
                          flush=True)
                    if not args.quick:
                        record_run(args.out, name, run, fresh=not args.only and k == 0)
                    if code != 0:
                        failed.append(name)
            finally:
                node.stop()
    if not args.quick or args.doc_only:
        done = update_doc(args.out)
        print("docs/performance.md: regenerated " + ", ".join(done))
        res = {name: load(args.out, name) for name in BENCHMARKS + LONG}
        for why in noisy(res, (load(args.out, RUN_LOG[:-5]) or {}).get("runs", {}), os.cpu_count() or 1):
            print(f"warning: noisy: {why}", file=sys.stderr)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
