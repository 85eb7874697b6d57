"""What ``/healthz`` says: is this server serving a good table, a stale but kept one, or nothing useful?

Pure logic, no I/O: the inputs are counters the consumer and the purge keep.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

OK = "ok"                    # connected, heartbeats flow: the table is current
STALE = "stale"              # a kept table (broker outage or stall, restored snapshot): still the best answer
UNAVAILABLE = "unavailable"  # nothing useful to serve


@dataclasses.dataclass(frozen=True)
class Health:
    """One of the three states, why, and what a balancer should do with it."""

    state: str
    reason: str
    overdue: int = 0     # caches kept though silent for longer than the inactive time
    together: int = 0    # of them or about to be: the caches of a mass silence (a cut-off broker node?)

    @property
    def http_status(self) -> str:
        """200 for ok and stale (keep in rotation), 503 for unavailable (take out)."""
        return "503 Service Unavailable" if self.state == UNAVAILABLE else "200 OK"


def flow_window(inactive: float) -> float:
    """Heartbeats "flow" while some message arrived within half the inactive time."""
    return inactive / 2


def assess_health(caches: int, disconnected_for: float, inactive: float, silent_for: Optional[float],
                  overdue: int = 0, together: int = 0) -> Health:
    """The state from the table size, the consumer's connection, the time since any heartbeat and
    ``overdue``, the caches kept though silent for longer than the inactive time (expiry waiting
    after an outage or a restart from an old snapshot), and ``together``, the caches of a mass
    silence (service.mass_silence: a broker node cut off with its agents).

    A balancer keeps "stale" servers in rotation: during a cluster outage every server is stale
    and their kept tables are what clients need (a 503 there would turn a broker fault into a
    client outage). "unavailable" -- no table and no broker for longer than the inactive time --
    is taken out. A connected server that simply has no cache announced yet is "ok": its empty
    answer is the truth.
    """
    state, reason = _state(caches, disconnected_for, inactive, silent_for, overdue, together)
    return Health(state, reason, overdue, together)


def _state(caches: int, disconnected_for: float, inactive: float, silent_for: Optional[float], overdue: int,
           together: int) -> Tuple[str, str]:
    if caches == 0:
        if disconnected_for > inactive:
            return (UNAVAILABLE, f"consumer disconnected for {disconnected_for:.0f} s and no table to serve")
        return (OK, "connected; no cache announced")
    if disconnected_for > 0:
        return (STALE, f"consumer disconnected for {disconnected_for:.0f} s; serving the kept table")
    if silent_for is None or silent_for > flow_window(inactive):
        return (STALE, "no heartbeat arrives from any cache; serving the kept table")
    if together:
        return (STALE, f"{together} of {caches} caches fell silent together while others beat (a cut-off "
                       "broker node?); kept until silent for cache_silence_hold")
    if overdue:
        return (STALE, f"{overdue} cache(s) kept though not heard for longer than the inactive time "
                       "(until fresh heartbeats arrive)")
    return (OK, "connected; heartbeats flow")
