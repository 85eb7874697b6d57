"""HTTPS for clients: a real Apache TLS virtual host in front of shoal-server, and shoal-client verifying it.

Apache terminates TLS (certificate from shoal-ca, TLS >= 1.2) and reverse-proxies to shoal-server on
loopback, which trusts 127.0.0.1 for X-Forwarded-For. The client verifies the server with `ca_file`,
under the venv's Python and under Python 2.7 (the oldest worker nodes), and refuses a server its CA
file does not vouch for.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request

import pytest

from support.heartbeats import upstream_heartbeat
from support.procs import write_ini
from support.rabbitnode import free_port, wait_port
from support.tlsbroker import issue, make_ca
from support.tools import requires

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENT_SRC = os.path.join(REPO, "shoal-client")
PY27 = "/root/.pyenv/versions/2.7.18/bin/python"

pytestmark = requires("mod_ssl", os.path.exists(APACHE) and os.path.exists(f"{MODULES}/mod_ssl.so"), "apache2 with mod_ssl")

VHOST = """\
# The TLS virtual host of docs/security.md ("HTTPS for clients"), with test paths.
<VirtualHost 127.0.0.1:{port}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    SSLProtocol -all +TLSv1.2 +TLSv1.3
    Header always set Strict-Transport-Security "max-age=31536000"
    ProxyPreserveHost On
    ProxyPass        / http://127.0.0.1:{backend}/ timeout=30
    ProxyPassReverse / http://127.0.0.1:{backend}/
</VirtualHost>
"""


class TLSApache:
    """apache2 in the foreground with a temp ServerRoot and one TLS vhost; stopped by PID."""

    def __init__(self, root: str, cert: str, key: str, backend: int) -> None:
        self.root, self.port = root, free_port()
        os.makedirs(os.path.join(root, "run"))
        user = ["User www-data", "Group www-data"] if os.geteuid() == 0 else []
        lines = [f'ServerRoot "{root}"', f"Listen 127.0.0.1:{self.port}", "ServerName localhost",
                 f"PidFile {root}/httpd.pid", f"DefaultRuntimeDir {root}/run", f"ErrorLog {root}/error.log",
                 "LogLevel warn ssl:info", "SSLSessionCache none", *user]
        modules = [f"LoadModule {name}_module {MODULES}/mod_{name}.so"
                   for name in ("mpm_event", "authz_core", "headers", "ssl", "proxy", "proxy_http")]
        lines = modules + lines   # before the directives they define
        lines.append(VHOST.format(port=self.port, cert=cert, key=key, backend=backend))
        self.conf = os.path.join(root, "httpd.conf")
        with open(self.conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self) -> "TLSApache":
        check = subprocess.run([APACHE, "-f", self.conf, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        out = open(os.path.join(self.root, "apache.out"), "wb")
        self.proc = subprocess.Popen([APACHE, "-f", self.conf, "-DFOREGROUND"], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        wait_port(self.port, timeout=30, proc=self.proc)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)   # our own session: this apache and its children only
            proc.wait()

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.root, "error.log"), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""


@pytest.fixture
def pki(tmp_path):
    ca_cert = make_ca(str(tmp_path / "ca"), cn="Shoal web CA")
    web = issue(str(tmp_path / "ca"), "broker", "localhost", "127.0.0.1")   # any TLS server certificate
    other = make_ca(str(tmp_path / "other-ca"), cn="Shoal web CA")
    return ca_cert, web, other


@pytest.fixture
def apache_root():
    root = tempfile.mkdtemp(prefix="shoal-https-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def client(python, tmp_path, name, url, ca_file="", env_path=None):
    conf = str(tmp_path / f"{name}.conf")
    write_ini(conf, {"general": {"shoal_server_url": url, "ca_file": ca_file, "timeout": 10,
                                 "default_squid_proxy": "DIRECT"}})
    env = dict(os.environ, PYTHONPATH=CLIENT_SRC)
    return subprocess.run([python, "-m", "shoal_client", "--config", conf, "--dump"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=str(tmp_path))


def test_client_fetches_nearest_over_https_through_apache_and_verifies_the_server(
        tmp_path, apache_root, pki, server_factory, publisher):
    ca_cert, web, other_ca = pki
    server = server_factory(general={"trusted_proxies": "127.0.0.1"},
                            cache={"cache_inactive_time": 120, "cache_cleanse_interval": 5})
    hb = upstream_heartbeat("128.142.0.1", hostname="squid-https.example.org")
    publisher.send(hb)
    server.wait_for(lambda body: any(r["uuid"] == hb["uuid"] for r in body.values()), path="/all", timeout=20)
    apache = TLSApache(apache_root, web.cert, web.key, server.port).start()
    try:
        url = f"https://localhost:{apache.port}/nearest"
        ours = client(sys.executable, tmp_path, "py3", url, ca_file=ca_cert)
        assert ours.returncode == 0, ours.stderr + apache.error_log()[-2000:]
        assert ours.stdout.strip().startswith("http://squid-https.example.org:3128"), ours.stdout

        # The oldest worker nodes: Python 2.7 verifies the same way.
        if os.path.exists(PY27):
            old = client(PY27, tmp_path, "py27", url, ca_file=ca_cert)
            assert old.returncode == 0, old.stderr
            assert "squid-https.example.org" in old.stdout

        # The system CA store does not know the Shoal web CA: refused, exit 3, reason given.
        system = client(sys.executable, tmp_path, "system", url)
        assert system.returncode == 3, system.stderr
        assert "TLS error" in system.stderr and "CERTIFICATE_VERIFY_FAILED" in system.stderr

        # A CA file for another CA (an impostor's server would look like this): refused.
        impostor = client(sys.executable, tmp_path, "other", url, ca_file=other_ca)
        assert impostor.returncode == 3 and "certificate verify failed" in impostor.stderr.lower()

        # The name must match too: the certificate is for localhost and 127.0.0.1 only.
        context = ssl.create_default_context(cafile=ca_cert)
        with socket.create_connection(("127.0.0.1", apache.port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                context.wrap_socket(raw, server_hostname="shoal.example.org")

        # HSTS on every answer (browsers looking at the status page stay on HTTPS).
        with urllib.request.urlopen(url, context=context, timeout=10) as resp:
            assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
    finally:
        apache.stop()
