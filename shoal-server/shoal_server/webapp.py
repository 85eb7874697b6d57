"""The web.py application: routes, request parsing and responses; the logic lives in pure modules."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Tuple, Union

import web

from .clientaddr import BadClientAddress, ClientResolver
from .config import ServerConfig
from .consumer import ConsumerStatus
from .geo import GeoLocator, geo_health
from .health import Health, assess_health
from .metrics import Metrics
from .ranking import Ranked, Weights, rank_table
from .grouping import group_numbers, group_ranked
from .pac import Route, has_answer, render_pac, rotate_groups
from .render import AllBody, ranked_json
from .statuspage import StatusView, load_world_outline, parse_request
from .table import CacheEntry, CacheTable

logger = logging.getLogger(__name__)

DEFAULT_N = 5
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 10, 10000  # the bounds of [general] status_page_size
REFUSED_ON_PAGE = 50
MAX_N = 100
JSON = "application/json"
PAC = "application/x-ns-proxy-autoconfig"
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
# The status page needs no script at all, so none may run: even markup that slipped past escaping.
STATUS_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
STATIC_TYPES = {".css": "text/css; charset=utf-8"}

# route name -> (verified only, upstream filter); the nearest* routes differ only by filter.
NEAREST_ROUTES: Dict[str, Tuple[bool, Optional[str]]] = {
    "nearest": (False, None),
    "nearestverified": (True, None),
    "nearestcvmfs": (False, "cvmfs"),
    "nearestconditions": (False, "frontier"),
}


class Shoal:
    """Request-independent state the handlers share; every method returns (status, type, body)."""

    def __init__(self, table: CacheTable, locator: GeoLocator, config: ServerConfig,
                 status: ConsumerStatus, clock: Callable[[], float] = time.time,
                 health: Optional[Callable[[], Health]] = None) -> None:
        self.table, self.locator, self.config, self.status, self.clock = table, locator, config, status, clock
        self._health = health or self._basic_health
        self.resolver = ClientResolver(config.general.trusted_proxies)
        self.weights = Weights(config.cache.cache_distloadweight, config.cache.cache_loadconstant)
        self._all_body: Tuple[Tuple[CacheEntry, ...], bytes] = ((), b"{}")
        self._all = AllBody(config.cache.cache_verification)
        self.outline = load_world_outline()
        self._view: Optional[StatusView] = None
        self.metrics = Metrics(table, status, self._health)
        self._favicon: Optional[bytes] = None

    def ranked(self, environ: dict, query: dict, route: str,
               n_text: Optional[str]) -> Tuple[List[Ranked], Optional[str]]:
        """The caches for the requesting client, and the client's address."""
        verified, upstream = NEAREST_ROUTES[route]
        client_ip = self.resolver.resolve(environ, query.get("ip"))
        return self._rank(client_ip, _parse_n(n_text), verified, upstream), client_ip

    def _rank(self, client_ip: Optional[str], n: int, verified: bool, upstream: Optional[str]) -> List[Ranked]:
        client = self.locator.locate(client_ip) if client_ip else None
        # Vector arithmetic on the table's live column arrays, then exact scoring of a few candidates.
        return rank_table(self.table, client, client_ip, self.weights, n, verified, upstream)

    def nearest(self, environ: dict, query: dict, route: str, n_text: Optional[str]) -> Tuple[str, str, str]:
        ranked, client_ip = self.ranked(environ, query, route, n_text)
        groups = group_numbers(ranked, self.config.cache.cache_group_margin)
        return "200 OK", JSON, ranked_json(ranked, self.config.cache.cache_verification, client_ip, groups)

    def wpad(self, environ: dict, query: dict) -> Tuple[str, str, str]:
        """/wpad.dat: stratum-1 URLs to cvmfs caches, Frontier URLs to frontier caches, any other
        URL to the nearest caches; each list ends in [pac] fallback; 503 when nothing is known."""
        client_ip = self.resolver.resolve(environ, query.get("ip"))
        pac, margin = self.config.pac, self.config.cache.cache_group_margin

        def proxies(upstream: Optional[str]) -> Tuple[Tuple[str, int], ...]:
            groups = group_ranked(self._rank(client_ip, pac.caches, False, upstream), margin)
            hosts = [[(r.entry.hb.hostname, r.entry.hb.squid_port) for r in group] for group in groups]
            return tuple(rotate_groups(hosts, client_ip))

        routes = [Route("cvmfs", pac.cvmfs_urls, proxies("cvmfs")),
                  Route("frontier", pac.frontier_urls, proxies("frontier"))]
        default = proxies(None)
        if not has_answer(routes, default, pac.fallback):
            # As the WLCG WPAD service: an HTTP error makes CVMFS (and Frontier) try the next PAC URL.
            return "503 Service Unavailable", TEXT, "no cache known and no [pac] fallback configured\n"
        return "200 OK", PAC, render_pac(routes, default, pac.fallback, f"Shoal caches for {client_ip or 'unknown'}")

    def view(self) -> StatusView:
        """The status page's view of the current snapshot, derived from the previous one's."""
        entries = self.table.snapshot()   # one tuple per table version
        view = self._view
        if view is None or view.tolerance != self.config.cache.cache_clock_drift:
            view = StatusView.build(entries, self.config.cache.cache_clock_drift, self.outline)
        elif view.entries is not entries:
            view = view.derive(entries)
        self._view = view   # a race between threads only derives twice
        return view

    def all(self) -> Tuple[str, str, bytes]:
        # The body is kept per snapshot; a new one re-encodes only the entries that changed.
        entries, body = self._all_body
        view = self.view()
        if view.entries is not entries:
            body = self._all.render(view.ordered())   # hostname, then uuid: the page's default order
            self._all_body = (view.entries, body)
        return "200 OK", JSON, body

    def _basic_health(self) -> Health:
        heard = self.status.heard_at()
        return assess_health(len(self.table), self.status.disconnected_for(), self.config.cache.cache_inactive_time,
                             silent_for=None if heard is None else self.clock() - heard)

    def healthz(self) -> Tuple[str, str, str]:
        """ok (200): a current table; stale (200): a kept table, still the best answer; unavailable (503)."""
        health = self._health()
        down_for = self.status.disconnected_for()
        heard = self.status.heard_at()
        body = {"status": health.state, "reason": health.reason, "caches": len(self.table),
                "overdue": health.overdue, "silent_together": health.together,
                "consumer_connected": self.status.connected, "disconnected_seconds": round(down_for, 1),
                "heartbeat_silence_seconds": None if heard is None else round(self.clock() - heard, 1),
                **self.status.counters(),
                "refused": self.status.refused.summary(self.clock(), self.config.cache.window()),
                "geoip": geo_health(self.locator)}
        return health.http_status, JSON, json.dumps(body)

    def status_page(self, query: dict, size_text: Optional[str] = None) -> Tuple[str, str, bytes]:
        # Upstream's "/N" gave the page size in the path; it is kept within the configured bounds.
        size = self.config.general.status_page_size
        if size_text:
            size = max(MIN_PAGE_SIZE, min(MAX_PAGE_SIZE, int(size_text)))
        body = self.view().render_bytes(self.clock(), parse_request(query), size, self.status.connected,
                                        refused=self.status.refused.newest(REFUSED_ON_PAGE))
        return "200 OK", HTML, body

    def metrics_page(self, accept: str) -> Tuple[str, str, str]:
        content_type, body = self.metrics.exposition(accept)
        return "200 OK", content_type, body.decode("utf-8")

    def favicon(self) -> Tuple[str, str, bytes]:
        """The icon upstream's page linked (/static/img/icons/favicon.ico) and browsers ask for."""
        if self._favicon is None:
            with open(os.path.join(STATIC_DIR, "favicon.ico"), "rb") as handle:
                self._favicon = handle.read()
        return "200 OK", "image/x-icon", self._favicon

    def static(self, name: str) -> Tuple[str, str, str]:
        """A file of the package's static/ folder (the route admits only plain names)."""
        kind = STATIC_TYPES.get(os.path.splitext(name)[1])
        path = os.path.join(STATIC_DIR, name)
        if kind is None or not os.path.isfile(path):
            return "404 Not Found", "text/plain; charset=utf-8", "not found\n"
        with open(path, encoding="utf-8") as handle:
            return "200 OK", kind, handle.read()


