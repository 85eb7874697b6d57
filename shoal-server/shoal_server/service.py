"""Wire the server together: table, GeoIP, consumer and purge threads, and the web app."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Optional

import web

from .config import ServerConfig
from .consumer import Consumer, ConsumerStatus, HeartbeatSink
from .geo import GeoLocator, open_locator
from .heartbeat import Limits
from .table import CacheTable
from .webapp import create_app

logger = logging.getLogger(__name__)


class ShoalService:
    """Everything one server process runs besides the HTTP listener; ``start``/``stop`` are idempotent."""

    def __init__(self, config: ServerConfig, locator: Optional[GeoLocator] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.locator = locator if locator is not None else open_locator(config.general.geoip_database)
        self.table = CacheTable()
        self.status = ConsumerStatus(clock)
        cache = config.cache
        self.limits = Limits(default_max_load=cache.cache_max_load, max_age=cache.cache_inactive_time,
                             drift_tolerance=cache.cache_clock_drift,
                             require_user_id=config.rabbitmq.use_ssl)
        self.sink = HeartbeatSink(self.table, self.locator, self.limits, self.status, clock)
        self.stop_event = threading.Event()
        self._threads: List[threading.Thread] = []
        self._started = False
        self._lock = threading.Lock()
        web.config.debug = False  # never render tracebacks to HTTP clients
        self.app = create_app(self.table, self.locator, config, self.status, clock)
        self._wsgi = self.app.wsgifunc()

    def wsgi(self) -> Callable:
        return self._wsgi

    def start(self) -> None:
        """Start the consumer and purge threads once per process."""
        with self._lock:
            if self._started:
                return
            self._started = True
            consumer = Consumer(self.config.rabbitmq, self.sink, self.status, self.stop_event)
            for name, target in (("shoal-consumer", consumer.run), ("shoal-purge", self._purge_loop)):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _purge_loop(self) -> None:
        interval = self.config.cache.cache_cleanse_interval
        while not self.stop_event.wait(interval):
            self.purge()

    def purge(self) -> List[str]:
        """Drop caches silent for longer than ``cache_inactive_time``."""
        gone = self.table.expire(self.clock(), self.config.cache.cache_inactive_time)
        if gone:
            logger.info("purged %d inactive cache(s): %s", len(gone), ", ".join(gone[:10]))
        return gone

    def stop(self, timeout: float = 1.5) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.locator.close()
