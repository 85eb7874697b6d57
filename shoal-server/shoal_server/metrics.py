"""Prometheus metrics for ``/metrics``: table and consumer state read at scrape time, plus request stats.

Each app gets its own ``CollectorRegistry`` (never the process-wide default), so several apps in
one process (tests, mod_wsgi) never share or double-register series. Table figures are computed
from one snapshot per scrape, so the numbers on ``/metrics`` always agree with each other.
"""
from __future__ import annotations

import collections
import re
from typing import Callable, Iterable, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
try:
    from prometheus_client.registry import Collector
except ImportError:  # prometheus_client < 0.16 (EL 9/EPEL 9 era): collectors are duck-typed there
    Collector = object  # type: ignore[misc,assignment]

from .consumer import ConsumerStatus
from .health import OK, STALE, UNAVAILABLE, Health
from .table import CacheTable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Request paths map to a fixed set of endpoint labels, so a scanner cannot create new series.
_ENDPOINTS: Tuple[Tuple["re.Pattern[str]", str], ...] = tuple(
    (re.compile(pattern), name) for pattern, name in (
        (r"/(nearest|nearestverified|nearestcvmfs|nearestconditions)/?(\d{1,9})?/?\Z", r"\1"),
        (r"/wpad\.dat\Z", "wpad"),
        (r"/all/?(\d{1,9})?/?\Z", "all"),
        (r"/(favicon\.ico|static/img/icons/favicon\.ico)\Z", "favicon"),
        (r"/healthz\Z", "healthz"),
        (r"/metrics\Z", "metrics"),
        (r"/static/", "static"),
        (r"/(\d{1,9})?/?\Z", "status"),
    ))


def endpoint_name(path: str) -> str:
    """The label for a request path: the route's name, or ``other``."""
    for pattern, name in _ENDPOINTS:
        match = pattern.match(path or "/")
        if match:
            return match.expand(name)
    return "other"


class TableCollector(Collector):
    """Cache counts and loads from one table snapshot, and the consumer's counters, per scrape."""

    def __init__(self, table: CacheTable, status: ConsumerStatus,
                 health: Optional[Callable[[], Health]] = None) -> None:
        self._table, self._status, self._health = table, status, health

    def collect(self) -> Iterable[Metric]:
        entries = self._table.snapshot()
        yield GaugeMetricFamily("shoal_caches", "Caches in the table (heard from recently).", value=len(entries))
        yield GaugeMetricFamily("shoal_caches_verified", "Caches that pass verification (or claim to).",
                                value=sum(1 for e in entries if e.is_verified))
        yield GaugeMetricFamily("shoal_caches_unauthenticated",
                                "Caches no broker identity vouches for (legacy agents, legacy_agents = accept).",
                                value=sum(1 for e in entries if not e.hb.authenticated))
        total_load = sum(e.hb.load for e in entries)
        total_max = sum(e.hb.max_load for e in entries)
        yield GaugeMetricFamily("shoal_aggregate_load_kbytes_per_second",
                                "Sum of the load all caches report (KB/s out).", value=total_load)
        yield GaugeMetricFamily("shoal_aggregate_max_load_kbytes_per_second",
                                "Sum of the max_load of all caches (KB/s).", value=total_max)
        yield GaugeMetricFamily("shoal_aggregate_load_ratio",
                                "Aggregate load / aggregate max load (0 with no caches): the scaling signal.",
                                value=total_load / total_max if total_max else 0.0)
        load = GaugeMetricFamily("shoal_cache_load_kbytes_per_second", "Load one cache reports (KB/s).",
                                 labels=("uuid", "hostname"))
        max_load = GaugeMetricFamily("shoal_cache_max_load_kbytes_per_second", "max_load of one cache (KB/s).",
                                     labels=("uuid", "hostname"))
        for e in entries:
            load.add_metric((e.uuid, e.hb.hostname), e.hb.load)
            max_load.add_metric((e.uuid, e.hb.hostname), e.hb.max_load)
        yield load
        yield max_load
        counters = self._status.counters()
        accepted = int(counters["accepted"])  # type: ignore[call-overload]
        dropped = dict(counters["dropped"])  # type: ignore[call-overload]
        yield CounterMetricFamily("shoal_heartbeats_consumed", "Heartbeat messages taken from the broker.",
                                  value=accepted + sum(dropped.values()))
        yield CounterMetricFamily("shoal_heartbeats_accepted", "Heartbeats that updated the table.", value=accepted)
        family = CounterMetricFamily("shoal_heartbeats_dropped", "Heartbeats refused, by reason.",
                                     labels=("reason",))
        for reason, count in sorted(dropped.items()):
            family.add_metric((reason,), count)
        yield family
        repaired = CounterMetricFamily("shoal_heartbeats_repaired",
                                       "Repairs made to accept heartbeats of deployed agents, by reason.",
                                       labels=("reason",))
        for reason, count in sorted(dict(counters["repaired"]).items()):  # type: ignore[call-overload]
            repaired.add_metric((reason,), count)
        yield repaired
        refused = GaugeMetricFamily("shoal_refused_senders",
                                    "Senders whose latest heartbeat was refused (newest 1,000), by reason.",
                                    labels=("reason",))
        for reason, count in sorted(collections.Counter(r.reason for r in self._status.refused.newest()).items()):
            refused.add_metric((reason,), count)
        yield refused
        yield GaugeMetricFamily("shoal_consumer_connected", "1 while the AMQP consumer is connected.",
                                value=1 if self._status.connected else 0)
        yield GaugeMetricFamily("shoal_consumer_disconnected_seconds",
                                "Seconds since the consumer lost its connection (0 while connected).",
                                value=self._status.disconnected_for())
        if self._health is not None:
            yield from health_metrics(self._health())


