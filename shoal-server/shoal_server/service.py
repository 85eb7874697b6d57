"""Wire the server together: table, GeoIP, consumer and purge threads, and the web app."""
from __future__ import annotations

import atexit
import gc
import logging
import threading
import time
from typing import Callable, List, Mapping, Optional

import numpy as np

from .config import ServerConfig
from .consumer import Consumer, ConsumerStatus, HeartbeatSink, RateLimit
from .geo import GeoLocator, WatchedLocator
from .health import Health, assess_health, flow_window
from .heartbeat import Heartbeat, InvalidHeartbeat, Limits
from .policy import build_policy
from .snapshot import Snapshots
from .table import CacheEntry, CacheTable
from .verifier import build_verifier
from .webapp import create_app

logger = logging.getLogger(__name__)

# Young collections every GC_YOUNG_THRESHOLD net allocations instead of Python's 700. The
# consumer holds up to PREFETCH messages' pika objects at once, and every new cache adds objects
# that live as long as it does: at 700, each collection walks all of them again, which made up a
# third of a new cache's CPU (bench/ingestion.py, docs/performance.md). Cyclic garbage waits for
# at most this many allocations, a few MiB at worst.
GC_YOUNG_THRESHOLD = 20000


class ShoalService:
    """Everything one server process runs besides the HTTP listener; ``start``/``stop`` are idempotent."""

    def __init__(self, config: ServerConfig, locator: Optional[GeoLocator] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.locator = locator if locator is not None else WatchedLocator(
            config.general.geoip_database, check_interval=config.general.geoip_check_interval)
        self.table = CacheTable()
        if isinstance(self.locator, WatchedLocator):
            self.locator.on_change(self.relocate)
        self.status = ConsumerStatus(clock)
        cache = config.cache
        security, use_ssl = config.security, config.rabbitmq.use_ssl
        self.limits = Limits(default_max_load=cache.cache_max_load, max_age=cache.window(),
                             drift_tolerance=cache.cache_clock_drift,
                             require_user_id=use_ssl,
                             accept_unauthenticated=security.accept_legacy(use_ssl),
                             legacy_users=frozenset(security.legacy_users),
                             trust_verified_claim=not cache.cache_verification,
                             lab_addresses=security.lab_addresses)
        if security.lab_addresses:
            logger.warning("%s: [security] lab_addresses is on: loopback, private and documentation addresses "
                           "are served to clients; never use this on a production server", config.path)
        self.policy = build_policy(security.hostname_match(use_ssl), security.grants, config.path,
                                   require_network_grant=security.network_grant(use_ssl),
                                   max_uuids=security.max_uuids_per_identity if use_ssl else None,
                                   legacy=security.accept_legacy(use_ssl))
        if use_ssl and self.policy is not None and self.policy.require_network_grant and not security.grants:
            logger.warning("use_ssl = true and [security] grants is not set: every agent's heartbeat is dropped "
                           "(address_not_granted) until its networks are granted (docs/security.md)")
        self._grants_generation = self.policy.generation if self.policy is not None else 0
        rate_limit = RateLimit(security.max_heartbeat_rate, security.max_heartbeat_burst,
                               security.legacy_heartbeat_rate, security.legacy_heartbeat_burst) if use_ssl else None
        self.sink = HeartbeatSink(self.table, self.locator, self.limits, self.status, clock, policy=self.policy,
                                  uuid_limit=self.policy.uuid_limit if self.policy is not None else None,
                                  rate_limit=rate_limit)
        self.snapshots = Snapshots(config.general.state_dir, config.rabbitmq.amqp_exchange, self.limits,
                                   cache.cache_inactive_time)
        self._expiry_paused: Optional[str] = None
        self._held = 0                               # caches of a mass silence the last purge kept
        self._flow_since: Optional[float] = None    # when heartbeats started flowing again
        self._started_at = clock()
        self.stop_event = threading.Event()
        self.verifier = build_verifier(config, self.table, self.stop_event)
        self._threads: List[threading.Thread] = []
        self._started = False
        self._lock = threading.Lock()
        self.app = create_app(self.table, self.locator, config, self.status, clock, health=self.health)
        self._wsgi = self.app.wsgifunc()

    def wsgi(self) -> Callable:
        return self._wsgi

    def watch_front(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Put the built-in HTTP front's counters on /metrics."""
        self.app.shoal.metrics.watch_front(stats)  # type: ignore[attr-defined]

    def start(self) -> None:
        """Start the consumer and purge threads once per process."""
        with self._lock:
            if self._started:
                return
            self._started = True
            tune_gc()
            self.restore()
            # mod_wsgi never calls stop(); its daemon processes run atexit handlers when Apache
            # stops or recycles them, so the table is saved there too (stop() is idempotent).
            atexit.register(self.stop)
            consumer = Consumer(self.config.rabbitmq, self.sink, self.status, self.stop_event,
                                backoff_cap=reconnect_cap(self.config.cache.cache_inactive_time))
            loops = [("shoal-consumer", consumer.run), ("shoal-purge", self._purge_loop)]
            if self.snapshots.enabled:
                loops.append(("shoal-snapshot", self._snapshot_loop))
            if self.verifier is not None:
                loops.append(("shoal-verifier", self.verifier.run))
            if isinstance(self.locator, WatchedLocator):
                loops.append(("shoal-geoip", self._geoip_loop))
            for name, target in loops:
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _geoip_loop(self) -> None:
        locator = self.locator
        assert isinstance(locator, WatchedLocator)
        while not self.stop_event.wait(locator.check_interval):
            locator.check()

    def relocate(self) -> int:
        """Place every known cache with the current GeoIP database (called when it changes)."""
        moved = self.table.relocate(self.locator.locate)
        logger.info("GeoIP database changed: %d cache(s) placed anew", moved)
        return moved

    def _purge_loop(self) -> None:
        interval = self.config.cache.cache_cleanse_interval
        while not self.stop_event.wait(interval):
            self.purge()

    def purge(self) -> List[str]:
        """Drop caches outside their grants, and caches silent too long (unless the broker explains the silence).

        The broker explains it while the consumer is disconnected, and while no heartbeat at all
        arrives though connected (a paused node holding every agent's confirm, a cut-off node):
        N caches falling silent at the same moment is a broker fault, not N deaths. Either way
        every cache gets a full inactive time counted from when heartbeats flow again. While
        others flow, a mass silence (``mass_silence``: a cut-off node's agents) is kept too, but
        each of its caches only until silent for ``cache_silence_hold``: never a dead proxy for long.
        """
        ungranted = self.recheck_grants()   # whatever the broker's state: never served outside its grant
        now = self.clock()
        cache = self.config.cache
        inactive = cache.cache_inactive_time
        connected, since = self.status.connection_state()
        heard = self.status.heard_at()
        flowing = heard is not None and now - heard <= flow_window(inactive)
        if not flowing:
            self._flow_since = None
        elif self._flow_since is None:
            self._flow_since = now
        wait = expiry_wait(connected, since, self._flow_since, now, inactive,
                           silent_for=now - (heard if heard is not None else self._started_at),
                           hold=cache.silence_hold())
        if wait is not None:
            if wait != self._expiry_paused:
                quiet = wait == "connected recently" or len(self.table) == 0   # nothing to keep: no alarm
                logger.log(logging.INFO if quiet else logging.WARNING, "cache expiry waits: %s", wait)
            self._expiry_paused = wait
            return ungranted
        if self._expiry_paused:
            logger.info("cache expiry resumed")
            self._expiry_paused = None
        together = mass_silence(*self.table.silence(now), inactive, cache.cache_mass_silence)
        self._log_mass_silence(together, cache.silence_hold())
        gone = self.table.expire(now, inactive, hold=cache.silence_hold() if together else None)
        if gone:
            logger.info("purged %d inactive cache(s): %s", len(gone), ", ".join(gone[:10]))
        return ungranted + gone

    def _log_mass_silence(self, together: int, hold: float) -> None:
        if together and not self._held:
            logger.warning("%d of %d caches fell silent together while others beat (a cut-off broker node?): "
                           "kept until silent for %g s (cache_silence_hold)", together, len(self.table), hold)
        elif self._held and not together:
            logger.info("mass silence over: caches silent for cache_inactive_time expire again")
        self._held = together

    def recheck_grants(self) -> List[str]:
        """After the grants file changed, remove every cache it no longer covers (it is never served)."""
        policy = self.policy
        if policy is None:
            return []
        policy.grants()   # re-reads the file if it changed
        if policy.generation == self._grants_generation:
            return []
        self._grants_generation = policy.generation
        gone = self.table.discard(lambda entry: _admits(policy, entry))
        if gone:
            logger.warning("removed %d cache(s) the new grants do not cover: %s", len(gone), ", ".join(gone[:10]))
        return gone

    def health(self) -> Health:
        """What a balancer should know: is this server serving a good, a stale or no useful table?"""
        now = self.clock()
        inactive = self.config.cache.cache_inactive_time
        heard = self.status.heard_at()
        silent_for, heard_for = self.table.silence(now)
        return assess_health(len(silent_for), self.status.disconnected_for(), inactive,
                             silent_for=None if heard is None else now - heard,
                             overdue=int((silent_for > inactive).sum()),
                             together=mass_silence(silent_for, heard_for, inactive,
                                                   self.config.cache.cache_mass_silence))

    def restore(self) -> int:
        """Load the table snapshot from ``state_dir`` (if any), so the first answers are not empty."""
        if not self.snapshots.prepare():
            return 0
        entries = self.snapshots.load(self.clock(), self.locator.locate, admit=self.sink.policy)
        before = len(self.table)
        self.table.load(entries, max_uuids=self.sink.uuid_limit)   # the uuid limit holds for restored entries
        return len(self.table) - before

    def save(self) -> bool:
        """Write the table snapshot now (no-op without ``state_dir``)."""
        return self.snapshots.save(self.table.snapshot(), self.clock())

    def _snapshot_loop(self) -> None:
        while not self.stop_event.wait(self.config.general.snapshot_interval):
            self.save()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop the threads and, if they ran, save the table one last time; later calls do nothing."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._started:
            self.save()
        self.locator.close()


def tune_gc() -> None:
    """Collect young objects less often (GC_YOUNG_THRESHOLD); older generations keep Python's ratios."""
    young, middle, old = gc.get_threshold()
    if young and young < GC_YOUNG_THRESHOLD:   # 0: collection is off, and stays so
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _admits(policy: Callable[[Heartbeat], None], entry: CacheEntry) -> bool:
    try:
        policy(entry.hb)
    except InvalidHeartbeat:
        return False
    return True


def expiry_allowed(connected: bool, since: float, now: float, grace: float) -> bool:
    """Expire caches only after the consumer has been connected for ``grace`` seconds.

    While the broker is unreachable no heartbeat can arrive, so silence says nothing about a
    cache; with ``grace`` = the inactive time, every cache gets its full allowance counted
    from the reconnection, i.e. the outage is not held against it.
    """
    return connected and now - since >= grace


def expiry_wait(connected: bool, since: float, flow_since: Optional[float], now: float, grace: float,
                silent_for: float, hold: float) -> Optional[str]:
    """Why expiry must wait now, or None when caches silent for ``grace`` may go.

    It waits while disconnected, for ``grace`` after a reconnection, and while no heartbeat
    flows (and for ``grace`` after they flow again) -- but a total silence of ``hold`` seconds
    while connected is believed: every cache is then really gone.
    """
    if not expiry_allowed(connected, since, now, grace):
        return "consumer disconnected" if not connected else "connected recently"
    if flow_since is None:
        if silent_for >= hold:
            return None
        return "no heartbeat arrives from any cache (broker stall?)"
    if now - flow_since < grace:
        return "connected recently" if now - since < grace + 1 else "heartbeats flow again, recently"
    return None


MASS_SILENCE_MIN = 3   # fewer caches silent at once may well be real deaths (a small site's power cut)


def mass_silence(silent_for: np.ndarray, heard_for: np.ndarray, inactive: float, fraction: float,
                 minimum: int = MASS_SILENCE_MIN) -> int:
    """How many established caches fell silent together, when they are a mass silence; else 0.

    Established: heard from over at least ``inactive`` s (a one-shot or new uuid going quiet is
    churn). Silent: no heartbeat for more than half of ``inactive`` (``flow_window``), i.e. beats
    missed. A mass silence is at least ``fraction`` of the established caches and ``minimum``:
    the agents of a broker node cut off from this server's (the minority of a partition, before
    or without failover) all stop in the same interval while the others keep beating, which is not
    so many caches dying at once. The purge then keeps them up to ``cache_silence_hold``.
    """
    if fraction <= 0 or len(silent_for) == 0:
        return 0
    established = heard_for >= inactive
    quiet = int((established & (silent_for > flow_window(inactive))).sum())
    return quiet if quiet >= minimum and quiet >= fraction * int(established.sum()) else 0


def reconnect_cap(inactive_time: float) -> float:
    """Longest wait between reconnection attempts: short against the inactive time, at most 10 s.

    A refused TCP connection costs the broker nothing, and every second disconnected is a
    second of heartbeats this server never sees.
    """
    return max(0.5, min(10.0, inactive_time / 4))
