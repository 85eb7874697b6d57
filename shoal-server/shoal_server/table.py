"""The in-memory table of live caches; the only shared mutable state of the server."""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Dict, List, Optional, Tuple

from .geo import Location
from .heartbeat import Heartbeat, InvalidHeartbeat

Locate = Callable[[str], Optional[Location]]


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cache as the server knows it. Immutable: an update replaces the entry."""

    hb: Heartbeat
    created: float
    last_active: float
    location: Optional[Location]
    verified: Optional[bool] = None   # None: the server has not checked it (yet)
    owner: Optional[str] = None       # the AMQP user that first announced this uuid

    @property
    def uuid(self) -> str:
        return self.hb.uuid

    @property
    def address(self) -> str:
        return self.hb.address

    @property
    def unit(self) -> Optional[Tuple[float, float, float]]:
        return self.location.unit_vector if self.location else None

    @property
    def is_verified(self) -> bool:
        """The server's own verification result, else what the agent claims."""
        return self.hb.verified if self.verified is None else self.verified


class CacheTable:
    """Thread-safe map of uuid to CacheEntry; readers work on immutable snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[str, CacheEntry] = {}
        self._version = 0
        self._snapshot: Tuple[int, Tuple[CacheEntry, ...]] = (0, ())

    def upsert(self, hb: Heartbeat, now: float, locate: Locate) -> CacheEntry:
        """Add or refresh the cache ``hb`` describes; GeoIP runs only for a new address.

        Raises InvalidHeartbeat('owner_mismatch') when another AMQP user owns the uuid.
        """
        with self._lock:
            old = self._entries.get(hb.uuid)
        _check_owner(old, hb)
        location = old.location if old is not None and old.address == hb.address else locate(hb.address)
        with self._lock:
            old = self._entries.get(hb.uuid)
            _check_owner(old, hb)
            if old is None:
                entry = CacheEntry(hb=hb, created=now, last_active=now, location=location, owner=hb.user_id)
            else:
                entry = dataclasses.replace(old, hb=hb, last_active=now, location=location)
            self._entries[hb.uuid] = entry
            self._version += 1
        return entry

    def expire(self, now: float, max_age: float) -> List[str]:
        """Remove caches silent for more than ``max_age`` seconds; return their uuids."""
        with self._lock:
            gone = [uuid for uuid, e in self._entries.items() if now - e.last_active > max_age]
            for uuid in gone:
                del self._entries[uuid]
            if gone:
                self._version += 1
        return gone

    def set_verified(self, uuid: str, verified: bool) -> None:
        """Record the result of a verification run, if the cache is still there."""
        with self._lock:
            old = self._entries.get(uuid)
            if old is not None and old.verified != verified:
                self._entries[uuid] = dataclasses.replace(old, verified=verified)
                self._version += 1

    def load(self, entries: List[CacheEntry]) -> None:
        """Insert entries restored from a snapshot file (existing uuids win)."""
        with self._lock:
            for entry in entries:
                self._entries.setdefault(entry.uuid, entry)
            self._version += 1

    def snapshot(self) -> Tuple[CacheEntry, ...]:
        """Return the current entries; the tuple is shared until the table next changes."""
        with self._lock:
            version, entries = self._snapshot
            if version != self._version:
                entries = tuple(self._entries.values())
                self._snapshot = (self._version, entries)
            return entries

    def get(self, uuid: str) -> Optional[CacheEntry]:
        with self._lock:
            return self._entries.get(uuid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _check_owner(old: Optional[CacheEntry], hb: Heartbeat) -> None:
    if old is not None and old.owner is not None and old.owner != hb.user_id:
        raise InvalidHeartbeat("owner_mismatch", f"uuid {hb.uuid} belongs to {old.owner!r}, not {hb.user_id!r}")