def health_metrics(health: Health) -> Iterable[Metric]:
    """/healthz as gauges: the state (1 for the current one) and the caches kept though silent."""
    state = GaugeMetricFamily("shoal_health", "1 for the /healthz state this server is in.", labels=("state",))
    for name in (OK, STALE, UNAVAILABLE):
        state.add_metric((name,), 1 if health.state == name else 0)
    yield state
    yield GaugeMetricFamily("shoal_caches_overdue",
                            "Caches kept though silent for longer than cache_inactive_time (expiry waits "
                            "for the broker, or holds a mass silence).", value=health.overdue)
    yield GaugeMetricFamily("shoal_caches_silent_together",
                            "Established caches that fell silent together while others beat (a cut-off "
                            "broker node?): kept until silent for cache_silence_hold.", value=health.together)


class FrontCollector(Collector):
    """The built-in HTTP front's own counters (httpfront.HTTPFront.stats): what never reached the app."""

    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily("shoal_http_connections_open", "Client connections the HTTP front holds open.",
                                value=stats["open"])
        yield CounterMetricFamily("shoal_http_front_rejected",
                                  "Requests the HTTP front answered itself (414/431/408/400...): limits and deadlines.",
                                  value=stats["rejected"])
        yield CounterMetricFamily("shoal_http_front_evicted",
                                  "Idle connections closed to make room for a newcomer (http_max_connections).",
                                  value=stats["evicted"])
        yield CounterMetricFamily("shoal_http_front_refused",
                                  "Connections answered 503: http_max_connections open and all busy.",
                                  value=stats["refused"])


class Metrics:
    """The registry of one app: table collector plus request counters and latency histograms."""

    def __init__(self, table: CacheTable, status: ConsumerStatus,
                 health: Optional[Callable[[], Health]] = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(TableCollector(table, status, health))
        self.requests = Counter("shoal_http_requests", "HTTP requests answered, by endpoint and status code.",
                                ("endpoint", "code"), registry=self.registry)
        self.latency = Histogram("shoal_http_request_duration_seconds", "Time to answer a request, by endpoint.",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry)

    def watch_front(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Also expose the built-in HTTP front's counters (not under mod_wsgi: Apache has its own)."""
        self.registry.register(FrontCollector(stats))

    def observe(self, path: str, status_line: str, seconds: float) -> None:
        endpoint = endpoint_name(path)
        code = (status_line or "200").split(" ", 1)[0]
        self.requests.labels(endpoint, code).inc()
        self.latency.labels(endpoint).observe(seconds)

    def exposition(self, accept: str = "") -> Tuple[str, bytes]:
        """Return (content type, body) in the format the scraper asked for (text by default)."""
        encoder, content_type = choose_encoder(accept)
        return content_type, encoder(self.registry)
