#!/usr/bin/env python3
"""Run every benchmark (``make bench``) and rewrite the figures in docs/performance.md.

One private RabbitMQ node is shared by the benchmarks that need a plain broker (the SSL one
starts its own TLS node). Each benchmark runs as its own process and writes
``bench/results/<name>.json`` and ``.png``; the tables between the ``<!-- bench:NAME -->``
markers of docs/performance.md are then regenerated from those files. The soak is not run
here (10 minutes): ``bench/soak.py``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

BENCHMARKS = ["ssl_overhead", "ingestion", "ranking", "memory", "client"]
DOC = os.path.join(common.REPO, "docs", "performance.md")


def load(out: str, name: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(out, name + ".json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def machine_md(data: Dict[str, Any]) -> str:
    m = data["machine"]
    return common.table(
        ["nproc", "CPU", "memory", "Python", "RabbitMQ", "Erlang", "pika", "numpy", "load average at start", "date"],
        [[m["nproc"], m["cpu"], f"{m['memory_gib']} GiB", m["python"], m["rabbitmq"], m["erlang"], m["pika"],
          m["numpy"], f"{m['loadavg_at_start']:.1f}", m["date"]]])


def targets_md(res: Dict[str, Optional[Dict[str, Any]]]) -> str:
    """One row per target of issue 8 with the measured figure and met / missed."""
    rows: List[List[Any]] = []

    def row(what: str, target: str, value: Optional[float], fmt: str, ok: Optional[bool]) -> None:
        shown = "not measured" if value is None else fmt.format(value)
        rows.append([what, target, shown, "–" if ok is None else ("met" if ok else "**missed**")])

    rk = (res.get("ranking") or {}).get("verdict", {})
    v = rk.get("in_process_1000")
    row("ranking in-process, 1,000 caches", "≤ 1 ms", v, "{:.3f} ms", None if v is None else v <= 1.0)
    v = rk.get("in_process_100000")
    row("ranking in-process, 100,000 caches", "≤ 20 ms", v, "{:.2f} ms", None if v is None else v <= 20.0)
    v = rk.get("http_ratio_10k_p50")
    row("/nearest vs /healthz over HTTP, 10,000 caches (p50 latency, worst of 1 and 8 connections)", "≤ 3×", v,
        "{:.2f}×", None if v is None else v <= 3.0)
    v = rk.get("apache_ratio_10k_p50")
    row("the same under Apache mod_wsgi (shipped shoal.conf)", "≤ 3×", v, "{:.2f}×", None if v is None else v <= 3.0)
    v = rk.get("http_ratio_10k_rps")
    row("/healthz req/s ÷ /nearest req/s, 10,000 caches (worst of 1 and 8 connections)", "≤ 3×", v, "{:.2f}×",
        None if v is None else v <= 3.0)
    ing = (res.get("ingestion") or {}).get("verdict", {})
    v = ing.get("known_ratio")
    row("ingestion, known caches: bare consumer ÷ server", "≤ 2×", v, "{:.2f}×", None if v is None else v <= 2.0)
    v = ing.get("new_ratio")
    row("ingestion, new caches: bare consumer ÷ server", "≤ 2×", v, "{:.2f}×", None if v is None else v <= 2.0)
    v = ing.get("known_cpu_ratio")
    row("ingestion, known caches: server ÷ bare consumer, CPU per heartbeat", "≤ 2×", v, "{:.2f}×",
        None if v is None else v <= 2.0)
    v = ing.get("new_rate")
    row("ingestion, every heartbeat a new cache (wall clock, shared machine)", "≥ 10,000/s", v, "{:,.0f}/s",
        None if v is None else v >= 10000)
    v = ing.get("new_rate_per_cpu")
    row("ingestion, every heartbeat a new cache, per second of server CPU", "≥ 10,000/s", v, "{:,.0f}/s",
        None if v is None else v >= 10000)
    mem = (res.get("memory") or {}).get("verdict", {})
    v = mem.get("anon_per_cache_kib_at_max")
    row("memory per cache at 100,000 (anonymous RSS)", "≤ 2 KiB", v, "{:.2f} KiB", None if v is None else v <= 2.0)
    v = mem.get("rss_per_cache_kib_at_max")
    row("memory per cache at 100,000 (all RSS, incl. GeoIP file pages)", "≤ 2 KiB", v, "{:.2f} KiB",
        None if v is None else v <= 2.0)
    cl = (res.get("client") or {}).get("verdict", {})
    v = cl.get("default_wall_ms")
    row("shoal-client run, default Python", "≤ 150 ms", v, "{:.0f} ms", None if v is None else v <= 150.0)
    return common.table(["target (issue 8)", "goal", "measured (median)", "verdict"], rows)


def update_doc(out: str, doc: str = DOC) -> List[str]:
    """Replace each ``<!-- bench:NAME -->...<!-- /bench:NAME -->`` block; return the names replaced."""
    res = {name: load(out, name) for name in BENCHMARKS + ["soak"]}
    blocks: Dict[str, str] = {}
    for name, data in res.items():
        if data is not None and not data.get("quick"):
            png = os.path.relpath(os.path.join(out, name + ".png"), os.path.dirname(doc))
            blocks[name] = f"{data['table_md']}\n\n![{name}]({png})"
    some = next((d for d in res.values() if d is not None), None)
    if some is not None:
        blocks["machine"] = machine_md(some)
    blocks["targets"] = targets_md(res)
    with open(doc) as fh:
        text = fh.read()
    done = []
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
        text, n = pattern.subn(lambda m: m.group(1) + body + m.group(2), text)
        if n:
            done.append(name)
    tmp = doc + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, doc)
    return done


def main(argv: Optional[List[str]] = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run these benchmarks only")
    p.add_argument("--doc-only", action="store_true", help="only rewrite docs/performance.md from the results")
    args = p.parse_args(argv)
    failed = []
    if not args.doc_only:
        names = args.only or BENCHMARKS
        extra = ["--quick"] if args.quick else []
        with tempfile.TemporaryDirectory(prefix="shoal-bench-node-") as tmp:
            node = common.RabbitNode(tmp)
            node.start()
            env = dict(os.environ, SHOAL_BENCH_AMQP=f"127.0.0.1:{node.amqp_port}",
                       SHOAL_BENCH_NODE=f"{node.name}:{tmp}")
            try:
                for name in names:
                    start = time.monotonic()
                    print(f"==> bench/{name}.py", flush=True)
                    code = subprocess.call([sys.executable, os.path.join(common.BENCH_DIR, name + ".py"),
                                            "--out", args.out, *extra], env=env)
                    print(f"<== {name}: exit {code} after {time.monotonic() - start:.0f} s\n", flush=True)
                    if code != 0:
                        failed.append(name)
            finally:
                node.stop()
    if not args.quick or args.doc_only:
        done = update_doc(args.out)
        print("docs/performance.md: regenerated " + ", ".join(done))
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
