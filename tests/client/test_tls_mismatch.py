"""Issue 15: on Python 2.7 and 3.6 a TLS host-name mismatch was a traceback and exit 1; it is exit 3.

A real TLS server (the venv's ssl module) presents a certificate from a test CA for another name;
the client trusts that CA (``ca_file``), so only the host-name check fails. Each interpreter runs
the client from the source tree as ``python -m shoal_client``.
"""
from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import threading

import pytest

from support.procs import write_ini
from support.tlsbroker import issue, make_ca
from support.tools import missing

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENT_SRC = os.path.join(REPO, "shoal-client")
VERSIONS = os.environ.get("SHOAL_PYENV_VERSIONS", "/root/.pyenv/versions")
PYTHONS = {"2.7": f"{VERSIONS}/2.7.18/bin/python", "3.6": f"{VERSIONS}/3.6.15/bin/python",
           "3.13": f"{VERSIONS}/3.13.0/bin/python"}
BODY = json.dumps({"0": {"hostname": "tls.example.org", "squid_port": 3128}}).encode()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """(port, CA file) of an HTTPS server whose certificate names only other.example.org."""
    ca_dir = str(tmp_path_factory.mktemp("ca"))
    ca_cert = make_ca(ca_dir, cn="Shoal client mismatch CA")
    ident = issue(ca_dir, "broker", "other.example.org")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ident.cert, ident.key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.server_address[1], ca_cert
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_host_name_mismatch_is_exit_3(version, tls_server, tmp_path):
    python = PYTHONS[version]
    if not os.access(python, os.X_OK):
        missing("pyenv Python", python)
    port, ca_cert = tls_server
    cvmfs = tmp_path / "default.local"
    cvmfs.write_bytes(b"CVMFS_QUOTA_LIMIT=20000\n")
    conf = write_ini(str(tmp_path / "c.conf"), {"general": {
        "shoal_server_url": f"https://localhost:{port}/nearest", "cvmfs_config": str(cvmfs), "ca_file": ca_cert,
        "lock_file": str(tmp_path / "lock"), "timeout": "10"}})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SHOAL_CLIENT"))}
    env.update(PYTHONPATH=CLIENT_SRC, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([python, "-m", "shoal_client", "-c", conf], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("shoal-client: error: TLS error talking to https://localhost:"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "other.example.org" in proc.stderr or "match" in proc.stderr.lower(), proc.stderr
    assert cvmfs.read_bytes() == b"CVMFS_QUOTA_LIMIT=20000\n"
