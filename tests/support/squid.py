"""A real Squid on loopback for tests, forwarding to a stdlib HTTP origin on loopback.

    origin = Origin({"/data": b"x" * 1000}).start()
    squid = Squid(str(tmp_path / "squid"))
    squid.start(origin.port)            # forward proxy on 127.0.0.1:squid.port
    ... urllib through squid.proxy_url, or squid.manager_url("counters") ...
    squid.stop(); squid.start(origin.port)   # same port again
    squid.close(); origin.stop()

Squid only forwards to 127.0.0.1:origin_port (never anywhere else), answers cache manager pages
to localhost, keeps a small memory cache, and has its own config, logs and pid file. Run as root,
it drops to the ``proxy`` (or ``nobody``) user, so its files then live in a private directory
under /tmp that this user can write; ``close()`` removes it. Processes are stopped by PID.
"""
from __future__ import annotations

import glob
import http.server
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from typing import Dict, List, Optional

from .rabbitnode import free_port, wait_port

SQUID_CANDIDATES = ("/usr/sbin/squid", "/usr/local/sbin/squid")


def squid_binary() -> Optional[str]:
    """The squid executable, or None when Squid is not installed."""
    found = shutil.which("squid")
    if found:
        return found
    for path in SQUID_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


class Origin:
    """A threaded stdlib HTTP server on 127.0.0.1 serving ``files`` (path -> bytes) and counting requests."""

    def __init__(self, files: Optional[Dict[str, bytes]] = None, port: Optional[int] = None,
                 cache_control: Optional[str] = None) -> None:
        self.files: Dict[str, bytes] = dict(files or {})
        self.cache_control = cache_control
        self.requests: List[str] = []
        self._port = port
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None, "origin not started"
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Origin":
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                self._answer(with_body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(with_body=False)

            def _answer(self, with_body: bool) -> None:
                path = self.path.split("://", 1)[-1]
                path = path[path.find("/"):] if "/" in path else "/"
                origin.requests.append(path)
                body = origin.files.get(path.split("?", 1)[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if origin.cache_control:
                    self.send_header("Cache-Control", origin.cache_control)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port or 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-origin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _squid_user() -> Optional[str]:
    """The unprivileged user a root-started Squid switches to; None when not running as root."""
    if os.geteuid() != 0:
        return None
    for name in ("proxy", "squid", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "nobody"


class Squid:
    """One Squid process (``squid -N``) on 127.0.0.1; ``port`` stays the same across restarts."""

    def __init__(self, base_dir: str, port: Optional[int] = None, extra_config: str = "") -> None:
        self.base_dir = base_dir
        os.makedirs(base_dir, exist_ok=True)
        self._port = port or free_port()
        self.extra_config = extra_config
        self.user = _squid_user()
        if self.user:
            # pytest's tmp dirs are private to root; the unprivileged Squid needs its own.
            self.run_dir = tempfile.mkdtemp(prefix="shoal-squid-")
            entry = pwd.getpwnam(self.user)
            os.chown(self.run_dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.run_dir, 0o755)
            link = os.path.join(base_dir, "run")
            if not os.path.lexists(link):
                os.symlink(self.run_dir, link)
        else:
            self.run_dir = base_dir
        self.config_path = os.path.join(self.run_dir, "squid.conf")
        # The service name prefixes Squid's shared-memory segments (/dev/shm/squid-NAME-*), so
        # concurrent test Squids and leftovers of a killed one never collide.
        self.service_name = "shoaltest" + uuid.uuid4().hex[:12]
        self.proc: Optional[subprocess.Popen] = None
        self.origin_port: Optional[int] = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def manager_url(self, page: str = "counters") -> str:
        return f"http://127.0.0.1:{self._port}/squid-internal-mgr/{page}"

    def _config(self, origin_port: int) -> str:
        run = self.run_dir
        lines = [
            f"http_port 127.0.0.1:{self._port}",
            "visible_hostname shoal-test-squid",
            f"pid_filename {run}/squid.pid",
            f"cache_log {run}/cache.log",
            f"access_log stdio:{run}/access.log",
            "cache_store_log none",
            "logfile_rotate 0",
            f"coredump_dir {run}",
            "netdb_filename none",
            "pinger_enable off",
            "icp_port 0",
            "htcp_port 0",
            "shutdown_lifetime 0 seconds",
            "cache_mem 16 MB",
            "maximum_object_size_in_memory 8 MB",
            "acl shoal_origin dst 127.0.0.1/32",
            f"acl shoal_origin_port port {origin_port}",
            "http_access allow localhost manager",
            "http_access deny manager",
            "http_access allow localhost shoal_origin shoal_origin_port",
            "http_access deny all",
        ]
        if self.user:
            lines.append(f"cache_effective_user {self.user}")
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    def start(self, origin_port: int, timeout: float = 30.0) -> "Squid":
        """Start Squid forwarding only to 127.0.0.1:origin_port; return once it accepts connections."""
        binary = squid_binary()
        if binary is None:
            raise RuntimeError("squid is not installed (apt-get install squid)")
        self.origin_port = origin_port
        with open(self.config_path, "w") as handle:
            handle.write(self._config(origin_port))
        out = open(os.path.join(self.run_dir, "squid.out"), "ab")
        self.proc = subprocess.Popen([binary, "-N", "-n", self.service_name, "-f", self.config_path], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        try:
            wait_port(self._port, timeout=timeout, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM Squid by PID (SIGKILL after ``timeout``) and wait until the port is free."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                wait_port(self._port, timeout=0.1)
            except TimeoutError:
                return
            time.sleep(0.05)

    def close(self) -> None:
        """Stop Squid and remove its private run directory (when one was made) and its shm segments."""
        self.stop()
        for path in glob.glob(f"/dev/shm/squid-{self.service_name}-*") + glob.glob(f"/dev/shm/{self.service_name}-*"):
            try:
                os.unlink(path)
            except OSError:
                pass
        if self.run_dir != self.base_dir:
            for name in ("cache.log", "access.log", "squid.out"):
                src = os.path.join(self.run_dir, name)
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(self.base_dir, name))
            link = os.path.join(self.base_dir, "run")
            if os.path.islink(link):
                os.unlink(link)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.run_dir, "cache.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def access_log(self) -> str:
        try:
            with open(os.path.join(self.run_dir, "access.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def __enter__(self) -> "Squid":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
