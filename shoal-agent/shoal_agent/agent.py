"""The agent proper: build a heartbeat from what the machine says, and the loop that sends them.

``Agent.run`` is the daemon loop (in a worker thread, see ``main``); ``once`` and ``preview`` serve
``--once`` and ``--dry-run``. Every broker, DNS, Squid or address failure inside the loop ends in
a retry, never in an exit, and is logged when the situation changes rather than on every attempt.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Union

from . import __version__
from .addresses import Addresses, HostnameResolver, InterfaceAddress, NoUsableAddress, choose, list_addresses
from .config import AgentConfig
from .heartbeat import build_heartbeat, encode
from .identity import atomic_write
from .load import InterfaceLoad, LoadError, SquidLoad
from .publisher import BACKOFF_CAP, BACKOFF_INITIAL, Backoff, ConfirmTimeout, Publisher, PublishError
from .squidcheck import SquidCheck, proxy_url

logger = logging.getLogger(__name__)

LOAD_STATE_FILE = "load.json"
IDLE_SLICE = 0.25          # how often the loop looks at the stop flag
REMIND_EVERY = 600.0       # a broker outage is re-logged at most this often

LoadSource = Union[InterfaceLoad, SquidLoad]


class Agent:
    """Everything one agent process needs, passed in so tests can swap any part."""

    def __init__(self, config: AgentConfig, uuid: str, state_dir: str, publisher: Optional[Publisher] = None,
                 load_source: Optional[LoadSource] = None, check: Optional[SquidCheck] = None,
                 resolver: Optional[HostnameResolver] = None,
                 addresses: Callable[[], List[InterfaceAddress]] = list_addresses,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        general = config.general
        self.config = config
        self.uuid = uuid
        self.state_dir = state_dir
        self.publisher = publisher
        self.load_source = load_source if load_source is not None else make_load_source(config)
        self.check = check if check is not None else make_check(config)
        self.resolver = resolver or HostnameResolver(general.dnsname)
        self._addresses = addresses
        self._clock = clock
        self._monotonic = monotonic
        self._problem: Optional[str] = None     # the last reason a heartbeat was not built
        self._load_problem: Optional[str] = None
        self.sent = 0
        self._restore_load_state()

    # ---- building ------------------------------------------------------------------------------

    def detect(self) -> Addresses:
        """Current addresses; raises NoUsableAddress naming the key to set."""
        general = self.config.general
        found = choose(self._addresses(), general.external_ip, general.interface)
        if isinstance(self.load_source, InterfaceLoad) and found.load_interfaces != self.load_source.interfaces:
            self.load_source.interfaces = found.load_interfaces
            logger.info("measuring load on %s", ", ".join(found.load_interfaces))
        return found

    def measure_load(self, persist: bool = True) -> float:
        """KB/s since the previous heartbeat; ``max_load`` (look busy, not idle) when unreadable."""
        try:
            load = self.load_source.measure(self._clock())
        except LoadError as err:
            if str(err) != self._load_problem:
                logger.warning("cannot measure load (%s); announcing max_load until it works", err)
                self._load_problem = str(err)
            return self.config.general.max_load
        if self._load_problem:
            logger.warning("load measurement works again")
            self._load_problem = None
        if persist:
            self._save_load_state()
        return load

    def build(self, persist: bool = True) -> Dict[str, Any]:
        """The heartbeat to send now; raises NoUsableAddress."""
        general = self.config.general
        addresses = self.detect()
        load = self.measure_load(persist)
        return build_heartbeat(
            uuid=self.uuid, hostname=self.resolver.hostname(addresses.announced), squid_port=general.squid_port,
            addresses=addresses, load=load, max_load=general.max_load, timestamp=self._clock(),
            upstream=general.upstream, cache_type=general.cache_type)

    # ---- the three modes -----------------------------------------------------------------------

    def preview(self) -> Dict[str, Any]:
        """``--dry-run``: the heartbeat that would be sent, with nothing written or published."""
        return self.build(persist=False)

    def once(self) -> Optional[str]:
        """``--once``: check, build and publish one heartbeat; return None on success, else the reason."""
        assert self.publisher is not None
        try:
            if self.check.enabled:
                result = self.check.run()
                if not result.ok:
                    return f"check_url {self.check.check_url} through Squid {self.check.proxy} failed: {result.reason}"
            try:
                body = encode(self.build())
            except NoUsableAddress as err:
                return str(err)
            try:
                routed = self.publisher.publish(body, self.config.expiration_ms)
            except PublishError as err:
                return f"no broker took the heartbeat: {err}"
            if not routed:
                logger.warning("broker %s confirmed the heartbeat but no server queue is bound to exchange %s",
                               self.publisher.broker, self.config.rabbitmq.amqp_exchange)
            logger.info("heartbeat sent to %s", self.publisher.broker)
            return None
        finally:
            self.publisher.close()

    def beat(self) -> bool:
        """One scheduled heartbeat; False when it was deliberately not sent. Raises PublishError."""
        assert self.publisher is not None
        if self.check.enabled and not self.check.passing():
            return False
        try:
            body = encode(self.build())
        except NoUsableAddress as err:
            self._note_problem(str(err))
            return False
        self._note_problem(None)
        if not self.publisher.publish(body, self.config.expiration_ms):
            # Not a success: no server hears it. It counts as a failed attempt (backoff, outage log)
            # after the publisher tried every broker of amqp_servers.
            raise PublishError(f"brokers confirmed the heartbeat but no server queue is bound to exchange "
                               f"{self.config.rabbitmq.amqp_exchange} (is shoal-server running and using "
                               f"the same exchange and cluster?)")
        self.sent += 1
        return True

    def run(self, stop: threading.Event) -> None:
        """Send a heartbeat every ``interval`` until ``stop`` is set; survive every failure."""
        assert self.publisher is not None
        interval = self.config.general.interval
        backoff = Backoff(cap=retry_cap(interval))
        outage: Optional[_Outage] = None
        next_beat = self._monotonic()
        logger.info("shoal-agent %s announcing every %g s (uuid %s)", __version__, interval, self.uuid)
        try:
            while not stop.is_set():
                now = self._monotonic()
                if now >= next_beat:
                    try:
                        self.beat()
                    except ConfirmTimeout as err:
                        # Most likely routed, only unconfirmed (a queue on a paused node); the
                        # publisher moved on. Keep the cadence: a backoff would only starve the
                        # healthy servers of heartbeats.
                        outage = outage or _Outage(self._monotonic())
                        outage.failed(str(err), interval, self._monotonic())
                        next_beat += interval
                        if next_beat <= now:
                            next_beat = now + interval
                    except PublishError as err:
                        delay = backoff.next()
                        outage = outage or _Outage(self._monotonic())
                        outage.failed(str(err), delay, self._monotonic())
                        next_beat = self._monotonic() + delay
                    except Exception:  # a bug must not end the heartbeats: log it once per attempt and go on
                        logger.exception("unexpected error while sending a heartbeat")
                        next_beat = self._monotonic() + backoff.next()
                    else:
                        if outage is not None:
                            outage.recovered(self.publisher.broker, self._monotonic())
                            outage = None
                        backoff.reset()
                        next_beat += interval
                        if next_beat <= now:
                            next_beat = now + interval
                self._idle(min(IDLE_SLICE, max(0.0, next_beat - self._monotonic())), stop)
        finally:
            self.publisher.close()
            logger.info("stopped after %d heartbeats", self.sent)

    def _idle(self, seconds: float, stop: threading.Event) -> None:
        assert self.publisher is not None
        if seconds <= 0:
            return
        if not self.publisher.connected:
            stop.wait(seconds)
            return
        try:
            self.publisher.idle(seconds)
        except PublishError as err:
            logger.warning("lost the AMQP connection (%s); reconnecting at the next heartbeat", err)

    def _note_problem(self, problem: Optional[str]) -> None:
        if problem != self._problem:
            if problem:
                logger.warning("not announcing: %s", problem)
            else:
                if self._problem:
                    logger.warning("addresses usable again; announcing")
            self._problem = problem

    # ---- load counters kept between runs -------------------------------------------------------

    def _load_state_path(self) -> str:
        return os.path.join(self.state_dir, LOAD_STATE_FILE)

    def _restore_load_state(self) -> None:
        try:
            with open(self._load_state_path(), encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable %s (%s)", self._load_state_path(), err)
            return
        if isinstance(data, dict) and data.get("source") == self.load_source.name:
            self.load_source.meter.restore(data.get("samples"))

    def _save_load_state(self) -> None:
        data = {"source": self.load_source.name, "samples": self.load_source.meter.state()}
        try:
            atomic_write(self._load_state_path(), json.dumps(data) + "\n")
        except OSError as err:
            logger.debug("cannot save %s: %s", self._load_state_path(), err)


class _Outage:
    """Log a broker outage when it starts, as a reminder every REMIND_EVERY s, and when it ends."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.attempts = 0
        self.last_logged = 0.0

    def failed(self, reason: str, delay: float, now: float) -> None:
        self.attempts += 1
        if self.attempts == 1:
            logger.warning("cannot publish heartbeats (%s); retrying with backoff", reason)
            self.last_logged = now
        elif now - self.last_logged >= REMIND_EVERY:
            logger.warning("still cannot publish heartbeats after %d attempts over %.0f s (%s)",
                           self.attempts, now - self.started, reason)
            self.last_logged = now
        else:
            logger.debug("publish attempt %d failed (%s); next in %.1f s", self.attempts, reason, delay)

    def recovered(self, broker: str, now: float) -> None:
        logger.warning("heartbeats resumed via %s after %d failed attempts over %.0f s", broker,
                       self.attempts, now - self.started)


def retry_cap(interval: float) -> float:
    """The longest wait between reconnect attempts: 60 s, or the interval when that is shorter.

    Retrying at most as often as the agent would announce anyway never loads a broker more than
    normal operation does, and entries are fresh again within about one interval of a recovery.
    """
    return max(BACKOFF_INITIAL, min(BACKOFF_CAP, interval))


def confirm_timeout(settings_timeout: float, interval: float) -> float:
    """How long a heartbeat may wait for its confirm: well under the interval, so one hung node never
    makes an agent skip beats (at most a third of it, at least 1 s, at most the broker reply timeout)."""
    return min(settings_timeout, max(1.0, interval / 3.0))


def make_load_source(config: AgentConfig) -> LoadSource:
    if config.general.load_source == "squid":
        return SquidLoad(config.manager_url, timeout=min(10.0, config.squid.check_timeout))
    return InterfaceLoad((config.general.interface,) if config.general.interface else ())


def make_check(config: AgentConfig) -> SquidCheck:
    return SquidCheck(config.squid.check_url, proxy_url(config.squid.proxy_host, config.general.squid_port),
                      config.squid.check_interval, config.squid.check_timeout,
                      retry_interval=config.general.interval)
