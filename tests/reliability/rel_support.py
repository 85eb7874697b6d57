"""Real shoal-agent processes and polling helpers for the reliability tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional

from support.procs import ServerProcess, http_get, read_files, stop_process, write_ini

AGENT_BIN = os.path.join(os.path.dirname(sys.executable), "shoal-agent")

# Addresses the bundled GeoLite2 places at real sites, so /nearest has something to rank.
SITES = {"cern": "188.184.1.1", "fnal": "131.225.1.1", "triumf": "142.90.1.1", "kek": "130.87.1.1"}
VICTORIA = "142.104.1.1"

# Agents and servers on a RabbitMQ cluster (the ``deployment`` fixture): agent interval, the
# servers' cache_inactive_time, everyone's failback_interval.
CLUSTER_INTERVAL = 1.0
CLUSTER_INACTIVE = 5.0
CLUSTER_FAILBACK = 4.0


def rabbit_settings(port: int, exchange: str, **extra: object) -> Dict[str, object]:
    return {"amqp_server_url": "127.0.0.1", "amqp_port": port, "amqp_username": "guest",
            "amqp_password": "guest", "amqp_exchange": exchange, **extra}


class AgentProcess:
    """One real ``shoal-agent`` daemon with its own config and state dir, stopped by PID."""

    def __init__(self, workdir: str, name: str, rabbitmq: Mapping[str, object], interval: float,
                 site: str = "cern", general: Optional[Mapping[str, object]] = None) -> None:
        os.makedirs(workdir, exist_ok=True)
        self.workdir, self.name = workdir, name
        self.hostname = f"{name}.squid.example.org"
        self.log_path = os.path.join(workdir, "agent.log")
        sections = {
            "general": {"interval": interval, "external_ip": SITES[site], "dnsname": self.hostname,
                        "interface": "lo", "squid_port": 3128, "state_dir": os.path.join(workdir, "state"),
                        **dict(general or {})},
            "rabbitmq": dict(rabbitmq),
            "logging": {"log_file": self.log_path, "logging_level": "info"},
        }
        self.config_path = write_ini(os.path.join(workdir, "shoal_agent.conf"), sections)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "AgentProcess":
        out = open(os.path.join(self.workdir, "agent.out"), "ab")
        self.proc = subprocess.Popen([AGENT_BIN, "--config", self.config_path], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, sig, timeout)

    def output(self) -> str:
        return read_files(self.workdir, "agent.log", "agent.out")


def listed(server: ServerProcess, timeout: float = 5.0) -> Dict[str, dict]:
    """The server's /all as hostname -> record."""
    data = server.get_json("/all", timeout=timeout)
    return {record["hostname"]: record for record in data.values()}


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.1, what: str = "condition",
               explain: Optional[Callable[[], str]] = None):
    """Poll ``predicate`` (exceptions count as false) until it returns something true.

    On a timeout ``explain()`` (e.g. the tails of the logs involved) is added to the error, so a
    failure in CI says what the processes were doing.
    """
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, AssertionError, ValueError, KeyError) as err:
            last_error = err
        time.sleep(step)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"{what} not met within {timeout} s (last error: {last_error!r}){detail}")


def tails(named: Mapping[str, str], lines: int = 25) -> str:
    """The last ``lines`` lines of each text, under its name."""
    return "\n".join(f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]) for name, text in named.items())


def agent_broker(agent: AgentProcess) -> Optional[str]:
    """The host of the broker the agent publishes to now, from its log (None before any connection)."""
    host = None
    for line in agent.output().splitlines():
        for marker in ("connected to AMQP broker ", "to the preferred "):
            if marker in line:
                host = line.split(marker, 1)[1].split(":", 1)[0]
    return host


def fresh(server: ServerProcess, hostnames, since: float) -> bool:
    """True when every host is listed with a heartbeat received after ``since`` (epoch seconds)."""
    records = listed(server)
    return all(h in records and records[h]["last_active"] > since for h in hostnames)


class Watcher(threading.Thread):
    """Poll a server's /nearest and /all in the background and record every answer."""

    def __init__(self, server: ServerProcess, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.server, self.period = server, period
        self.samples: List[tuple] = []   # (time, /nearest status, /all count or None, error)
        self.last_active: Dict[str, set] = {}   # hostname -> every last_active seen in /all
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.period):
            now = time.time()
            try:
                status, _, _ = http_get(f"{self.server.url}/nearest/3?ip={VICTORIA}", timeout=3)
                records = listed(self.server, timeout=3)
                for host, record in records.items():
                    self.last_active.setdefault(host, set()).add(record["last_active"])
                self.samples.append((now, status, len(records), None))
            except (OSError, ValueError, AssertionError) as err:
                self.samples.append((now, None, None, repr(err)))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def first_after(self, host: str, since: float) -> Optional[float]:
        """When the server took the first heartbeat from ``host`` after ``since`` (its own clock, as seen)."""
        times = [t for t in self.last_active.get(host, ()) if t > since]
        return min(times) if times else None


def hostnames(body: bytes) -> set:
    """The cache host names in a /nearest or /all answer (a list or upstream's index-keyed object)."""
    import json
    data = json.loads(body)
    records = data.values() if isinstance(data, dict) else data
    return {record["hostname"] for record in records}


class FrontPoller(threading.Thread):
    """GET a URL (the balancer's) every ``period`` s and keep (status, host names or None) per answer."""

    def __init__(self, url: str, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.url, self.period = url, period
        self.answers: List[tuple] = []
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.wait(self.period):
            try:
                status, _, body = http_get(self.url, timeout=3)
                self.answers.append((status, hostnames(body) if status == 200 else None))
            except (OSError, ValueError, KeyError):
                self.answers.append((None, None))

    def stop(self) -> List[tuple]:
        self._halt.set()
        self.join(10)
        return self.answers

    def missing(self, expected) -> List[tuple]:
        """Answers that were not a 200 listing every one of ``expected``: (status, missing hosts)."""
        want = set(expected)
        return [(status, sorted(want - (hosts or set()))) for status, hosts in self.answers
                if status != 200 or not want <= hosts]


def consuming_from(server: ServerProcess) -> Optional[str]:
    """The node address the server's consumer is on now (from its log)."""
    tail = server.log().rsplit("consuming heartbeats from ", 1)
    return tail[1].split(":", 1)[0] if len(tail) == 2 else None


def max_gap(watcher: Watcher, host: str, start: float, end: float, inactive: float) -> float:
    """The longest silence of ``host`` between ``start`` and ``end`` as the server saw it."""
    times = sorted(t for t in watcher.last_active.get(host, ()) if t >= start - inactive)
    times = [t for t in times if t <= end] + [end]
    points = [max(start, times[0])] + times
    return max(b - a for a, b in zip(points, points[1:]))


def no_traceback(*texts: str) -> List[str]:
    """The first line of every traceback in ``texts`` (empty when none)."""
    return [text.split("Traceback", 1)[1][:300] for text in texts if "Traceback" in text]
