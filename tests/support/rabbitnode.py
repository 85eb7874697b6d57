"""Start and stop a private RabbitMQ node on loopback for tests, benchmarks and the demo.

The node gets its own name, AMQP/TLS/distribution ports, config, data and log directories and
Erlang cookie (HOME), so it never touches the machine's shared broker on 5672. It is stopped by
PID, and everything lives under ``base_dir``.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import uuid
from typing import Dict, List, Optional

RABBIT_BIN = "/usr/lib/rabbitmq/bin"


# Below Linux's ephemeral range (ip_local_port_range 32768-60999): a port handed out here is
# never some outgoing connection's source port by the time the process binds it.
PORT_RANGE = (20000, 32767)


def free_port() -> int:
    """A TCP port free on every address (also 127.0.0.2/.3, where cluster nodes listen)."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {PORT_RANGE}")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 60.0, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


class RabbitNode:
    """One private broker node. ``config`` is extra rabbitmq.conf text (e.g. the TLS listener)."""

    def __init__(self, base_dir: str, config: str = "", plugins: List[str] = (), amqp_port: Optional[int] = None,
                 tls_port: Optional[int] = None, name: Optional[str] = None, plain_listener: bool = True,
                 host: str = "127.0.0.1", advanced: str = "[].", cookie: Optional[str] = None) -> None:
        self.base_dir = base_dir
        self.host = host                # the AMQP listener's loopback address (127.0.0.2 ... for a cluster)
        self.advanced = advanced        # advanced.config text (e.g. a short kernel net_ticktime)
        self.cookie = cookie            # a shared Erlang cookie for cluster members
        self.name = name or f"shoaltest-{uuid.uuid4().hex[:8]}@localhost"
        self.amqp_port = amqp_port or free_port()
        self.tls_port = tls_port
        self.dist_port = free_port()
        self.plain_listener = plain_listener
        self.extra_config = config
        self.plugins = list(plugins)
        self.proc: Optional[subprocess.Popen] = None
        os.makedirs(base_dir, exist_ok=True)

    @property
    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update({
            "HOME": self.base_dir,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.base_dir, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.base_dir, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.base_dir, "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.base_dir, "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": os.path.join(self.base_dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.base_dir, "log"),
            "RABBITMQ_PID_FILE": os.path.join(self.base_dir, "rabbit.pid"),
            "RABBITMQ_LOGS": os.path.join(self.base_dir, "log", "rabbit.log"),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.dist_port + 10000 if self.dist_port < 50000 else self.dist_port - 10000),
        })
        env["RABBITMQ_CTL_DIST_PORT_MAX"] = str(int(env["RABBITMQ_CTL_DIST_PORT_MIN"]) + 10)
        return env

    def _write_files(self) -> None:
        lines = ["loopback_users = none", "log.console = false", "log.file.level = info"]
        if self.plain_listener:
            lines.append(f"listeners.tcp.default = {self.host}:{self.amqp_port}")
        else:
            lines.append("listeners.tcp = none")
        if self.tls_port:
            lines.append(f"listeners.ssl.default = {self.host}:{self.tls_port}")
        conf = "\n".join(lines) + "\n" + self.extra_config
        with open(os.path.join(self.base_dir, "rabbitmq.conf"), "w") as fh:
            fh.write(conf)
        with open(os.path.join(self.base_dir, "advanced.config"), "w") as fh:
            fh.write(self.advanced + "\n")
        if self.cookie is not None:
            path = os.path.join(self.base_dir, ".erlang.cookie")
            if os.path.exists(path):
                os.chmod(path, 0o600)
            with open(path, "w") as fh:
                fh.write(self.cookie)
            os.chmod(path, 0o400)
        with open(os.path.join(self.base_dir, "rabbitmq-env.conf"), "w") as fh:
            fh.write("")
        with open(os.path.join(self.base_dir, "enabled_plugins"), "w") as fh:
            fh.write("[" + ",".join(self.plugins) + "].\n")
        os.makedirs(os.path.join(self.base_dir, "log"), exist_ok=True)

    def start(self, timeout: float = 90.0) -> "RabbitNode":
        self._write_files()
        log = open(os.path.join(self.base_dir, "server.out"), "ab")
        self.proc = subprocess.Popen([os.path.join(RABBIT_BIN, "rabbitmq-server")], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        port = self.amqp_port if self.plain_listener else self.tls_port
        try:
            wait_port(port, host=self.host, timeout=timeout, proc=self.proc)
            self._await_startup(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_startup(self, timeout: float) -> None:
        # Right after a node of a cluster was SIGKILLed and started again the CLI may not reach it
        # at the first try (epmd still settling); retry until the deadline.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctl("await_startup", timeout=timeout)
                return
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                    raise
                time.sleep(1.0)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", self.name, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node and every process of its session (beam, epmd children are not ours)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self.ctl("stop", timeout=timeout)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP every process of the node: it keeps its sockets and answers nothing (a hung node)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> "RabbitNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
