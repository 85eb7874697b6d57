"""Publish heartbeats over one persistent AMQP connection, with publisher confirms and failover.

The connection is opened once and reused for every heartbeat (the 2014 agent opened one per
message); when it breaks, the next attempt walks through ``amqp_servers`` once, starting with the
broker that worked last. Pacing of retries belongs to the caller (``Backoff``), so this class
never sleeps and never decides how loudly to log.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, Dict, List, Optional, Tuple

import pika
import pika.exceptions

from . import __version__
from .amqp import (BROKER_ERRORS, CONTENT_TYPE, ROUTING_KEY, Deadline, RabbitSettings, authenticated_user,
                   close_quietly, connection_params, declare_exchange)

logger = logging.getLogger(__name__)

BACKOFF_INITIAL = 1.0
BACKOFF_CAP = 60.0
ACCESS_REFUSED = 403


class PublishError(Exception):
    """A heartbeat did not reach a broker (or was refused); the message is the reason."""


class ConfirmTimeout(PublishError):
    """No confirm within the deadline: the heartbeat may well have reached the healthy queues."""


class Backoff:
    """Exponential retry delays with +-20 % jitter, capped, so a fleet of agents never retries in step."""

    def __init__(self, initial: float = BACKOFF_INITIAL, cap: float = BACKOFF_CAP, factor: float = 2.0,
                 jitter: float = 0.2, rand: Callable[[], float] = random.random) -> None:
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self._rand = rand
        self._delay = initial
        self.failures = 0

    def next(self) -> float:
        """The delay before the next attempt after one more failure."""
        self.failures += 1
        delay = self._delay * (1.0 + self.jitter * (2.0 * self._rand() - 1.0))
        self._delay = min(self._delay * self.factor, self.cap)
        return min(delay, self.cap)

    def reset(self) -> None:
        self._delay = self.initial
        self.failures = 0


def describe(err: BaseException) -> str:
    """A one-line reason from pika's nested connection errors (the innermost cause is the useful one)."""
    for _ in range(5):
        nested = getattr(err, "exceptions", None) or getattr(err, "args", ())
        inner = [item for item in nested if isinstance(item, BaseException)] if isinstance(nested, (list, tuple)) else []
        if not inner and isinstance(getattr(err, "exception", None), BaseException):
            inner = [err.exception]  # type: ignore[attr-defined]  # pika's connector errors
        if not inner:
            break
        err = inner[-1]
    text = " ".join(str(a) for a in getattr(err, "args", ()) if not isinstance(a, BaseException)) or str(err)
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    return f"{type(err).__name__}: {text}".splitlines()[0][:240] if text else type(err).__name__


