"""The real ``shoal-client`` command against a real shoal-server fed through the real broker,
plus error injection (HTTP 500, invalid JSON, slow answers, TLS) from small stdlib servers."""
from __future__ import annotations

import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time

import pytest

from support.heartbeats import upstream_heartbeat
from support.procs import write_ini
from support.tlsbroker import issue, make_ca

CLIENT = os.path.join(os.path.dirname(sys.executable), "shoal-client")
OLD = 1_000_000_000  # mtime given to the CVMFS file before each run

DEFAULT_LOCAL = (
    b"# /etc/cvmfs/default.local -- managed by puppet; CVMFS_HTTP_PROXY is rewritten by shoal-client\n"
    b"CVMFS_REPOSITORIES=\"atlas.cern.ch,atlas-condb.cern.ch,grid.cern.ch,sft.cern.ch,cms.cern.ch\"\n"
    b"CVMFS_QUOTA_LIMIT=20000\n"
    b"CVMFS_CACHE_BASE='/var/lib/cvmfs'\n"
    b"\n"
    b"#CVMFS_HTTP_PROXY=\"http://squid.example.org:3128;DIRECT\"\n"
    b"CVMFS_HTTP_PROXY=\"http://site-squid.example.org:3128|http://site-squid2.example.org:3128;DIRECT\"  # shoal\n"
    b"export CVMFS_KEYS_DIR=/etc/cvmfs/keys\n"
    b"\tCVMFS_DEBUGLOG=/tmp/cvmfs-$USER.log\n"
    b"CVMFS_SERVER_URL=\"http://cvmfs-s1.example.org/cvmfs/@fqrn@;http://cvmfs-s1b.example.org/cvmfs/@fqrn@\"\n"
    b"CVMFS_USE_GEOAPI=yes   \n"
    b"# Z\xc3\xbcrich worker nodes \xe2\x80\x94 do not edit by hand\r\n"
    b"CVMFS_MAX_RETRIES=3"
)
PROXY_LINE = 6

# (hostname, public_ip, port, load): the server ranks a client it cannot place (127.0.0.1) by load.
CACHES = [("squid-a.example.org", "142.104.60.11", 3128, 10.0), ("2a00:1450:4001::20", "2a00:1450:4001::20", 3129, 20.0),
          ("", "206.12.1.7", 8080, 30.0), ("squid-d.example.org", "137.82.1.9", 3128, 40.0)]
URLS = ["http://squid-a.example.org:3128", "http://[2a00:1450:4001::20]:3129", "http://206.12.1.7:8080",
        "http://squid-d.example.org:3128"]
# Nearly idle caches of a client the server cannot place cost nearly the same: one "|" group (the
# server's ``group``, issue 15), then the site's own proxies remembered from DEFAULT_LOCAL, without DIRECT.
SITE = "http://site-squid.example.org:3128|http://site-squid2.example.org:3128"
VALUE = "|".join(URLS) + ";" + SITE


def run_client(*args: str, env: dict | None = None, timeout: float = 60):
    """Run the installed console script; return (CompletedProcess, wall seconds)."""
    if not os.access(CLIENT, os.X_OK):
        pytest.fail(f"{CLIENT} is missing: the venv must have shoal-client installed (make venv)")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_CLIENT")}
    environ.update(env or {})
    start = time.monotonic()
    proc = subprocess.run([CLIENT, *args], capture_output=True, text=True, env=environ, timeout=timeout)
    return proc, time.monotonic() - start


