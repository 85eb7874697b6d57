"""Is the local Squid really serving? Fetch ``check_url`` through it, as a client would.

While the check fails the agent stays silent, so the server drops the cache after its inactive
time and no worker is sent to a broken proxy.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import urllib.error
import urllib.request
from typing import Callable, Optional

from . import __version__

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20


@dataclasses.dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str


def proxy_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def fetch_through_proxy(url: str, proxy: str, timeout: float) -> CheckResult:
    """GET ``url`` via the HTTP proxy ``proxy``; ok on a 2xx answer whose body arrives in full."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    # max-age=0 makes Squid revalidate with the origin, so a pass proves the upstream path too.
    request = urllib.request.Request(url, headers={"Cache-Control": "max-age=0",
                                                  "User-Agent": f"shoal-agent/{__version__}"})
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(MAX_BODY)
            return CheckResult(True, f"HTTP {response.status}")
    except urllib.error.HTTPError as err:
        squid_error = err.headers.get("X-Squid-Error") if err.headers else None
        detail = f" ({squid_error})" if squid_error else ""
        return CheckResult(False, f"HTTP {err.code} {err.reason}{detail}")
    except urllib.error.URLError as err:
        return CheckResult(False, f"proxy {proxy} unreachable: {err.reason}")
    except (OSError, ValueError) as err:
        return CheckResult(False, f"{type(err).__name__}: {err}")


class SquidCheck:
    """Run the check when due and remember the verdict; log only when the verdict changes."""

    def __init__(self, check_url: str, proxy: str, check_interval: float, timeout: float,
                 retry_interval: Optional[float] = None, clock: Callable[[], float] = time.monotonic,
                 fetch: Callable[[str, str, float], CheckResult] = fetch_through_proxy) -> None:
        self.check_url = check_url
        self.proxy = proxy
        self.check_interval = check_interval
        self.retry_interval = min(check_interval, retry_interval or check_interval)
        self.timeout = timeout
        self._clock = clock
        self._fetch = fetch
        self._last_run: Optional[float] = None
        self.result = CheckResult(True, "no check_url configured")

    @property
    def enabled(self) -> bool:
        return bool(self.check_url)

    def due(self) -> bool:
        if not self.enabled:
            return False
        if self._last_run is None:
            return True
        wait = self.check_interval if self.result.ok else self.retry_interval
        return self._clock() - self._last_run >= wait

    def run(self) -> CheckResult:
        """Fetch now and return the verdict."""
        previous = self.result if self._last_run is not None else None
        result = self._fetch(self.check_url, self.proxy, self.timeout)
        self._last_run = self._clock()
        self.result = result
        if not result.ok and (previous is None or previous.ok):
            logger.warning("check_url %s through Squid %s failed: %s; not announcing until it passes",
                           self.check_url, self.proxy, result.reason)
        elif result.ok and previous is not None and not previous.ok:
            logger.warning("check_url %s passes again (%s); announcing", self.check_url, result.reason)
        elif result.ok and previous is None:
            logger.info("check_url %s through Squid %s passes (%s)", self.check_url, self.proxy, result.reason)
        elif not result.ok and previous is not None and result.reason != previous.reason:
            logger.info("check_url still failing: %s", result.reason)
        return result

    def passing(self) -> bool:
        """Run the check if due; True when announcing is allowed."""
        if self.due():
            self.run()
        return self.result.ok