def _parse_n(text: Optional[str]) -> int:
    """N of /nearest/N: 5 when absent, at most MAX_N; /nearest/0 asks for (and gets) none."""
    if not text:
        return DEFAULT_N
    return max(0, min(MAX_N, int(text)))


def create_app(table: CacheTable, locator: GeoLocator, config: ServerConfig, status: ConsumerStatus,
               clock: Callable[[], float] = time.time,
               health: Optional[Callable[[], Health]] = None) -> web.application:
    """Build the web.py application around the shared state; ``.wsgifunc()`` gives the WSGI callable."""
    shoal = Shoal(table, locator, config, status, clock, health)
    # web.py keeps this switch only as a module global; on, it renders tracebacks to clients.
    web.config.debug = False

    def respond(result: Tuple[str, str, Union[str, bytes]]) -> Union[str, bytes]:
        status_line, content_type, body = result
        web.ctx.status = status_line
        web.header("Content-Type", content_type)
        web.header("Cache-Control", "no-cache")
        return body

    def guarded(call: Callable[[], Tuple[str, str, str]]) -> Union[str, bytes]:
        try:
            return respond(call())
        except BadClientAddress as err:
            return respond(("400 Bad Request", TEXT, f"{err}\n"))

    def query() -> dict:
        return dict(web.input(_method="get"))

    class Nearest:
        def GET(self, route: str, n_text: Optional[str] = None) -> Union[str, bytes]:
            return guarded(lambda: shoal.nearest(web.ctx.env, query(), route, n_text))

    class Wpad:
        def GET(self) -> Union[str, bytes]:
            return guarded(lambda: shoal.wpad(web.ctx.env, query()))

    class All:
        def GET(self, n_text: Optional[str] = None) -> Union[str, bytes]:
            return respond(shoal.all())  # upstream ignored the N of /all/N too

    class Healthz:
        def GET(self) -> Union[str, bytes]:
            result = shoal.healthz()
            web.header("X-Shoal-Health", json.loads(result[2])["status"])  # for balancers that read headers
            return respond(result)

    class Index:
        def GET(self, size_text: Optional[str] = None) -> Union[str, bytes]:
            web.header("Content-Security-Policy", STATUS_CSP)
            web.header("X-Content-Type-Options", "nosniff")
            return respond(shoal.status_page(query(), size_text))

    class Favicon:
        def GET(self) -> Union[str, bytes]:
            return respond(shoal.favicon())

    class MetricsPage:
        def GET(self) -> Union[str, bytes]:
            return respond(shoal.metrics_page(web.ctx.env.get("HTTP_ACCEPT", "")))

    class Static:
        def GET(self, name: str) -> Union[str, bytes]:
            web.header("X-Content-Type-Options", "nosniff")
            return respond(shoal.static(name))

    # Every route upstream's url tables (2014-2025) answered, with their optional /N and slash.
    urls = (
        r"/(nearest|nearestverified|nearestcvmfs|nearestconditions)/?(\d{1,9})?/?", Nearest,
        r"/wpad\.dat", Wpad,
        r"/all/?(\d{1,9})?/?", All,
        r"/healthz", Healthz,
        r"/metrics", MetricsPage,
        r"/(?:favicon\.ico|static/img/icons/favicon\.ico)", Favicon,
        r"/static/([A-Za-z0-9_-]+\.css)", Static,
        r"/(\d{1,9})?/?", Index,
    )
    app = web.application(urls, {}, autoreload=False)

    def count_request(handler: Callable[[], object]) -> object:
        """web.py processor: request count and latency per endpoint for /metrics."""
        start = time.perf_counter()
        try:
            result = handler()
        except web.HTTPError:
            shoal.metrics.observe(web.ctx.path, web.ctx.status, time.perf_counter() - start)
            raise
        shoal.metrics.observe(web.ctx.path, web.ctx.status, time.perf_counter() - start)
        return result

    def internal_error() -> web.HTTPError:
        """Called by web.py inside its handler's ``except``: log the traceback, show nothing of it."""
        logger.exception("error serving %s", web.ctx.path)
        return web.internalerror("internal server error\n")

    app.internalerror = internal_error  # type: ignore[method-assign]
    app.add_processor(count_request)
    app.shoal = shoal  # type: ignore[attr-defined]
    return app