class CvmfsFile:
    """A default.local in a temp dir, with helpers to check it was left exactly as it was."""

    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "default.local")
        self.reset()

    def reset(self, content: bytes = DEFAULT_LOCAL) -> None:
        with open(self.path, "wb") as fh:
            fh.write(content)
        os.chmod(self.path, 0o644)
        os.utime(self.path, (OLD, OLD))

    def read(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()

    def assert_untouched(self, content: bytes = DEFAULT_LOCAL) -> None:
        assert self.read() == content
        assert os.stat(self.path).st_mtime == OLD
        assert os.listdir(self.dir) == ["default.local"]


def client_config(path, url: str, cvmfs: CvmfsFile, **extra) -> str:
    lock = os.path.join(os.path.dirname(str(path)), "shoal-client.lock")  # not /run: tests stay in their tmp dir
    return write_ini(str(path), {"general": {"shoal_server_url": url, "cvmfs_config": cvmfs.path, "lock_file": lock,
                                             **extra}})


def feed(server, publisher) -> dict:
    for hostname, ip, port, load in CACHES:
        hb = upstream_heartbeat(ip, load=load, port=port, hostname=hostname or None)
        if not hostname:
            hb["hostname"] = ""  # the server falls back to the public IP
        publisher.send(hb)
    return server.wait_for(lambda doc: len(doc) == len(CACHES), timeout=30, path="/nearest")


def test_real_server_end_to_end(server_factory, publisher, tmp_path):
    server = server_factory()
    answer = feed(server, publisher)
    ranked = [answer[k] for k in sorted(answer, key=int)]
    assert [r["squid_port"] for r in ranked] == [c[2] for c in CACHES]  # the server's order is by load here
    cvmfs = CvmfsFile(tmp_path / "cvmfs")
    conf = client_config(tmp_path / "shoal_client.conf", server.url + "/nearest", cvmfs)

    dump, dump_seconds = run_client("-c", conf, "--dump")
    assert (dump.returncode, dump.stdout, dump.stderr) == (0, VALUE + "\n", "")
    print(f"shoal-client --dump against a local shoal-server: {dump_seconds:.3f} s wall")
    frontier, _ = run_client("-c", conf, "--frontier")
    assert (frontier.returncode, frontier.stdout) == (0, "".join(f"(proxyurl={u})" for u in URLS) + "\n")
    two, _ = run_client("-c", conf, "-d", "-n", "2")
    assert two.stdout == "|".join(URLS[:2]) + ";" + SITE + "\n"
    cvmfs.assert_untouched()

    # Killed after the complete temp file is written, before the rename: the original stays.
    killed, _ = run_client("-c", conf, env={"SHOAL_CLIENT_TEST_HOOK": "kill-before-rename"})
    assert killed.returncode == -signal.SIGKILL
    assert cvmfs.read() == DEFAULT_LOCAL and os.stat(cvmfs.path).st_mtime == OLD
    leftovers = [n for n in os.listdir(cvmfs.dir) if n != "default.local"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".default.local.")

    run, _ = run_client("-c", conf)
    assert run.returncode == 0, run.stderr
    assert f"updated {cvmfs.path}: CVMFS_HTTP_PROXY={VALUE}" in run.stderr
    new_lines, old_lines = cvmfs.read().splitlines(True), DEFAULT_LOCAL.splitlines(True)
    assert len(new_lines) == len(old_lines)
    for i, (old, new) in enumerate(zip(old_lines, new_lines)):
        if i != PROXY_LINE:
            assert new == old, i
    assert new_lines[PROXY_LINE] == f'CVMFS_HTTP_PROXY="{VALUE}"  # shoal\n'.encode()
    assert os.listdir(cvmfs.dir) == ["default.local"]  # the interrupted run's temp file is gone
    assert oct(os.stat(cvmfs.path).st_mode & 0o7777) == oct(0o644)

    # A second run with the same answer leaves the file alone (mtime unchanged).
    updated = cvmfs.read()
    os.utime(cvmfs.path, (OLD, OLD))
    again, _ = run_client("-c", conf, "--server", server.url + "/nearest")
    assert again.returncode == 0 and "unchanged" in again.stderr
    cvmfs.assert_untouched(updated)

    # Server stopped: non-zero exit, one line on stderr, file untouched.
    cvmfs.reset()
    server.stop()
    down, _ = run_client("-c", conf)
    assert down.returncode == 3
    assert down.stderr.startswith("shoal-client: error: cannot reach ") and down.stderr.count("\n") == 1
    cvmfs.assert_untouched()


def test_real_server_without_caches(server_factory, tmp_path):
    server = server_factory()
    assert server.get_json("/nearest") == {}
    cvmfs = CvmfsFile(tmp_path / "cvmfs")
    proc, _ = run_client("-s", server.url + "/nearest", "--cvmfs-config", cvmfs.path, "-c",
                         client_config(tmp_path / "c.conf", server.url + "/nearest", cvmfs))
    assert proc.returncode == 7
    assert "the server returned no caches" in proc.stderr
    cvmfs.assert_untouched()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {
        "/500": (500, b"Internal Server Error"),
        "/garbage": (200, b"<html>Shoal is down for maintenance</html>"),
        "/truncated": (200, b'{"0": {"hostname": "squid-a.example.org", "squid_port": 31'),
        "/nearest": (200, json.dumps({"0": {"hostname": "tls.example.org", "squid_port": 3128}}).encode()),
    }

    def do_GET(self):
        if self.path == "/slow":
            time.sleep(5)
        status, body = self.routes.get(self.path, (200, b"{}"))
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    """A stdlib HTTP server answering with errors, for failure injection; ``wrap`` adds TLS."""
    servers = []

    def start(context: ssl.SSLContext | None = None):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        if context is not None:
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append(httpd)
        return httpd.server_address[1]

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("path,code,reason", [
    ("/500", 5, "HTTP 500"), ("/garbage", 6, "invalid JSON"), ("/truncated", 6, "invalid JSON"),
    ("/empty", 7, "no caches"), ("/slow", 4, "did not answer in time")])
def test_failures_leave_the_file_alone(fake_server, tmp_path, path, code, reason):
    port = fake_server()
    cvmfs = CvmfsFile(tmp_path / "cvmfs")
    conf = client_config(tmp_path / "c.conf", f"http://127.0.0.1:{port}{path}", cvmfs, timeout=1)
    proc, _ = run_client("-c", conf)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("shoal-client: error: ") and reason in proc.stderr
    assert proc.stderr.count("\n") == 1
    cvmfs.assert_untouched()


def test_https_is_verified(fake_server, tmp_path):
    ca_dir = str(tmp_path / "ca")
    ca_cert = make_ca(ca_dir, cn="Shoal client test CA")
    ident = issue(ca_dir, "broker", "localhost", "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ident.cert, ident.key)
    port = fake_server(context)
    cvmfs = CvmfsFile(tmp_path / "cvmfs")
    url = f"https://127.0.0.1:{port}/nearest"

    untrusted, _ = run_client("-c", client_config(tmp_path / "system.conf", url, cvmfs), "-d")
    assert untrusted.returncode == 3
    assert "TLS error" in untrusted.stderr and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr

    trusted, _ = run_client("-c", client_config(tmp_path / "ca.conf", url, cvmfs, ca_file=ca_cert), "-d")
    assert (trusted.returncode, trusted.stdout) == (0, "http://tls.example.org:3128;" + SITE + "\n"), trusted.stderr

    other = make_ca(str(tmp_path / "other-ca"), cn="Some other CA")
    wrong, _ = run_client("-c", client_config(tmp_path / "other.conf", url, cvmfs, ca_file=other), "-d")
    assert wrong.returncode == 3
    cvmfs.assert_untouched()


def test_reload_runs_cvmfs_config_after_a_change(fake_server, tmp_path):
    """``--reload`` runs ``cvmfs_config reload`` (a stand-in script here: CVMFS is not installed)."""
    port = fake_server()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "reload.log"
    script = bindir / "cvmfs_config"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    script.chmod(0o755)
    cvmfs = CvmfsFile(tmp_path / "cvmfs")
    conf = client_config(tmp_path / "c.conf", f"http://127.0.0.1:{port}/nearest", cvmfs)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    first, _ = run_client("-c", conf, "--reload", env=env)
    second, _ = run_client("-c", conf, "--reload", env=env)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert log.read_text() == "reload\n"  # once: the second run changed nothing
