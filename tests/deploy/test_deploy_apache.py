"""shoal-server under a real Apache httpd with mod_wsgi, configured by the shipped conf/shoal.conf.

The shipped file is templated only where a test must differ from an EL host (paths into a temp
ServerRoot, the service account, the venv's site-packages); every substitution is checked, so a
change to shoal.conf that the test would silently skip fails here instead.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from typing import Dict, List

import pytest

from support.heartbeats import upstream_heartbeat
from support.procs import http_get, write_ini
from support.rabbitnode import free_port, wait_port
from support.tools import requires

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONF_DIR = os.path.join(ROOT, "shoal-server", "conf")
STATIC_DIR = os.path.join(ROOT, "shoal-server", "shoal_server", "static")
APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"

# (public ip, load): caches spread over three continents; the client is in Vancouver.
CACHES = [("142.90.0.1", 500.0), ("128.142.0.1", 100.0), ("131.225.0.1", 900.0),
          ("193.62.0.1", 50.0), ("202.122.32.1", 10.0), ("134.158.0.1", 300.0)]
CLIENT_IP = "142.103.0.1"

pytestmark = requires("mod_wsgi", os.path.exists(APACHE) and os.path.exists(f"{MODULES}/mod_wsgi.so"), "apache2 with mod_wsgi")


def substitute(text: str, old: str, new: str) -> str:
    assert old in text, f"shoal.conf no longer contains {old!r}; update this test's template"
    return text.replace(old, new)


def others_can_read(path: str) -> bool:
    """Whether an unrelated account (Apache's www-data) can reach ``path``: o+x on every parent, o+r on it."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent):
        if not os.stat(parent).st_mode & 0o001:
            return False
        parent = os.path.dirname(parent)
    return bool(os.stat(path).st_mode & 0o004)


def python_libraries(server_root: str) -> tuple:
    """(python-path for the daemon, static directory) that Apache's account can read.

    Normally the venv's site-packages and the work tree themselves. When they sit under a private
    directory (a checkout in /root), a hard-linked (else copied) view of site-packages plus the
    shoal_server package goes into the world-readable ServerRoot instead.
    """
    site = sysconfig.get_paths()["purelib"]
    if others_can_read(site) and others_can_read(STATIC_DIR):
        return site, STATIC_DIR
    view = os.path.join(server_root, "pylib")
    for src, dest in ((site, view), (os.path.dirname(STATIC_DIR), os.path.join(view, "shoal_server"))):
        if subprocess.run(["cp", "-al", src, dest], capture_output=True).returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(["cp", "-a", src, dest], check=True)
    for name in os.listdir(view):  # the editable install's finder would point back into the private tree
        if name.startswith("__editable__"):
            os.remove(os.path.join(view, name))
    return view, os.path.join(view, "shoal_server", "static")


def shoal_conf(server_root: str, config_path: str, user: str, site: str, static: str) -> str:
    """The shipped shoal.conf with this machine's paths in place of the EL ones."""
    with open(os.path.join(CONF_DIR, "shoal.conf")) as fh:
        text = fh.read()
    share = os.path.join(server_root, "share")
    text = substitute(text, "/usr/share/shoal-server/static", static)
    text = substitute(text, "/usr/share/shoal-server/shoal.wsgi", os.path.join(share, "shoal.wsgi"))
    text = substitute(text, "<Directory /usr/share/shoal-server>", f"<Directory {share}>")
    text = substitute(text, "/etc/shoal/shoal_server.conf", config_path)
    text = substitute(text, "user=shoal group=shoal", f"user={user} group={user}" if user else "")
    # mod_wsgi is built for Debian's /usr/bin/python3; the venv's packages come in by path.
    text = substitute(text, "display-name=shoal-server", f"display-name=shoal-server python-path={site}")
    assert "/usr/share/shoal-server" not in text and "/etc/shoal" not in text
    return text


def httpd_conf(server_root: str, port: int, user: str) -> str:
    lines = [
        f'ServerRoot "{server_root}"',
        f"Listen 127.0.0.1:{port}",
        "ServerName 127.0.0.1",
        f"PidFile {server_root}/httpd.pid",
        f"DefaultRuntimeDir {server_root}/run",
        f"ErrorLog {server_root}/error.log",
        "LogLevel warn wsgi:info",
        'LogFormat "%h %l %u %t \\"%r\\" %>s %b" common',
        f"CustomLog {server_root}/access.log common",
        f"TypesConfig /etc/mime.types",
    ]
    for name in ("mpm_event", "authz_core", "alias", "env", "mime", "headers", "wsgi"):
        lines.append(f"LoadModule {name}_module {MODULES}/mod_{name}.so")
    if user:
        lines += [f"User {user}", f"Group {user}"]
    lines.append(f"Include {server_root}/shoal.conf")
    return "\n".join(lines) + "\n"


class Apache:
    """apache2 in the foreground with a temp ServerRoot; stopped by PID."""

    def __init__(self, server_root: str, config_path: str) -> None:
        self.root = server_root
        self.port = free_port()
        self.user = "www-data" if os.geteuid() == 0 else ""
        os.makedirs(os.path.join(server_root, "run"))
        os.makedirs(os.path.join(server_root, "share"))
        shutil.copy(os.path.join(CONF_DIR, "shoal.wsgi"), os.path.join(server_root, "share", "shoal.wsgi"))
        site, self.static_dir = python_libraries(server_root)
        with open(os.path.join(server_root, "shoal.conf"), "w") as fh:
            fh.write(shoal_conf(server_root, config_path, self.user, site, self.static_dir))
        self.conf = os.path.join(server_root, "httpd.conf")
        with open(self.conf, "w") as fh:
            fh.write(httpd_conf(server_root, self.port, self.user))
        self.proc: subprocess.Popen = None  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Apache":
        check = subprocess.run([APACHE, "-f", self.conf, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        out = open(os.path.join(self.root, "apache.out"), "wb")
        self.proc = subprocess.Popen([APACHE, "-f", self.conf, "-DFOREGROUND"], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        wait_port(self.port, timeout=30, proc=self.proc)
        return self

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.root, "error.log"), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def get_json(self, path: str) -> dict:
        status, _, body = http_get(self.url + path)
        assert status == 200, (status, body[:300], self.error_log()[-2000:])
        return json.loads(body)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: apache and its children only
            self.proc.wait()


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError, ValueError) as err:
            last = err
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s; last: {str(last)[:500]}")


def children_named(parent: int, name: str) -> List[int]:
    """PIDs of processes under ``parent`` (any depth) whose command line starts with ``name``."""
    ppid: Dict[int, int] = {}
    cmd: Dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd[int(entry)] = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue

    def under(pid: int) -> bool:
        seen = 0
        while pid in ppid and seen < 64:
            pid = ppid[pid]
            if pid == parent:
                return True
            seen += 1
        return False

    return [pid for pid, line in cmd.items() if line.startswith(name) and under(pid)]


@pytest.fixture
def apache_root():
    # Apache's workers (www-data) must reach the daemon's socket and read the script and config:
    # a world-searchable directory, unlike pytest's 0700 tmp_path.
    root = tempfile.mkdtemp(prefix="shoal-apache-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_apache_mod_wsgi_answers_like_the_dev_server(apache_root, exchange, publisher, server_factory):
    cache_settings = {"cache_cleanse_interval": 1, "cache_inactive_time": 120}
    dev = server_factory(cache=cache_settings)

    config_path = os.path.join(apache_root, "shoal_server.conf")
    write_ini(config_path, {
        "general": {},
        "rabbitmq": {"amqp_server_url": "127.0.0.1", "amqp_port": 5672, "amqp_exchange": exchange},
        "cache": cache_settings,
        "logging": {"logging_level": "info"},
    })
    os.chmod(config_path, 0o644)
    apache = Apache(apache_root, config_path)
    try:
        apache.start()
        # The service (consumer thread) starts with the first request of the daemon process.
        wait_until(lambda: apache.get_json("/healthz").get("consumer_connected"), 30,
                   "Apache's consumer connected")

        for ip, load in CACHES:
            publisher.send(upstream_heartbeat(ip, load=load, hostname=f"squid-{ip.replace('.', '-')}.example.org"))
        for server in (dev, apache):
            wait_until(lambda s=server: len(s.get_json("/all")) == len(CACHES), 20, f"{len(CACHES)} caches")

        path = f"/nearest/{len(CACHES)}?ip={CLIENT_IP}"
        via_apache, via_dev = apache.get_json(path), dev.get_json(path)

        def ranked(answer: dict) -> List[tuple]:
            return [(answer[str(i)]["hostname"], answer[str(i)]["public_ip"], answer[str(i)]["load"],
                     answer[str(i)]["distance"]) for i in range(len(answer))]

        assert ranked(via_apache) == ranked(via_dev)
        assert len(via_apache) == len(CACHES)
        # The answer is really ranked for the client's place: Vancouver's TRIUMF cache comes first.
        assert via_apache["0"]["public_ip"] == "142.90.0.1"

        # The PAC file, too, is the same through Apache.
        status_a, _, pac_a = http_get(f"{apache.url}/wpad.dat?ip={CLIENT_IP}")
        status_d, _, pac_d = http_get(f"{dev.url}/wpad.dat?ip={CLIENT_IP}")
        assert (status_a, pac_a) == (status_d, pac_d) == (200, pac_d)

        # One daemon process holds the table: every request (threads) sees all caches.
        for _ in range(20):
            assert apache.get_json("/healthz")["caches"] == len(CACHES)
        daemons = children_named(apache.proc.pid, "shoal-server")
        assert len(daemons) == 1, daemons

        # Static files come from Apache itself (Alias), not from Python: Apache's own headers.
        status, headers, body = http_get(f"{apache.url}/static/status.css")
        with open(os.path.join(apache.static_dir, "status.css"), "rb") as fh:
            assert (status, body) == (200, fh.read())
        assert "Last-Modified" in headers and headers.get("Cache-Control") == "max-age=86400"

        # The status page renders through mod_wsgi.
        status, _, page = http_get(apache.url + "/")
        assert status == 200 and b"squid-142-90-0-1.example.org" in page

        assert "Traceback" not in apache.error_log()
    finally:
        apache.stop()
    assert not children_named(os.getpid(), "shoal-server"), "the mod_wsgi daemon outlived apache"


REPO_MODULES = ("mpm_event", "authz_core", "alias", "mime", "headers", "autoindex", "dir")


def test_apache_serves_the_yum_repository(built, apache_root, tmp_path):
    """repo/shoal-repo.conf in a real Apache serves `make repo`'s output; dnf installs nothing but reads it all."""
    from test_deploy_repo import expected_packages, repoquery

    docroot = os.path.join(apache_root, "shoal-repo")
    port = free_port()
    url = f"http://127.0.0.1:{port}/repo"
    subprocess.run([os.path.join(ROOT, "repo", "make-repo.sh")], check=True, capture_output=True,
                   env={**os.environ, "SHOAL_DIST_DIR": str(built.dist), "SHOAL_REPO_DIR": docroot,
                        "SHOAL_REPO_URL": url})
    for dirpath, dirnames, filenames in os.walk(docroot):  # Apache's account reads it
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    with open(os.path.join(ROOT, "repo", "shoal-repo.conf")) as fh:
        snippet = substitute(fh.read(), "/var/www/shoal-repo", docroot)
    user = "www-data" if os.geteuid() == 0 else ""
    lines = [f'ServerRoot "{apache_root}"', f"Listen 127.0.0.1:{port}", "ServerName 127.0.0.1",
             f"PidFile {apache_root}/httpd.pid", f"DefaultRuntimeDir {apache_root}",
             f"ErrorLog {apache_root}/error.log", "TypesConfig /etc/mime.types"]
    lines += [f"LoadModule {name}_module {MODULES}/mod_{name}.so" for name in REPO_MODULES]
    lines += [f"User {user}", f"Group {user}"] if user else []
    with open(os.path.join(apache_root, "shoal-repo.conf"), "w") as fh:
        fh.write(snippet)
    lines.append(f"Include {apache_root}/shoal-repo.conf")
    conf = os.path.join(apache_root, "httpd.conf")
    with open(conf, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    check = subprocess.run([APACHE, "-f", conf, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([APACHE, "-f", conf, "-DFOREGROUND"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, timeout=30, proc=proc)
        status, headers, body = http_get(f"{url}/prod/repodata/repomd.xml")
        assert status == 200 and b"<repomd" in body and "max-age=300" in headers.get("Cache-Control", "")
        rpm_name = built.rpm("client").name
        status, headers, _ = http_get(f"{url}/prod/{rpm_name}")
        assert status == 200 and headers.get("Content-Type") == "application/x-rpm"
        status, _, listing = http_get(f"{url}/prod/")
        assert status == 200 and rpm_name.encode() in listing
        # dnf through the shoal.repo that make-repo.sh wrote for this URL.
        reposdir = tmp_path / "yum.repos.d"
        reposdir.mkdir()
        shutil.copy(os.path.join(docroot, "shoal.repo"), reposdir / "shoal.repo")
        assert repoquery(tmp_path / "dnf", reposdir=reposdir) == \
            [row.format(repo="shoal") for row in expected_packages(built)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: this apache and its children only
            proc.wait()
