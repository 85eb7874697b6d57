"""Issue 12 item 6: our shoal-client is a drop-in for upstream's, against a real shoal-server.

Every upstream client config (tests/compat/configs/<release>/shoal_client*.conf, the key sets of
0.7.1 to HEAD) loads with warnings only, and the command lines of upstream shoal-client 1.0.4's
README (``--dump``, the bare cron line, ``--frontier``, ``-n/--squids``, ``-k``, ``-o``) do the
same job against a real server fed through the real broker: the nearest caches, in the server's
order, then the configured fallback. Each run adds only ``--cvmfs-config``/``--lock-file`` (and
``-c``) so that the test stays in its temp directory.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import uuid

import pytest

from support.heartbeats import Publisher, upstream_heartbeat
from support.procs import ServerProcess

pytestmark = pytest.mark.integration

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = os.path.join(ROOT, "tests", "compat", "configs")
CLIENT = os.path.join(os.path.dirname(sys.executable), "shoal-client")

# The key sets of upstream's client configs, written from each tag's config.py and sample, used when
# tests/compat/configs has none (see its README); the hosts are replaced by the test server below.
BUILTIN = {
    "0.7.1/shoal_client.conf": "[general]\ncvmfs_config = /etc/cvmfs/default.local\n"
                               "shoal_server_url = http://localhost:8080/nearest\n"
                               "default_squid_proxy = http://chrysaor.westgrid.ca:3128;"
                               "http://cernvm-webfs.atlas-canada.ca:3128;DIRECT\n",
    "shoal-client-1.0.4/shoal_client.conf": "[general]\nshoal_server_url = http://shoal.heprc.uvic.ca/nearest\n",
    "shoal-client-1.0.4/shoal_client-all-keys.conf": "[general]\nshoal_server_url = http://localhost:8080/nearestverified\n"
                                                     "default_squid_proxy = http://squid.example.com:3128;"
                                                     "http://squid.example.org:3128;DIRECT\n",
    "HEAD/shoal_client.conf": "[general]\ncvmfs_url = http://shoal.heprc.uvic.ca/nearestcvmfs\n"
                              "conditions_url = http://shoal.heprc.uvic.ca/nearestconditions\n",
    "HEAD/shoal_client-all-keys.conf": "[general]\ncvmfs_url = http://localhost:8080/nearestcvmfs\n"
                                       "conditions_url = http://localhost:8080/nearestconditions\n"
                                       "default_cache_proxy = http://squid.example.com:3128;"
                                       "http://squid.example.org:3128;DIRECT\n",
}

# (hostname, public_ip, port, load, upstream): ranked by load (same place for all).
CACHES = [("squid-05.example.org", "142.104.60.11", 3128, 10.0, "both"),
          ("cvmfs-only.example.org", "142.104.60.12", 3129, 20.0, "cvmfs"),
          ("frontier-only.example.org", "142.104.60.13", 3130, 30.0, "frontier"),
          ("squid-d.example.org", "142.104.60.14", 3128, 40.0, "both")]


def upstream_configs() -> dict:
    found = {os.path.relpath(p, CONFIGS): open(p, encoding="utf-8").read()
             for p in sorted(glob.glob(os.path.join(CONFIGS, "*", "shoal_client*.conf")))}
    return found or dict(BUILTIN)


CONFIG_TEXTS = upstream_configs()


def point_at(text: str, base: str) -> str:
    """The config with every upstream server host replaced by ours (paths kept: /nearest, /nearestcvmfs ...)."""
    return re.sub(r"https?://(localhost:8080|shoal\.heprc\.uvic\.ca)", base, text)


def expected_fallback(text: str) -> list:
    """The configured fallback; none when unset (the file had no proxies before Shoal: issue 15, no DIRECT)."""
    match = re.search(r"^(?:default_squid_proxy|default_cache_proxy)\s*=\s*(.+)$", text, re.M)
    return match.group(1).strip().split(";") if match else []


def cvmfs_value(caches: list, fallback: list) -> str:
    """CACHES are at one place, so the server serves them as one group: CVMFS gets them joined by "|"."""
    return ";".join(["|".join(caches)] + fallback)


def renamed_keys(text: str) -> list:
    return re.findall(r"^(cvmfs_url|default_cache_proxy)\s*=", text, re.M)


def url_path(text: str, frontier: bool) -> str:
    key = "conditions_url" if frontier and "conditions_url" in text else "(?:shoal_server_url|cvmfs_url)"
    match = re.search(rf"^{key}\s*=\s*\S+?://[^/\s]+(/\S*)$", text, re.M)
    return match.group(1) if match else "/nearest"


@pytest.fixture(scope="module")
def fed_server(request, tmp_path_factory):
    """A real shoal-server on the shared broker with CACHES, fed as upstream agents send them."""
    exchange = f"shoal-test-client-dropin-{uuid.uuid4().hex[:8]}"
    broker = {"amqp_server_url": "127.0.0.1", "amqp_port": 5672, "amqp_username": "guest", "amqp_password": "guest",
              "amqp_exchange": exchange}
    server = ServerProcess(str(tmp_path_factory.mktemp("server")), broker, {}, {}, None).start()
    publisher = Publisher(exchange)
    try:
        for hostname, ip, port, load, upstream in CACHES:
            publisher.send(upstream_heartbeat(ip, load=load, port=port, hostname=hostname, upstream=upstream))
        server.wait_for(lambda doc: len(doc) == len(CACHES), timeout=30, path="/nearest")
        yield server
    finally:
        publisher.close()
        server.stop()


def caches_for(path: str) -> list:
    wanted = {"/nearestcvmfs": ("cvmfs", "both"), "/nearestconditions": ("frontier", "both")}.get(path)
    return [f"http://{h}:{p}" for h, _, p, _, up in CACHES if wanted is None or up in wanted]


def run(tmp_path, conf_text: str, *args: str, env: dict | None = None):
    conf = tmp_path / "shoal_client.conf"
    conf.write_text(conf_text)
    cvmfs = tmp_path / "default.local"
    if not cvmfs.exists():
        cvmfs.write_bytes(b"CVMFS_REPOSITORIES=atlas.cern.ch\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_CLIENT", "FRONTIER"))}
    environ.update(env or {})
    proc = subprocess.run([CLIENT, "-c", str(conf), "--cvmfs-config", str(cvmfs), "--lock-file",
                           str(tmp_path / "lock"), *args], capture_output=True, text=True, env=environ, timeout=60)
    return proc, cvmfs


@pytest.fixture(scope="module", autouse=True)
def _client_installed():
    if not os.access(CLIENT, os.X_OK):
        pytest.fail(f"{CLIENT} is missing: the venv must have shoal-client installed (make venv)")


@pytest.mark.parametrize("name", sorted(CONFIG_TEXTS))
def test_readme_command_lines_do_the_same_job(name, fed_server, tmp_path):
    text = point_at(CONFIG_TEXTS[name], fed_server.url)
    path = url_path(text, frontier=False)
    if path == "/nearestverified":
        expected = []  # nothing is verified on this server: upstream would fall back to the defaults
    else:
        expected = caches_for(path)[:5]
    fallback = expected_fallback(text)

    # `shoal-client --dump`: the proxy string, nothing written; a warning per renamed key only.
    dump, cvmfs = run(tmp_path, text, "--dump")
    if not expected:
        assert dump.returncode == 7, dump.stderr  # no usable cache: exit NO_CACHES, the file is kept
        return
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout == cvmfs_value(expected, fallback) + "\n"
    warnings = [line for line in dump.stderr.splitlines() if line]
    assert len(warnings) == len(renamed_keys(text)), dump.stderr
    for key in renamed_keys(text):
        assert any(key in w and "read as" in w for w in warnings), dump.stderr
    assert cvmfs.read_bytes() == b"CVMFS_REPOSITORIES=atlas.cern.ch\n"

    # The cron line `0,30 * * * * /usr/bin/shoal-client`: the proxies are set (here: in the file).
    cron, cvmfs = run(tmp_path, text)
    assert cron.returncode == 0, cron.stderr
    assert cvmfs.read_bytes() == (b"CVMFS_REPOSITORIES=atlas.cern.ch\nCVMFS_HTTP_PROXY=\""
                                  + cvmfs_value(expected, fallback).encode() + b"\"\n")

    # `-k` / `-o` (1.0.3, 1.0.4) and `-n 2` / `--squids 2` (1.0.x), `--caches 2` (HEAD).
    for flags in (["-k", "-d"], ["-k", "-o", "-d"], ["-d", "-n", "2"], ["-d", "--squids", "2"],
                  ["-k", "-d", "--caches", "2"]):
        proc, _ = run(tmp_path, text, *flags, "-q")
        count = 2 if "2" in flags else len(expected)
        assert (proc.returncode, proc.stdout) == (0, cvmfs_value(expected[:count], fallback) + "\n"), (flags, proc.stderr)

    # `shoal-client --frontier` (frontier_set.sh puts the output into FRONTIER_SERVER).
    frontier_path = url_path(text, frontier=True)
    frontier_caches = caches_for(frontier_path)[:5]
    site = [p for p in fallback if p != "DIRECT"]
    preset = "(serverurl=http://frontier.example.org:8000/atlr)"
    proc, _ = run(tmp_path, text, "--frontier", "-q", env={"FRONTIER_SERVER": preset})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == preset + "".join(f"(proxyurl={u})" for u in frontier_caches + site) + "\n"


def test_misspelt_upstream_key_is_still_an_error(fed_server, tmp_path):
    proc, _ = run(tmp_path, f"[general]\ncvmfs_url = {fed_server.url}/nearest\ndefault_cache_proxies = DIRECT\n", "-d")
    assert proc.returncode == 2
    assert "default_cache_proxies: unknown setting" in proc.stderr


def test_cron_line_with_talk_sets_the_running_proxies_as_upstream_did(fed_server, tmp_path):
    """Upstream 1.0.x's cron run ended in `cvmfs_talk proxy set VALUE`; `--talk` does the same (a stub here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "talk.args"
    stub = bindir / "cvmfs_talk"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    stub.chmod(0o755)
    text = point_at(CONFIG_TEXTS.get("shoal-client-1.0.4/shoal_client.conf", BUILTIN["shoal-client-1.0.4/shoal_client.conf"]),
                    fed_server.url)
    proc, cvmfs = run(tmp_path, text, "--talk", "-q", env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert (proc.returncode, proc.stderr) == (0, "")
    value = cvmfs_value(caches_for("/nearest")[:5], [])
    assert record.read_text().splitlines() == ["proxy", "set", value]
    assert f'CVMFS_HTTP_PROXY="{value}"'.encode() in cvmfs.read_bytes()
