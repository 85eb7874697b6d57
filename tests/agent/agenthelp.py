"""Run the real shoal-agent command (``python -m shoal_agent``) with a generated config."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, Mapping, Optional

from support.procs import ServerProcess, read_files, stop_process, write_ini

SHARED = {"amqp_server_url": "127.0.0.1", "amqp_port": 5672, "amqp_username": "guest", "amqp_password": "guest"}


class AgentRunner:
    """One agent configuration and state directory; ``run`` for --once/--dry-run, ``start`` for the daemon."""

    def __init__(self, workdir: str, rabbitmq: Mapping[str, object], general: Optional[Mapping[str, object]] = None,
                 squid: Optional[Mapping[str, object]] = None, level: str = "info") -> None:
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.state_dir = os.path.join(workdir, "state")
        self.log_path = os.path.join(workdir, "agent.log")
        self.sections: Dict[str, Dict[str, object]] = {
            "general": {"interval": 1, "external_ip": "142.90.100.20", "dnsname": "squid.agent-test.example.org",
                        "squid_port": 3128, "state_dir": self.state_dir, **dict(general or {})},
            "rabbitmq": dict(rabbitmq),
            "logging": {"log_file": self.log_path, "logging_level": level},
        }
        if squid:
            self.sections["squid"] = dict(squid)
        self.config_path = os.path.join(workdir, "shoal_agent.conf")
        self.write()
        self.proc: Optional[subprocess.Popen] = None

    def write(self) -> None:
        write_ini(self.config_path, self.sections)

    def command(self, *args: str) -> list:
        return [sys.executable, "-m", "shoal_agent", "--config", self.config_path, *args]

    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start(self) -> "AgentRunner":
        out = open(os.path.join(self.workdir, "agent.out"), "ab")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[float]:
        """Signal the daemon and return how long it took to exit (None if it was not running)."""
        proc, self.proc = self.proc, None
        return stop_process(proc, sig, timeout)

    @property
    def uuid(self) -> str:
        with open(os.path.join(self.state_dir, "uuid")) as handle:
            return handle.read().strip()

    def log(self) -> str:
        return read_files(self.workdir, "agent.log", "agent.out")


def entries(server: ServerProcess) -> Dict[str, dict]:
    """The server's /all as uuid -> record."""
    return {record["uuid"]: record for record in server.get_json("/all").values()}


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} not met within {timeout} s")


def dry_run_heartbeat(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])