class Publisher:
    """One broker connection at a time; ``publish`` connects (or fails over once) on demand.

    Every way a broker fails ends in the next broker of ``amqp_servers``: refused or reset
    connections, TLS errors, a hung handshake (pika's AMQPConnectorStackTimeout), a hung channel
    or a confirm that never comes (``confirm_timeout``, well under the interval: a queue on a
    paused node must not stall the agent), and a heartbeat that no queue took (the broker is cut
    off from the servers, e.g. the minority side of a partition). After ``failback_interval`` s
    on another broker the first one is tried again, so a fleet spreads back when it returns.
    """

    def __init__(self, settings: RabbitSettings, client_name: str = "shoal-agent",
                 connect: Callable[[pika.ConnectionParameters], pika.BlockingConnection] = pika.BlockingConnection,
                 clock: Callable[[], float] = time.time, confirm_timeout: Optional[float] = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.brokers: List[Tuple[str, int]] = settings.brokers()
        self.client_name = client_name
        self.user_id = authenticated_user(settings)
        self.confirm_timeout = settings.reply_timeout() if confirm_timeout is None else confirm_timeout
        self._connect = connect
        self._clock = clock
        self._monotonic = monotonic
        self._index = 0
        self._away_since: Optional[float] = None  # when the first broker was left or last retried
        self._failback_tries = 0
        self._failed_at: Dict[int, float] = {}   # broker index -> when it last failed (monotonic)
        self._connection: Optional[pika.BlockingConnection] = None
        self._channel: Optional[pika.adapters.blocking_connection.BlockingChannel] = None

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.is_open and self._channel is not None \
            and self._channel.is_open

    @property
    def broker(self) -> str:
        return self._name(self._index)

    def _name(self, index: int) -> str:
        host, port = self.brokers[index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def connect(self, start: Optional[int] = None) -> None:
        """Open a connection to the first broker that answers, walking from ``start`` (default: the last good one)."""
        self.close()
        reasons = []
        for index in self._walk(self._index if start is None else start):
            host, port = self.brokers[index]
            try:
                self._connection, self._channel = self._open(host, port)
            except (*BROKER_ERRORS, ValueError) as err:
                self._failed_at[index] = self._monotonic()
                reasons.append(f"{self._name(index)} {describe(err)}")
                continue
            if index == 0:
                self._away_since = None
            elif self._away_since is None:
                self._away_since, self._failback_tries = self._monotonic(), 0
            self._index = index
            logger.info("connected to AMQP broker %s as %s (exchange %s)", self.broker, self.user_id,
                        self.settings.amqp_exchange)
            return
        raise PublishError("; ".join(reasons))

    def _walk(self, start: int) -> List[int]:
        """``amqp_servers`` in order from ``start``, brokers that failed within ``failback_interval`` last.

        A hung broker costs a whole connect_timeout; walking onto it again right after it failed
        (the next of the list after a confirm timeout elsewhere) would spend that on every beat.
        """
        order = [(start + step) % len(self.brokers) for step in range(len(self.brokers))]
        recent = max(self.settings.failback_interval, self.confirm_timeout)
        now = self._monotonic()
        failed = {i for i in order if i in self._failed_at and now - self._failed_at[i] < recent}
        return [i for i in order if i not in failed] + [i for i in order if i in failed]

    def _open(self, host: str, port: int) -> Tuple[pika.BlockingConnection,
                                                   "pika.adapters.blocking_connection.BlockingChannel"]:
        params = connection_params(self.settings, host, port)
        params.client_properties = {"connection_name": self.client_name, "product": "shoal-agent",
                                    "version": __version__}
        connection = self._connect(params)
        try:
            with Deadline(connection, self.confirm_timeout, "the channel setup"):
                return connection, self._setup(connection)
        except BaseException:
            close_quietly(connection, self.confirm_timeout)
            raise

    def _setup(self, connection: pika.BlockingConnection) -> "pika.adapters.blocking_connection.BlockingChannel":
        channel = connection.channel()
        try:
            declare_exchange(channel, self.settings.amqp_exchange)
        except pika.exceptions.ChannelClosedByBroker as err:
            if err.reply_code != ACCESS_REFUSED:
                raise
            # A broker that lets agents only write to the exchange refuses to (re)declare it;
            # checking that it exists is then all an agent may and needs to do.
            channel = connection.channel()
            channel.exchange_declare(exchange=self.settings.amqp_exchange, passive=True)
            logger.info("exchange %s exists (this user may publish to it but not declare it)",
                        self.settings.amqp_exchange)
        channel.confirm_delivery()
        return channel

    def publish(self, body: bytes, expiration: str) -> bool:
        """Publish one heartbeat and wait (at most ``confirm_timeout``) for the broker's confirm.

        A failure of the current broker moves on to the next ones at once. Returns False when
        brokers confirmed it but on none of them was a server queue bound; raises PublishError
        when no broker took it. When ``failback_interval`` is due, the first broker is tried
        after the heartbeat went out: a preferred node still hung costs the idle time before the
        next heartbeat, not this one.
        """
        if not self.connected:
            self.connect()
        routed = self._publish_anywhere(body, expiration)
        if routed and self._failback_due():
            self._failback()
        return routed

    def _publish_anywhere(self, body: bytes, expiration: str) -> bool:
        unrouted = []
        for _ in range(len(self.brokers)):
            try:
                routed = self._publish(body, expiration)
            except ConfirmTimeout as err:
                # Typically a queue on a paused node: the message is routed (the healthy servers
                # have it) but the confirm waits for that node. Publishing it again elsewhere would
                # wait for the same queue; move on for the next heartbeat and report the failure.
                logger.info("%s; moving to the next broker", err)
                try:
                    self._next_broker()
                except PublishError:
                    pass
                raise
            except (*BROKER_ERRORS, PublishError) as err:
                # A connection that died while idle costs one immediate failover, not a backoff.
                reason = str(err) if isinstance(err, PublishError) else f"{self.broker} {describe(err)}"
                logger.info("AMQP broker %s failed (%s); trying the next", self.broker, reason)
                self._next_broker()
                try:
                    routed = self._publish(body, expiration)
                except (*BROKER_ERRORS, PublishError) as again:
                    broker = self.broker
                    self.close()
                    raise PublishError(str(again) if isinstance(again, PublishError)
                                       else f"{broker} {describe(again)}") from None
            if routed or len(self.brokers) == 1:
                return routed
            # Confirmed but no queue took it: this broker is cut off from every server (the
            # minority side of a partition, or a node whose queues are gone); try the others.
            unrouted.append(self.broker)
            if len(unrouted) == len(self.brokers):
                break
            logger.info("AMQP broker %s has no server queue bound; trying the next", self.broker)
            self._next_broker()
        return False

    def _next_broker(self) -> None:
        """Connect to the brokers after the current one (the current one last); raises PublishError."""
        self._failed_at[self._index] = self._monotonic()
        self.connect(start=self._index + 1)

    def _failback_due(self) -> bool:
        """True ``failback_interval`` s after leaving the first broker or last trying it.

        Counted from leaving, not from the latest connection: a fleet that hops between the other
        brokers (nacks and confirm timeouts while a node rejoins) must still spread back.
        """
        interval = self.settings.failback_interval
        return self._index != 0 and interval > 0 and self._away_since is not None \
            and self._monotonic() - self._away_since >= interval

    def _failback(self) -> None:
        """Move back to the first broker of ``amqp_servers`` if it answers; else stay (and retry later)."""
        self._away_since = self._monotonic()
        host, port = self.brokers[0]
        try:
            connection, channel = self._open(host, port)
        except (*BROKER_ERRORS, ValueError) as err:
            # INFO once per stay away (the operator sees why the fleet has not spread back), then DEBUG.
            level = logging.DEBUG if self._failback_tries else logging.INFO
            self._failback_tries += 1
            logger.log(level, "preferred AMQP broker %s still unusable (%s); staying on %s", self._name(0),
                       describe(err), self.broker)
            return
        left = self.broker
        self.close()
        self._connection, self._channel, self._index, self._away_since = connection, channel, 0, None
        logger.info("moved back from AMQP broker %s to the preferred %s", left, self.broker)

    def _publish(self, body: bytes, expiration: str) -> bool:
        assert self._channel is not None and self._connection is not None
        properties = pika.BasicProperties(content_type=CONTENT_TYPE, user_id=self.user_id, expiration=expiration,
                                          timestamp=int(self._clock()), app_id="shoal-agent", delivery_mode=1)
        deadline = Deadline(self._connection, self.confirm_timeout, "the publisher confirm")
        try:
            with deadline:
                self._channel.basic_publish(self.settings.amqp_exchange, ROUTING_KEY, body, properties,
                                            mandatory=True)
        except pika.exceptions.UnroutableError:
            return False
        except pika.exceptions.NackError:
            raise PublishError(f"{self.broker} refused the heartbeat (basic.nack)") from None
        except pika.exceptions.ChannelClosedByBroker as err:
            # e.g. 406 PRECONDITION_FAILED for a user_id that is not the authenticated user
            self._channel = None
            raise PublishError(f"{self.broker} closed the channel: {err.reply_code} {err.reply_text}") from None
        except BROKER_ERRORS as err:
            if deadline.expired:
                self.close()
                raise ConfirmTimeout(f"{self.broker} sent no confirm within {self.confirm_timeout:g} s") from None
            raise
        return True

    def idle(self, seconds: float) -> None:
        """Service the connection (AMQP heartbeats, close frames) for up to ``seconds``."""
        if self._connection is None:
            time.sleep(seconds)
            return
        try:
            self._connection.process_data_events(time_limit=seconds)
        except BROKER_ERRORS as err:
            broker = self.broker
            self.close()
            raise PublishError(f"{broker} {describe(err)}") from None

    def close(self) -> None:
        """Close the connection if one is open; never raises."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            close_quietly(connection, self.confirm_timeout)


