"""Cache verification: fetch a known file through each cache, as its clients would, off the request path.

With ``[cache] cache_verification = true`` a background thread runs a round every
``cache_verify_interval`` seconds: for every cache in a table snapshot it sends
``GET <verification_origin><path>`` to ``hostname:squid_port`` (the proxy address that
``/nearest`` and ``/wpad.dat`` hand to clients) as an HTTP proxy request, with at most
``verification_concurrency`` requests in flight and ``verification_timeout`` seconds per
fetch (connect plus the whole answer). A cache is verified when every path answers 200 with
a body that looks like the file (a ``.cvmfspublished`` manifest must have its ``C`` catalogue
line and ``--`` signature separator). The result goes to ``CacheTable.set_verified``;
``/nearestverified`` then lists only verified caches. Caches that have never been checked are
picked up within ``NEW_CACHE_POLL`` seconds instead of waiting for the next full round.

``verification_url`` is one path or absolute URL, or several separated by commas or spaces;
a path is appended to ``verification_origin`` (a base URL such as
``http://cvmfs-stratum-one.cern.ch:8000``, default ``DEFAULT_ORIGIN``).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import logging
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .config import CacheSettings, ConfigError, ServerConfig
from .render import hostport
from .table import CacheEntry, CacheTable

logger = logging.getLogger(__name__)

DEFAULT_ORIGIN = "http://cvmfs-stratum-one.cern.ch:8000"
MAX_BODY = 1024 * 1024
NEW_CACHE_POLL = 1.0
USER_AGENT = "shoal-server-verifier"


@dataclasses.dataclass(frozen=True)
class Target:
    """One URL to fetch through every cache, split as a proxy request needs it."""

    url: str
    host_header: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str


def verification_targets(urls: str, origin: str = "") -> List[Target]:
    """Turn ``verification_url`` (+ ``verification_origin``) into absolute http URLs; raise ValueError."""
    base = (origin or DEFAULT_ORIGIN).rstrip("/")
    targets = []
    for item in urls.replace(",", " ").split():
        url = item if "://" in item else base + ("" if item.startswith("/") else "/") + item
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: verification goes through an HTTP proxy, so it needs an http:// URL")
        targets.append(Target(url, parts.netloc))
    if not targets:
        raise ValueError("verification_url is empty")
    return targets


def looks_right(url: str, status: int, body: bytes) -> Outcome:
    """Judge one answer: 200 and, for a CVMFS manifest, the manifest's shape. Pure."""
    if status != 200:
        return Outcome(False, f"HTTP {status}")
    if not body:
        return Outcome(False, "empty body")
    if url.endswith(".cvmfspublished"):
        lines = body.split(b"\n")
        if not lines[0].startswith(b"C") or b"--" not in lines:
            return Outcome(False, "not a .cvmfspublished manifest")
    return Outcome(True, "ok")


def fetch_through(proxy_host: str, proxy_port: int, target: Target, timeout: float,
                  clock: Callable[[], float] = time.monotonic) -> Outcome:
    """GET ``target`` via the proxy, within ``timeout`` seconds overall."""
    deadline = clock() + timeout
    conn = http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)
    try:
        conn.request("GET", target.url, headers={"Host": target.host_header, "User-Agent": USER_AGENT,
                                                 "Connection": "close"})
        response = conn.getresponse()
        chunks: List[bytes] = []
        size = 0
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return Outcome(False, "timed out reading the answer")
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY:
                return Outcome(False, "answer larger than 1 MiB")
            chunks.append(chunk)
        return looks_right(target.url, response.status, b"".join(chunks))
    except socket.timeout:
        return Outcome(False, "timed out")
    except (OSError, http.client.HTTPException) as err:
        return Outcome(False, f"{type(err).__name__}: {err}"[:200])
    finally:
        conn.close()


def verify_entry(entry: CacheEntry, targets: Sequence[Target], timeout: float) -> Outcome:
    """Verified only if every target comes back right through this cache."""
    for target in targets:
        outcome = fetch_through(entry.hb.hostname, entry.hb.squid_port, target, timeout)
        if not outcome.ok:
            return outcome
    return Outcome(True, "ok")


class Verifier:
    """The background job; ``run`` loops until ``stop`` is set. Only reads table snapshots."""

    def __init__(self, table: CacheTable, settings: CacheSettings, stop: threading.Event,
                 check: Callable[[CacheEntry, Sequence[Target], float], Outcome] = verify_entry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._table, self._settings, self._stop, self._check, self._clock = table, settings, stop, check, clock
        self.targets = verification_targets(settings.verification_url, settings.verification_origin)
        self._last: Dict[str, bool] = {}
        self.rounds = 0

    def run(self) -> None:
        logger.info("verifying caches every %.0f s via %s (concurrency %d, timeout %.1f s)",
                    self._settings.cache_verify_interval, ", ".join(t.url for t in self.targets),
                    self._settings.verification_concurrency, self._settings.verification_timeout)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self._settings.verification_concurrency,
                                                     thread_name_prefix="shoal-verify")
        next_round = self._clock()
        try:
            while not self._stop.is_set():
                try:
                    if self._clock() >= next_round:
                        self.verify(self._table.snapshot(), pool)
                        self.rounds += 1
                        next_round = self._clock() + self._settings.cache_verify_interval
                    else:
                        fresh = [e for e in self._table.snapshot() if e.verified is None]
                        if fresh:
                            self.verify(fresh, pool)
                except Exception:  # noqa: BLE001 - the job must outlive any one bad round
                    logger.exception("verification round failed")
                    next_round = self._clock() + self._settings.cache_verify_interval
                wait = max(0.0, min(NEW_CACHE_POLL, next_round - self._clock()))
                if self._stop.wait(wait):
                    break
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def verify(self, entries: Sequence[CacheEntry],
               pool: Optional[concurrent.futures.Executor] = None) -> Dict[str, bool]:
        """Check ``entries`` (concurrently when given a pool) and record every result in the table."""
        timeout = self._settings.verification_timeout
        results: Dict[str, bool] = {}
        if pool is None:
            outcomes = [(e, self._check(e, self.targets, timeout)) for e in entries]
        else:
            futures = [(e, pool.submit(self._check, e, self.targets, timeout)) for e in entries]
            outcomes = []
            for entry, future in futures:
                if self._stop.is_set():
                    for _, pending in futures:
                        pending.cancel()
                    break
                outcomes.append((entry, future.result()))
        for entry, outcome in outcomes:
            self._table.set_verified(entry.uuid, outcome.ok)
            results[entry.uuid] = outcome.ok
            if self._last.get(entry.uuid) != outcome.ok:
                log = logger.info if outcome.ok else logger.warning
                log("cache %s %s: %s", hostport(entry.hb.hostname, entry.hb.squid_port),
                    "verified" if outcome.ok else "failed verification", outcome.reason)
            self._last[entry.uuid] = outcome.ok
        live = {e.uuid for e in self._table.snapshot()}
        for uuid in [u for u in self._last if u not in live]:
            del self._last[uuid]
        return results


def build_verifier(config: ServerConfig, table: CacheTable, stop: threading.Event) -> Optional[Verifier]:
    """The verifier ``config`` asks for (None when verification is off); raise ConfigError if unusable."""
    if not config.cache.cache_verification:
        return None
    try:
        return Verifier(table, config.cache, stop)
    except ValueError as err:
        raise ConfigError(config.path, "cache", "verification_url", str(err)) from None
