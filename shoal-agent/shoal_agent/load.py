"""How busy the cache is, in KB/s sent, averaged over the whole interval between two heartbeats.

Load comes from cumulative counters read once per heartbeat: the kernel's per-interface transmit
byte counter, or Squid's own ``client_http.kbytes_out``. The rate is the counter's growth divided
by the time between the readings, so a burst between heartbeats is never missed (the 2014 agent
slept one second and reported that second only). The arithmetic is pure and tested on its own;
readers take their paths and URLs as parameters.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import urllib.error
import urllib.request
from typing import Dict, List, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)

KIB = 1024.0
DEFAULT_MAX_GAP = 3600.0


class LoadError(Exception):
    """The load could not be read; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading of a cumulative counter at a wall-clock time (kept across restarts)."""

    time: float
    value: float


def counter_delta(previous: float, current: float) -> float:
    """Growth of a cumulative counter; one that went backwards was reset and counts from zero."""
    return current - previous if current >= previous else current


def rate(previous: Sample, current: Sample, max_gap: float = DEFAULT_MAX_GAP) -> Optional[float]:
    """Counter units per second between two samples; None when the pair cannot give a fair average."""
    elapsed = current.time - previous.time
    if elapsed <= 0 or elapsed > max_gap:
        return None  # the clock went back, or the sample is too old to say anything about now
    return counter_delta(previous.value, current.value) / elapsed


def since_start(total: float, uptime: float) -> Optional[float]:
    """The average since the counter started: the best estimate before any previous sample exists."""
    if uptime <= 0 or total < 0:
        return None
    return total / uptime


class LoadMeter:
    """Average rate of named cumulative counters between consecutive readings.

    ``scale`` converts counter units per second into KB/s (1/1024 for bytes). With several
    counters (several public interfaces) the busiest one is the load.
    """

    def __init__(self, scale: float = 1.0, max_gap: float = DEFAULT_MAX_GAP) -> None:
        self.scale = scale
        self.max_gap = max_gap
        self._last: Dict[str, Sample] = {}

    def update(self, readings: Mapping[str, float], now: float) -> Optional[float]:
        """Record ``readings`` taken at ``now``; return KB/s since the previous readings, or None."""
        rates = []
        for name, value in readings.items():
            current = Sample(now, float(value))
            previous = self._last.get(name)
            self._last[name] = current
            if previous is not None:
                per_second = rate(previous, current, self.max_gap)
                if per_second is not None:
                    rates.append(per_second)
        return max(rates) * self.scale if rates else None

    def state(self) -> Dict[str, List[float]]:
        """The last readings, for saving between runs (``--once`` from cron, restarts)."""
        return {name: [s.time, s.value] for name, s in self._last.items()}

    def restore(self, state: object) -> None:
        """Load what ``state()`` returned; anything malformed is ignored."""
        if not isinstance(state, dict):
            return
        for name, pair in state.items():
            if (isinstance(name, str) and isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)):
                self._last[name] = Sample(float(pair[0]), float(pair[1]))


# ---- the kernel's interface counters -----------------------------------------------------------

def read_tx_bytes(iface: str, sysfs: str = "/sys/class/net") -> int:
    """Bytes the interface has transmitted since its counter started."""
    path = os.path.join(sysfs, iface, "statistics", "tx_bytes")
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError) as err:
        raise LoadError(f"cannot read {path} ({err}); set [general] interface to an existing "
                        "network interface") from None


def read_uptime(proc: str = "/proc") -> float:
    """Seconds since boot, from ``/proc/uptime``."""
    with open(os.path.join(proc, "uptime"), encoding="ascii") as handle:
        return float(handle.read().split()[0])


# ---- Squid's cache manager ---------------------------------------------------------------------

_KBYTES_OUT_RE = re.compile(r"^client_http\.kbytes_out\s*=\s*([0-9.]+)\s*(/sec)?\s*$", re.MULTILINE)
_UPTIME_RE = re.compile(r"^\s*UP Time:\s*([0-9.]+)\s*seconds", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class SquidKbytesOut:
    """``client_http.kbytes_out`` as a page reports it: a counter (``counters``) or a rate (``5min``)."""

    value: float
    is_rate: bool


def parse_kbytes_out(text: str) -> SquidKbytesOut:
    """Find ``client_http.kbytes_out`` in a cache manager page; raise LoadError if absent."""
    match = _KBYTES_OUT_RE.search(text)
    if not match:
        raise LoadError("the cache manager page has no client_http.kbytes_out line "
                        "(point [squid] manager_url at squid-internal-mgr/counters or /5min)")
    return SquidKbytesOut(value=float(match.group(1)), is_rate=bool(match.group(2)))


def parse_uptime(text: str) -> Optional[float]:
    """Squid's ``UP Time`` from the ``info`` page, in seconds."""
    match = _UPTIME_RE.search(text)
    return float(match.group(1)) if match else None


def fetch_manager_page(url: str, timeout: float = 5.0) -> str:
    """GET a cache manager page directly (never through an environment proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body: bytes = response.read(1 << 20)
            return body.decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        hint = " (Squid needs 'http_access allow localhost manager')" if err.code == 403 else ""
        raise LoadError(f"cache manager {url} answered HTTP {err.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise LoadError(f"cache manager {url} unreachable: {reason}") from None


def info_url(manager_url: str) -> str:
    """The ``info`` page next to ``manager_url`` (same base, same access rules)."""
    return manager_url.rsplit("/", 1)[0] + "/info"


# ---- the two load sources ----------------------------------------------------------------------

class InterfaceLoad:
    """KB/s sent by the busiest of ``interfaces``, from the kernel's transmit counters."""

    name = "interface"

    def __init__(self, interfaces: Sequence[str], sysfs: str = "/sys/class/net", proc: str = "/proc",
                 max_gap: float = DEFAULT_MAX_GAP) -> None:
        self.interfaces = tuple(interfaces)
        self.sysfs = sysfs
        self.proc = proc
        self.meter = LoadMeter(scale=1 / KIB, max_gap=max_gap)

    def measure(self, now: float) -> float:
        readings: Dict[str, float] = {}
        problem = None
        for iface in self.interfaces:
            try:
                readings[iface] = read_tx_bytes(iface, self.sysfs)
            except LoadError as err:
                problem = err
        if not readings:
            raise problem or LoadError("no interface to measure; set [general] interface")
        load = self.meter.update(readings, now)
        if load is None:
            try:
                uptime = read_uptime(self.proc)
            except (OSError, ValueError, IndexError):
                return 0.0
            load = max((since_start(v, uptime) or 0.0) for v in readings.values()) / KIB
        return load


class SquidLoad:
    """KB/s Squid sent to its clients, from its cache manager (``counters``, ``5min`` or ``60min``)."""

    name = "squid"

    def __init__(self, manager_url: str, timeout: float = 5.0, max_gap: float = DEFAULT_MAX_GAP) -> None:
        self.manager_url = manager_url
        self.timeout = timeout
        self.meter = LoadMeter(scale=1.0, max_gap=max_gap)

    def measure(self, now: float) -> float:
        kbytes = parse_kbytes_out(fetch_manager_page(self.manager_url, self.timeout))
        if kbytes.is_rate:
            return kbytes.value
        load = self.meter.update({"squid": kbytes.value}, now)
        if load is None:
            try:
                uptime = parse_uptime(fetch_manager_page(info_url(self.manager_url), self.timeout))
            except LoadError:
                uptime = None
            load = since_start(kbytes.value, uptime) if uptime else None
        return load if load is not None else 0.0
