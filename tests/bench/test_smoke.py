"""Each benchmark runs end to end at tiny sizes (``--quick``), so none can rot; no timing is asserted.

They use the machine's broker on 5672 (each run declares its own exchange) except the SSL
benchmark, which needs its own TLS node. Results go to a temp dir, never bench/results/.
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "bench")
sys.path.insert(0, BENCH)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_bench(name, out, *extra, timeout=240):
    env = dict(os.environ, SHOAL_BENCH_AMQP="127.0.0.1:5672")
    env.pop("SHOAL_BENCH_NODE", None)
    proc = subprocess.run([sys.executable, os.path.join(BENCH, name + ".py"), "--quick", "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out / (name + ".json")) as fh:
        data = json.load(fh)
    with open(out / (name + ".png"), "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    assert data["benchmark"] == name and data["quick"] is True
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    assert data["table_md"].startswith("|") or "\n|" in data["table_md"]
    assert "| " in proc.stdout  # the table was printed
    return data


def test_ranking(tmp_path):
    data = run_bench("ranking", tmp_path)
    assert [r["caches"] for r in data["in_process"]] == [10, 100]
    assert all(r["rank_ms"] > 0 for r in data["in_process"])
    assert {(r["caches"], r["connections"]) for r in data["http"]} == {(10, 1), (10, 8)}
    assert all(r["errors"] == 0 and r["nearest_rps"] > 0 for r in data["http"])
    churn = [r for r in data["http"] if "hb/s" in r["server"]]
    assert len(churn) == 2 and churn[-1]["publisher_rate"] > 0   # /nearest measured under a heartbeat stream


def test_ingestion(tmp_path):
    data = run_bench("ingestion", tmp_path)
    for key in ("server_new", "bare_new", "server_known", "bare_known"):
        assert data["runs"][key][0]["rate"] > 0
    # The server really absorbed every message: all new caches are in its table.
    assert data["runs"]["server_known"][0]["caches"] == data["sizes"]["new"]
    assert data["in_process"]["located_fraction"] > 0.5


def test_amqp_floor(tmp_path):
    data = run_bench("amqp_floor", tmp_path)
    # Each of the five consumers took every heartbeat (the real sink's accepted count is checked
    # inside the benchmark) and was timed.
    assert set(data["runs"]) == {"blocking", "select", "shoal loop", "shoal sink", "shoal sink, no GC"}
    assert all(len(v) == 1 and v[0] > 0 for v in data["runs"].values())


def test_backlog(tmp_path):
    data = run_bench("backlog", tmp_path)
    (row,) = data["rows"]
    # Requests were answered both with nothing queued and while the whole backlog drained.
    assert row["idle"]["requests"] > 0 and row["backlog"]["requests"] > 0 and row["drain_rate"] > 0


def test_memory(tmp_path):
    data = run_bench("memory", tmp_path)
    assert [r["caches"] for r in data["rows"]] == [0, 100, 1000]
    assert data["rows"][-1]["anon_kib"] > 0
    assert data["pages"]["all"]["bytes"] > 100 * 300  # /all lists the 100 caches it had then


def test_client(tmp_path):
    data = run_bench("client", tmp_path)
    assert data["verdict"]["all_succeeded"]
    assert data["rows"][0]["python"].startswith("default")


def test_soak(tmp_path):
    data = run_bench("soak", tmp_path)
    assert data["ok"] and data["summary"]["requests"] > 0 and data["summary"]["errors"] == 0
    # Every heartbeat published was consumed, and every agent heard from is in the table.
    summary = data["summary"]
    assert summary["heartbeats_sent"] == summary["accepted"] > 0 and summary["lost"] == 0
    assert summary["caches_end"] == data["settings"]["agents"]
    assert data["command"] == ".venv/bin/python bench/soak.py --quick --out " + str(tmp_path)


def test_ssl_overhead(tmp_path):
    data = run_bench("ssl_overhead", tmp_path, timeout=300)
    raw = data["raw"]
    assert raw["connect_rate_tls"] > 0 and raw["pipelined_rate_tls"] > 0 and raw["publish_rate_plain_1"] > 0
    assert len(raw["one_tls"]) == 3


def test_run_all_rewrites_only_the_marked_blocks(tmp_path):
    import run_all
    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- bench:ranking -->\nold\n<!-- /bench:ranking -->\nmiddle\n"
                   "<!-- bench:targets -->\nold\n<!-- /bench:targets -->\nend\n")
    results = tmp_path / "results"
    results.mkdir()
    machine = {"nproc": 2, "cpu": "x", "memory_gib": 1, "python": "3", "rabbitmq": "r", "erlang": "e", "pika": "p",
               "numpy": "n", "loadavg_at_save": 1.0, "date": "d"}
    (results / "ranking.json").write_text(json.dumps({
        "benchmark": "ranking", "quick": False, "machine": machine, "table_md": "| new |\n|-----|",
        "command": ".venv/bin/python bench/ranking.py --out bench/results",
        "verdict": {"in_process_1000": 0.2, "in_process_100000": 25.0, "http_ratio_10k_p50": 1.5}}))
    assert sorted(run_all.update_doc(str(results), str(doc))) == ["ranking", "targets"]
    text = doc.read_text()
    assert text.startswith("intro\n<!-- bench:ranking -->\n| new |") and "middle" in text and text.endswith("end\n")
    assert "old" not in text
    # The table names the command that reproduces it.
    assert "Reproduce: `.venv/bin/python bench/ranking.py --out bench/results`" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ranking in-process")}
    assert rows["ranking in-process, 100,000 caches"] == ["≤ 20 ms", "25.00 ms", "**missed**", "`bench/ranking.py`"]
    assert rows["ranking in-process, 1,000 caches"] == ["≤ 1 ms", "0.200 ms", "met", "`bench/ranking.py`"]
    # A key no benchmark wrote yet is shown, not judged.
    assert rows["ranking in-process, 1,000,000 caches"] == ["≤ 5 ms", "not measured", "–", "`bench/ranking.py`"]


def test_run_all_warns_of_a_noisy_run(tmp_path):
    import run_all
    doc = tmp_path / "performance.md"
    doc.write_text("<!-- bench:noise -->\n<!-- /bench:noise -->\n<!-- bench:machine -->\n<!-- /bench:machine -->\n")
    machine = {"nproc": 2, "cpu": "x", "memory_gib": 1, "python": "3", "rabbitmq": "r", "erlang": "e", "pika": "p",
               "numpy": "n", "loadavg_at_save": 1.0, "date": "d"}
    (tmp_path / "pages.json").write_text(json.dumps({"benchmark": "pages", "quick": False, "machine": machine,
                                                     "table_md": "| t |", "spread": 0.05}))
    run = {"seconds": 10, "exit": 0, "date": "d"}
    log = {"runs": {"pages": {**run, "load_start": 0.5, "load_end": 1.5}}}
    (tmp_path / "run_all.json").write_text(json.dumps(log))
    run_all.update_doc(str(tmp_path), str(doc))
    assert "Warning" not in doc.read_text() and "| 0.5 " in doc.read_text()   # load at start, in the machine table
    assert "each wrk run lasts 2 s" in doc.read_text()
    log["runs"]["pages"]["load_end"] = 2.8                     # the benchmark's own load on 2 cores
    (tmp_path / "run_all.json").write_text(json.dumps(log))
    run_all.update_doc(str(tmp_path), str(doc))
    assert "Warning" not in doc.read_text()
    log["runs"]["pages"]["load_end"] = 3.5                     # above the 2 cores and the benchmark's own 1
    (tmp_path / "run_all.json").write_text(json.dumps(log))
    run_all.update_doc(str(tmp_path), str(doc))
    assert "**Warning: a noisy run.** pages: load average 0.5 → 3.5 on 2 cores" in doc.read_text()
    log["runs"]["pages"]["load_end"] = 1.0
    (tmp_path / "run_all.json").write_text(json.dumps(log))
    (tmp_path / "pages.json").write_text(json.dumps({"benchmark": "pages", "quick": False, "machine": machine,
                                                     "table_md": "| t |", "spread": 0.6}))
    run_all.update_doc(str(tmp_path), str(doc))
    assert "pages: repeated medians spread over 60% of their median" in doc.read_text()


def test_run_all_only_takes_commas_and_the_soak():
    import run_all
    assert run_all.names_of(["ranking,pages", "spread"]) == ["ranking", "pages", "spread"]
    assert run_all.names_of(["soak"]) == ["soak"]
    assert "soak" not in run_all.names_of(None)
    with pytest.raises(SystemExit, match="unknown benchmark nope"):
        run_all.names_of(["nope"])


def test_pages(tmp_path):
    # The cached paths answered at every size in-process; over HTTP the pages and /healthz were
    # measured side by side, /all while heartbeats of known caches streamed in.
    data = run_bench("pages", tmp_path)
    assert [r["caches"] for r in data["rows"]] == [100, 1000]
    assert all(r["status_first_ms"] > 0 and r["all_first_ms"] > 0 for r in data["rows"])
    http = {(r["path"], r["caches"]): r for r in data["http"]["rows"]}
    assert set(http) == {("/", 100), ("/all", 200), ("/", 200)}
    assert all(r["errors"] == 0 and r["ratio_p50"] > 0 for r in http.values())
    assert http[("/", 100)]["churn"] == 0 and http[("/all", 200)]["churn"] > 0
    assert data["http"]["dropped"] == 0
