"""Cache verification: fetch a known file through each cache, as its clients would, off the request path.

With ``[cache] cache_verification = true`` a background thread runs a round every
``cache_verify_interval`` seconds: for every cache in a table snapshot it sends
``GET <verification_origin><path>`` to ``hostname:squid_port`` (the proxy address that
``/nearest`` and ``/wpad.dat`` hand to clients) as an HTTP proxy request, with at most
``verification_concurrency`` requests in flight and ``verification_timeout`` seconds per
fetch (connect plus the whole answer, one deadline however slowly the peer drips it) and a
round budget (``Verifier.round_budget``) after which unchecked caches wait for the next round. A cache is verified when every path answers 200 with
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
import functools
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


MAX_HEAD = 64 * 1024
_RECV = 65536


class _Expired(Exception):
    """The fetch's overall deadline passed."""


def log_text(text: str, limit: int = 200) -> str:
    """Remote text made safe for one log line: control characters, ``\\r``, ``\\n``, escape codes and
    non-ASCII written as Python escapes (``\\x1b``, ``\\r``), cut to ``limit`` characters. Pure."""
    return text[:limit].encode("unicode_escape").decode("ascii")[:limit * 4]


def parse_status(head: bytes) -> Tuple[int, Dict[str, str]]:
    """Status code and (lower-cased) headers of a response head; raise ValueError if it is not HTTP. Pure."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError("not an HTTP status line: " + lines[0][:80].decode("latin-1"))
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(parts[1]), headers


def _recv(sock: socket.socket, deadline: float, clock: Callable[[], float]) -> bytes:
    remaining = deadline - clock()
    if remaining <= 0:
        raise _Expired()
    sock.settimeout(remaining)
    try:
        return sock.recv(_RECV)
    except socket.timeout:
        raise _Expired() from None


Resolver = Callable[[str, int], List[Tuple[str, int]]]
MAX_PENDING_LOOKUPS = 32
_pending_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


def system_resolve(host: str, port: int) -> List[Tuple[str, int]]:
    """``(address, port)`` pairs for a TCP connection to ``host``, from the system resolver."""
    return [(str(info[4][0]), int(info[4][1])) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def lookup(host: str, port: int, timeout: float, resolve: Resolver = system_resolve) -> List[Tuple[str, int]]:
    """Resolve ``host`` within ``timeout`` s; raise _Expired or OSError.

    The system resolver takes no timeout (its own is resolv.conf's, seconds per server and try), and
    the host name comes from an agent's heartbeat: a name whose DNS never answers must cost one
    fetch's deadline, like a dripping peer. So the lookup runs in a daemon thread that is abandoned
    at the deadline; at most MAX_PENDING_LOOKUPS such threads exist at once.
    """
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return [(host, port)]
    except OSError:
        pass
    if not _pending_lookups.acquire(blocking=False):
        raise OSError(f"{MAX_PENDING_LOOKUPS} name lookups already pending")
    done = threading.Event()
    answer: List[List[Tuple[str, int]]] = []
    failure: List[OSError] = []

    def run() -> None:
        try:
            answer.append(resolve(host, port))
        except OSError as err:
            failure.append(err)
        finally:
            done.set()
            _pending_lookups.release()

    threading.Thread(target=run, name="verifier-lookup", daemon=True).start()
    if not done.wait(timeout):
        raise _Expired()
    if failure:
        raise failure[0]
    return answer[0]


def _connect(proxy_host: str, proxy_port: int, deadline: float, clock: Callable[[], float],
             resolve: Resolver) -> socket.socket:
    """A connection to the first address of ``proxy_host`` that accepts one before ``deadline``."""
    last: Optional[OSError] = None
    for address in lookup(proxy_host, proxy_port, deadline - clock(), resolve):
        remaining = deadline - clock()
        if remaining <= 0:
            raise _Expired()
        try:
            return socket.create_connection(address, timeout=remaining)
        except socket.timeout:
            raise _Expired() from None
        except OSError as err:
            last = err
    raise last or OSError(f"no address for {proxy_host}")


def fetch_through(proxy_host: str, proxy_port: int, target: Target, timeout: float,
                  clock: Callable[[], float] = time.monotonic, resolve: Resolver = system_resolve) -> Outcome:
    """GET ``target`` via the proxy, within ``timeout`` seconds overall: name lookup, connect, status
    line, headers and body share one deadline, so a peer that drips its answer a byte at a time, or a
    host name whose DNS never answers, is cut off on time.

    HTTP/1.0 with ``Connection: close``: the answer ends at Content-Length or at the close, never chunked.
    """
    deadline = clock() + timeout
    request = (f"GET {target.url} HTTP/1.0\r\nHost: {target.host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
               "Connection: close\r\n\r\n").encode("ascii")
    try:
        with _connect(proxy_host, proxy_port, deadline, clock, resolve) as sock:
            remaining = deadline - clock()
            if remaining <= 0:
                raise _Expired()
            sock.settimeout(remaining)
            sock.sendall(request)
            buf = b""
            while b"\r\n\r\n" not in buf:
                if len(buf) > MAX_HEAD:
                    return Outcome(False, "answer headers larger than 64 KiB")
                chunk = _recv(sock, deadline, clock)
                if not chunk:
                    return Outcome(False, "connection closed before the answer's headers")
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            status, headers = parse_status(head)
            length_text = headers.get("content-length", "")
            length = int(length_text) if length_text.isdigit() else None
            if length is not None and length > MAX_BODY:
                return Outcome(False, "answer larger than 1 MiB")
            chunks = [body]
            size = len(body)
            while length is None or size < length:
                chunk = _recv(sock, deadline, clock)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BODY:
                    return Outcome(False, "answer larger than 1 MiB")
                chunks.append(chunk)
            data = b"".join(chunks)
            if length is not None and size < length:
                return Outcome(False, "answer shorter than its Content-Length")
            return looks_right(target.url, status, data[:length] if length is not None else data)
    except (_Expired, socket.timeout):
        return Outcome(False, f"timed out ({timeout:g} s for the whole fetch)")
    except ValueError as err:
        return Outcome(False, str(err))
    except OSError as err:
        return Outcome(False, f"{type(err).__name__}: {err}"[:200])


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
        self._checked: Dict[str, float] = {}   # uuid -> clock() when its last check was started
        self._lock = threading.Lock()           # _last, _checked and results: pool threads record too
        self.rounds = 0
        self.unfinished = 0                     # checks a spent round budget left for a later round

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

    def round_budget(self) -> float:
        """Seconds one round may take: the verify interval, never less than one cache's worst case.

        Caches not checked by then keep their last result and go first in the next round, so a few
        caches that answer slowly (each cut off at ``verification_timeout``) delay the others by at
        most that much and can never hold verification up for everyone.
        """
        per_cache = self._settings.verification_timeout * len(self.targets)
        return max(self._settings.cache_verify_interval, per_cache + 1.0)

    def verify(self, entries: Sequence[CacheEntry],
               pool: Optional[concurrent.futures.Executor] = None) -> Dict[str, bool]:
        """Check ``entries`` (concurrently when given a pool, for at most ``round_budget`` seconds).

        Every result is recorded in the table when its check ends, also one that ends after the
        budget; the returned dict holds the results that were in by then.
        """
        timeout = self._settings.verification_timeout
        results: Dict[str, bool] = {}
        # Least recently attempted first: what a spent budget left over goes first next time.
        entries = sorted(entries, key=lambda e: self._checked.get(e.uuid, float("-inf")))
        if pool is None:
            for e in entries:
                self._checked[e.uuid] = self._clock()
                self._record(e, self._check(e, self.targets, timeout), results)
            self._forget_gone()
            return results
        start = self._clock()
        deadline = start + self.round_budget()
        futures: Dict[concurrent.futures.Future, Tuple[CacheEntry, Optional[float]]] = {}
        for e in entries:
            previous = self._checked.get(e.uuid)
            self._checked[e.uuid] = start
            future = pool.submit(self._check, e, self.targets, timeout)
            future.add_done_callback(functools.partial(self._finished, e, results=results))
            futures[future] = (e, previous)
        pending = set(futures)
        while pending and not self._stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            _, pending = concurrent.futures.wait(pending, timeout=min(remaining, 0.5),
                                                 return_when=concurrent.futures.FIRST_COMPLETED)
        left = 0
        for future in pending:
            if future.cancel():          # never started: it keeps its place at the front of the queue
                left += 1
                e, previous = futures[future]
                with self._lock:
                    if previous is None:
                        self._checked.pop(e.uuid, None)
                    else:
                        self._checked[e.uuid] = previous
        if left and not self._stop.is_set():
            self.unfinished += left
            logger.warning("verification round budget of %.0f s spent: %d of %d caches left for the next round",
                           self.round_budget(), left, len(entries))
        self._forget_gone()
        with self._lock:
            return dict(results)

    def _finished(self, entry: CacheEntry, future: concurrent.futures.Future, results: Dict[str, bool]) -> None:
        """Done-callback of one check (runs in the pool thread that ran it)."""
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            logger.error("verifying %s failed: %s", entry.uuid, log_text(repr(error)))
            return
        self._record(entry, future.result(), results)

    def _record(self, entry: CacheEntry, outcome: Outcome, results: Dict[str, bool]) -> None:
        self._table.set_verified(entry.uuid, outcome.ok)
        with self._lock:
            results[entry.uuid] = outcome.ok
            changed = self._last.get(entry.uuid) != outcome.ok
            self._last[entry.uuid] = outcome.ok
        if changed:
            log = logger.info if outcome.ok else logger.warning
            # The reason may quote the peer (a status line, an error text): escaped, it stays one line.
            log("cache %s %s: %s", hostport(entry.hb.hostname, entry.hb.squid_port),
                "verified" if outcome.ok else "failed verification", log_text(outcome.reason))

    def _forget_gone(self) -> None:
        live = {e.uuid for e in self._table.snapshot()}
        with self._lock:
            for known in (self._last, self._checked):
                for uuid in [u for u in known if u not in live]:
                    del known[uuid]


def build_verifier(config: ServerConfig, table: CacheTable, stop: threading.Event) -> Optional[Verifier]:
    """The verifier ``config`` asks for (None when verification is off); raise ConfigError if unusable."""
    if not config.cache.cache_verification:
        return None
    try:
        return Verifier(table, config.cache, stop)
    except ValueError as err:
        raise ConfigError(config.path, "cache", "verification_url", str(err)) from None
