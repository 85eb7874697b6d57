"""Consume heartbeats from RabbitMQ into the cache table, reconnecting for as long as the server runs."""
from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Any, Callable, Counter, Dict, Optional, Tuple

import pika
import pika.exceptions

from .amqp import BROKER_ERRORS, Deadline, RabbitSettings, close_quietly, connection_params, declare_exchange
from .geo import GeoLocator
from .heartbeat import Heartbeat, InvalidHeartbeat, Limits, Sender, decode, refresh, sender_of, validate
from .refused import RefusedSenders
from .repeats import Cut, Repeats, cut, numbers
from .table import CacheEntry, CacheTable

logger = logging.getLogger(__name__)

PREFETCH = 500
# What pika raises when the broker refuses the login or the virtual host (ACCESS_REFUSED).
LOGIN_REFUSED = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError,
                 pika.exceptions.ProbableAccessDeniedError)
ACK_BATCH = 100
BACKOFF_CAP = 30.0


class ConsumerStatus:
    """What the web side may ask about the consumer: connection state and message counters."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.connected = False
        self.changed_at = clock()
        self.broker = ""
        self.last_heard: Optional[float] = None   # when the broker last delivered any message
        self.accepted = 0
        self.dropped: Counter[str] = collections.Counter()
        self.repaired: Counter[str] = collections.Counter()
        self.refused = RefusedSenders()

    def set_connected(self, connected: bool, broker: str = "") -> None:
        with self._lock:
            if connected != self.connected:
                self.connected, self.changed_at = connected, self._clock()
            self.broker = broker

    def count(self, reason: Optional[str], repairs: Tuple[str, ...] = ()) -> None:
        """Count one message: accepted (``reason`` None, with the repairs it needed) or dropped."""
        with self._lock:
            self.last_heard = self._clock()
            if reason is None:
                self.accepted += 1
                for repair in repairs:
                    self.repaired[repair] += 1
            else:
                self.dropped[reason] += 1

    def connection_state(self) -> Tuple[bool, float]:
        """Return (connected, when that last changed), read together."""
        with self._lock:
            return self.connected, self.changed_at

    def heard_at(self) -> Optional[float]:
        """When the broker last delivered a message (accepted or not); None if never."""
        with self._lock:
            return self.last_heard

    def disconnected_for(self) -> float:
        """Seconds since the consumer lost (or never had) its connection; 0 while connected."""
        with self._lock:
            return 0.0 if self.connected else self._clock() - self.changed_at

    def counters(self) -> Dict[str, object]:
        with self._lock:
            return {"accepted": self.accepted, "dropped": dict(self.dropped), "repaired": dict(self.repaired)}


class RateLimitedLog:
    """Log at most one line per reason per ``period`` seconds, counting what was suppressed."""

    def __init__(self, log: logging.Logger, period: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._log, self._period, self._clock = log, period, clock
        self._last: Dict[str, float] = {}
        self._suppressed: Counter[str] = collections.Counter()

    def warning(self, reason: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, reason, message, *args)

    def error(self, reason: str, message: str, *args: object) -> None:
        self.log(logging.ERROR, reason, message, *args)

    def log(self, level: int, reason: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._period:
            self._suppressed[reason] += 1
            return
        self._last[reason] = now
        skipped = self._suppressed.pop(reason, 0)
        suffix = f" ({skipped} more like it suppressed)" if skipped else ""
        self._log.log(level, message + suffix, *args)


class RateLimit:
    """Token buckets per sender: ``rate`` messages per second sustained, bursts up to ``burst``.

    Keys are broker identities (bounded by the broker's user list) plus ``""`` for every sender
    without one, so the memory is bounded too. Used for the publish-rate bound of docs/security.md.
    """

    def __init__(self, rate: float, burst: float, pool_rate: float, pool_burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._pool_rate, self._pool_burst = rate, burst, pool_rate, pool_burst
        self._clock = clock
        self._buckets: Dict[str, Tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        """Take one token from ``key``'s bucket (``""``: the shared pool); False when it is empty."""
        rate, burst = (self._pool_rate, self._pool_burst) if not key else (self._rate, self._burst)
        now = self._clock()
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class HeartbeatSink:
    """Validate one message body and upsert it; the whole per-message path, with no AMQP in it."""

    def __init__(self, table: CacheTable, locator: GeoLocator, limits: Limits, status: ConsumerStatus,
                 clock: Callable[[], float] = time.time,
                 policy: Optional[Callable[[Heartbeat], None]] = None,
                 uuid_limit: Optional[Callable[[Heartbeat], Optional[int]]] = None,
                 rate_limit: Optional[RateLimit] = None) -> None:
        self._table, self._locator, self._limits = table, locator, limits
        self._repeats = Repeats()   # known caches' repeated bodies skip decoding (repeats.py)
        self._status, self._clock, self._policy = status, clock, policy
        self._uuid_limit, self._rate_limit = uuid_limit, rate_limit
        self._log = RateLimitedLog(logger)

    @property
    def policy(self) -> Optional[Callable[[Heartbeat], None]]:
        """The extra admission check (e.g. the hostname policy), also applied to restored entries."""
        return self._policy

    @property
    def uuid_limit(self) -> Optional[Callable[[Heartbeat], Optional[int]]]:
        """How many uuids a heartbeat's identity may hold (None: no limit)."""
        return self._uuid_limit

    def handle(self, body: bytes, user_id: Optional[str] = None) -> Optional[CacheEntry]:
        """Return the updated entry, or None when the message was dropped (and logged)."""
        if self._rate_limit is not None:
            key = user_id if user_id and user_id not in self._limits.legacy_users else ""
            if not self._rate_limit.allow(key):
                self._status.count("rate_limited")
                self._log.warning("rate_limited", "dropped heartbeat (user %s): rate_limited", user_id or "-")
                return None
        parts = self._cut(body)
        known = self._repeats.get(parts[0]) if parts is not None else None
        data: Optional[Dict[str, Any]] = None
        now = self._clock()
        try:
            if parts is not None and known is not None:
                hb = refresh(known, *numbers(parts), now, self._limits, user_id)
            else:
                data = decode(body)
                hb = validate(data, now, self._limits, user_id, self._previous(data.get("uuid")))
            if self._policy is not None:
                self._policy(hb)
            # A repeat of what the table holds is stored in place; anything else takes the whole upsert.
            entry = self._table.refresh(known, hb, now) if known is not None else None
            if entry is None:
                limit = self._uuid_limit(hb) if self._uuid_limit is not None else None
                entry = self._table.upsert(hb, now, self._locator.locate, max_uuids=limit)
        except InvalidHeartbeat as err:
            self._status.count(err.reason)
            self._status.refused.record(sender_of(body), user_id, err.reason, err.detail, err.offset, now)
            self._log.warning(err.reason, "dropped heartbeat (user %s): %s", user_id or "-", err)
            return None
        if parts is not None:
            if known is not None:
                self._repeats.update(parts[0], hb)
            elif data is not None and self._repeats.remember(body, parts, data, hb, self._limits) \
                    and len(self._repeats) > 2 * len(self._table) + 1024:
                self._repeats.keep(self._is_current)   # caches that left, bodies a cache no longer sends
        self._status.count(None, hb.repairs)
        if self._status.refused.holds_any():
            self._status.refused.forget(Sender(hb.uuid, hb.hostname), user_id)
        return entry

    def _cut(self, body: bytes) -> Optional[Cut]:
        """The body around its two numbers (repeats.cut); None sends it down the full path."""
        return cut(body)

    def _is_current(self, hb: Heartbeat) -> bool:
        """Whether the table holds ``hb`` itself: a template's last heartbeat is the table's only while
        its cache still sends that body, so one template per cache survives a prune."""
        entry = self._table.get(hb.uuid)
        return entry is not None and entry.hb is hb

    def _previous(self, uuid: object) -> Optional[Heartbeat]:
        """The heartbeat the table holds for ``uuid``: a repeat of it is checked in a fraction of the time."""
        entry = self._table.get(uuid) if isinstance(uuid, str) else None
        return entry.hb if entry is not None else None


class Consumer:
    """Bind an exclusive queue to the Shoal exchange and feed every message to a HeartbeatSink."""

    def __init__(self, settings: RabbitSettings, sink: HeartbeatSink, status: ConsumerStatus,
                 stop: threading.Event, backoff_cap: float = BACKOFF_CAP) -> None:
        self._settings, self._sink, self._status, self._stop = settings, sink, status, stop
        self._backoff_cap = backoff_cap
        self._retry_log = RateLimitedLog(logger, period=60.0)  # an outage logs a line a minute, not a second
        self._pending_tag = 0
        self._pending_count = 0

    def run(self) -> None:
        """Consume until ``stop`` is set; every broker failure ends in a capped, jittered retry.

        A failure moves on to the next broker of ``amqp_servers``; after ``failback_interval`` s
        on another one the consumer moves back to the first when it answers, so servers that
        list different first brokers keep their queues on different nodes.
        """
        first_delay = delay = min(1.0, self._backoff_cap)
        brokers = self._settings.brokers()
        index = 0
        while not self._stop.is_set():
            host, port = brokers[index % len(brokers)]
            try:
                self._consume(host, port, preferred=brokers[0] if index % len(brokers) else None)
            except _FailBack:
                index, delay = 0, first_delay
                continue
            except LOGIN_REFUSED as err:
                # Not a passing outage but a configuration fault that stops all consumption: it must
                # show at ERROR, the level upstream's sample config (logging_level = ERROR) keeps.
                self._retry_log.error("login_refused", "AMQP broker %s:%s refused the login of %s (%s); "
                                      "check [rabbitmq] amqp_username/amqp_password or the certificate; "
                                      "retrying in %.1f s", host, port, _login_name(self._settings),
                                      _describe(err), delay)
            except BROKER_ERRORS as err:
                if self._status.connected:  # a working connection broke: start the backoff afresh
                    delay = first_delay
                self._retry_log.warning("unavailable", "AMQP broker %s:%s unavailable (%s); retrying in %.1f s",
                                        host, port, _describe(err), delay)
            except Exception:  # a bug must not end consumption for the life of the process
                logger.exception("consumer failed on %s:%s; reconnecting in %.1f s", host, port, delay)
            finally:
                self._status.set_connected(False)
            index += 1
            if self._stop.wait(delay * random.uniform(0.8, 1.2)):
                break
            delay = min(delay * 2, self._backoff_cap)

    def _consume(self, host: str, port: int, preferred: Optional[Tuple[str, int]] = None) -> None:
        self._pending_count = 0
        connection = pika.BlockingConnection(connection_params(self._settings, host, port))
        try:
            with Deadline(connection, self._settings.reply_timeout(), "the queue setup"):
                channel = connection.channel()
                declare_exchange(channel, self._settings.amqp_exchange)
                queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
                channel.queue_bind(queue=queue, exchange=self._settings.amqp_exchange, routing_key="#")
                channel.basic_qos(prefetch_count=PREFETCH)
                channel.basic_consume(queue=queue, on_message_callback=self._on_message)
            self._status.set_connected(True, f"{host}:{port}")
            logger.info("consuming heartbeats from %s:%s (queue %s)", host, port, queue)
            failback = self._settings.failback_interval
            next_probe = time.monotonic() + failback
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.25)
                self._flush(channel)
                if preferred is not None and failback > 0 and time.monotonic() >= next_probe:
                    if self._answers(*preferred):
                        logger.info("moving back from AMQP broker %s:%s to the preferred %s:%s",
                                    host, port, *preferred)
                        raise _FailBack()
                    next_probe = time.monotonic() + failback
            self._flush(channel)
        finally:
            close_quietly(connection, self._settings.reply_timeout())

    def _answers(self, host: str, port: int) -> bool:
        """True when ``host:port`` completes an AMQP handshake and opens a channel."""
        try:
            probe = pika.BlockingConnection(connection_params(self._settings, host, port))
        except BROKER_ERRORS:
            return False
        try:
            with Deadline(probe, self._settings.reply_timeout(), "the probe channel"):
                probe.channel()
            return True
        except BROKER_ERRORS:
            return False
        finally:
            close_quietly(probe, self._settings.reply_timeout())

    def _on_message(self, channel: "pika.adapters.blocking_connection.BlockingChannel",
                    method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes) -> None:
        self._sink.handle(body, properties.user_id)
        self._pending_tag = method.delivery_tag
        self._pending_count += 1
        if self._pending_count >= ACK_BATCH:
            self._flush(channel)

    def _flush(self, channel: "pika.adapters.blocking_connection.BlockingChannel") -> None:
        if self._pending_count and channel.is_open:
            channel.basic_ack(delivery_tag=self._pending_tag, multiple=True)
        self._pending_count = 0


class _FailBack(Exception):
    """The preferred broker answers again: leave the current one for it."""


def _login_name(settings: RabbitSettings) -> str:
    if settings.uses_external_auth():
        return "the client certificate (EXTERNAL)"
    return repr(settings.amqp_username)


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:200]
