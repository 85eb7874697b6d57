"""Start shoal-server processes on loopback with a generated config, and talk to them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, Mapping, Optional

from .rabbitnode import free_port, wait_port


def write_ini(path: str, sections: Mapping[str, Mapping[str, object]]) -> str:
    with open(path, "w") as fh:
        for section, values in sections.items():
            fh.write(f"[{section}]\n")
            for key, value in values.items():
                fh.write(f"{key} = {value}\n")
            fh.write("\n")
    return path


def http_get(url: str, timeout: float = 10.0, headers: Optional[Dict[str, str]] = None):
    """Return (status, headers, body bytes) without raising on HTTP errors."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class ServerProcess:
    """A real ``python -m shoal_server`` on 127.0.0.1, stopped by PID."""

    def __init__(self, workdir: str, rabbitmq: Mapping[str, object], cache: Mapping[str, object] = (),
                 general: Mapping[str, object] = (), extra: Optional[Mapping[str, Mapping[str, object]]] = None,
                 port: Optional[int] = None) -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = port or free_port()
        self.log_path = os.path.join(workdir, "server.log")
        sections: Dict[str, Dict[str, object]] = {
            "general": {"host": "127.0.0.1", "port": self.port, **dict(general)},
            "rabbitmq": dict(rabbitmq),
            "cache": dict(cache),
            "logging": {"log_file": self.log_path, "logging_level": "info"},
        }
        for name, values in (extra or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config_path = write_ini(os.path.join(workdir, "shoal_server.conf"), sections)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_connected: bool = True, timeout: float = 30.0) -> "ServerProcess":
        out = open(os.path.join(self.workdir, "server.out"), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "shoal_server", "--config", self.config_path],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        wait_port(self.port, timeout=timeout, proc=self.proc)
        if wait_connected:
            self.wait_for(lambda h: h.get("consumer_connected"), timeout=timeout)
        return self

    def health(self) -> dict:
        status, _, body = http_get(self.url + "/healthz")
        return json.loads(body)

    def get_json(self, path: str, **kw) -> dict:
        status, _, body = http_get(self.url + path, **kw)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def wait_for(self, predicate, timeout: float = 10.0, path: str = "/healthz"):
        """Poll ``path`` until ``predicate(json)`` is true; return that JSON."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.get_json(path)
                if predicate(last):
                    return last
            except (OSError, AssertionError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"condition not met on {path} within {timeout} s; last answer: {str(last)[:500]}")

    def log(self) -> str:
        try:
            with open(self.log_path) as fh:
                return fh.read()
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Optional[float]:
        """Signal the process and return how long it took to exit."""
        proc, self.proc = self.proc, None
        return stop_process(proc, sig, timeout)


def read_files(folder: str, *names: str) -> str:
    """The concatenated text of the named files in ``folder``; missing ones count as empty."""
    text = ""
    for name in names:
        try:
            with open(os.path.join(folder, name)) as handle:
                text += handle.read()
        except OSError:
            pass
    return text


def stop_process(proc: Optional[subprocess.Popen], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> Optional[float]:
    """Send ``sig``, SIGKILL after ``timeout``; return seconds to exit (None if it was not running)."""
    if proc is None or proc.poll() is not None:
        return None
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - start
