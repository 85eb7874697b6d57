"""Hostile HTTP clients on loopback: idle sockets, slow senders, header bombs, and a latency probe.

One ``Attack`` thread drives every attacking socket through a selector, so a few hundred of them
cost one thread; it stops itself after ``duration`` seconds and closes everything it opened.
Used by tests/security/test_http_hostile.py and bench/http_hostile.py.
"""
from __future__ import annotations

import selectors
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple


class Attack(threading.Thread):
    """Keep ``idle`` silent sockets and ``slow`` slow-header senders open against host:port.

    A slow sender writes a request line and then one header line every ``interval`` seconds and
    never finishes its headers; whenever the server closes one, it is reconnected (as a real
    attacker would), so the pressure lasts the whole ``duration``. ``closed`` counts the
    connections the server dropped.
    """

    def __init__(self, host: str, port: int, idle: int = 0, slow: int = 0, interval: float = 5.0,
                 duration: float = 20.0, source: str = "") -> None:
        super().__init__(name="hostile-attack", daemon=True)
        self.source = source   # e.g. "127.0.0.2": attack from another loopback address than the probes
        self.addr, self.idle, self.slow, self.interval, self.duration = (host, port), idle, slow, interval, duration
        self.closed = 0
        self.opened = 0
        self.connect_errors = 0
        self._stop_event = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def _open(self, sel: selectors.BaseSelector, kind: str, now: float) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            if self.source:
                s.bind((self.source, 0))
            s.connect(self.addr)
        except OSError:
            self.connect_errors += 1
            s.close()
            return
        s.setblocking(False)
        self.opened += 1
        if kind == "slow":
            try:
                s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
        sel.register(s, selectors.EVENT_READ, [kind, now + self.interval, 0])

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        end = time.monotonic() + self.duration
        try:
            now = time.monotonic()
            for _ in range(self.idle):
                self._open(sel, "idle", now)
            for _ in range(self.slow):
                self._open(sel, "slow", now)
            self.ready.set()
            while not self._stop_event.is_set() and time.monotonic() < end:
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    try:
                        data = s.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:    # the server hung up: count it and come back
                        kind = key.data[0]
                        sel.unregister(s)
                        s.close()  # type: ignore[union-attr]
                        self.closed += 1
                        self._open(sel, kind, time.monotonic())
                now = time.monotonic()
                for key in list(sel.get_map().values()):
                    state = key.data
                    if state[0] == "slow" and now >= state[1]:
                        state[1] = now + self.interval
                        state[2] += 1
                        try:
                            key.fileobj.send(b"X-Drip-%d: %s\r\n" % (state[2], b"a" * 20))  # type: ignore
                        except OSError:
                            pass
        finally:
            self.ready.set()
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()


def header_bomb(host: str, port: int, header_bytes: int, line: bool = False, timeout: float = 30.0) -> Tuple[Optional[int], int]:
    """Send one request whose headers hold ``header_bytes`` (one line if ``line``, else 1 KiB lines).

    Returns (HTTP status the server answered or None, bytes the server took before answering or
    hanging up).
    """
    s = socket.create_connection((host, port), timeout=timeout)
    sent = 0
    status: Optional[int] = None
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        chunk = (b"X-Big: " + b"a" * (1024 * 1024)) if line else b"".join(
            b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(1024))
        s.setblocking(False)
        deadline = time.monotonic() + timeout
        pending = b""
        while sent < header_bytes and time.monotonic() < deadline:
            if not pending:
                pending = chunk[:header_bytes - sent]
            try:
                n = s.send(pending)
                sent += n
                pending = pending[n:]
            except BlockingIOError:
                answer = _try_read(s, 0.05)
                if answer is not None:
                    status = _status_of(answer)
                    break
            except OSError:
                break
        if status is None:
            s.setblocking(True)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if sent >= header_bytes:
                    s.sendall(b"\r\n\r\n")
                status = _status_of(s.recv(4096))
            except OSError:
                pass
    finally:
        s.close()
    return status, sent


def _try_read(s: socket.socket, wait: float) -> Optional[bytes]:
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    try:
        if sel.select(wait):
            try:
                return s.recv(4096)
            except OSError:
                return b""
        return None
    finally:
        sel.close()


def _status_of(answer: bytes) -> Optional[int]:
    parts = answer.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def probe(url: str, timeout: float = 5.0) -> Tuple[Optional[int], float]:
    """One GET: (status or None on failure, seconds taken)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            status: Optional[int] = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    except OSError:
        status = None
    return status, time.monotonic() - start


def probe_for(urls: List[str], seconds: float, pause: float = 0.2, timeout: float = 5.0) -> Dict[str, List[Tuple[Optional[int], float]]]:
    """Probe every url in turn for ``seconds``; the results per url."""
    results: Dict[str, List[Tuple[Optional[int], float]]] = {u: [] for u in urls}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for u in urls:
            results[u].append(probe(u, timeout))
        time.sleep(pause)
    return results


def summary(samples: List[Tuple[Optional[int], float]]) -> Dict[str, float]:
    times = sorted(t for _, t in samples)
    ok = sum(1 for s, _ in samples if s == 200)
    return {"n": len(samples), "ok": ok, "median_s": statistics.median(times) if times else 0.0,
            "max_s": times[-1] if times else 0.0}


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
