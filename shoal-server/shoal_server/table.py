"""The in-memory table of live caches; the only shared mutable state of the server."""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
import weakref
from typing import Callable, Counter, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .geo import Location
from .heartbeat import Heartbeat, InvalidHeartbeat
from .sphere import SphereIndex

Locate = Callable[[str], Optional[Location]]

# Column code of CacheEntry.hb.upstream; anything else (never produced by the validator) is OTHER.
UPSTREAM_CODES = {"cvmfs": 0, "frontier": 1, "both": 2}
OTHER_UPSTREAM = 3


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cache as the server knows it. Immutable: an update replaces the entry."""

    hb: Heartbeat
    created: float
    last_active: float
    location: Optional[Location]
    verified: Optional[bool] = None   # None: the server has not checked it (yet)
    owner: Optional[str] = None       # the AMQP user that announced this uuid (an identity wins it from nobody)

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


# Ranking's load fraction is clamped here so that every cost is finite: with the exponent b at
# most MAX_LOAD_EXPONENT, LOAD_FRACTION_CAP ** b <= 1e300, and w * angle / pi + (1 - w) * that
# cannot overflow, and never is 0 * inf (NaN) when w = 1. A cache past 1000x its own max_load
# is simply "as loaded as can be"; its distance then decides among such caches.
LOAD_FRACTION_CAP = 1000.0
MAX_LOAD_EXPONENT = 100.0


def load_fraction(load: float, max_load: float) -> float:
    """load / max_load clamped to [0, LOAD_FRACTION_CAP]: the one definition ranking uses.

    Idle (load <= 0) is 0. Anything that cannot be a fraction (max_load <= 0, NaN, an
    overflowing quotient) counts as fully loaded: a number an agent chose can never make a
    cache look better than its honest neighbours, nor make a cost NaN.
    """
    if load <= 0:
        return 0.0
    if not max_load > 0:
        return LOAD_FRACTION_CAP
    ratio = load / max_load
    return ratio if ratio < LOAD_FRACTION_CAP else LOAD_FRACTION_CAP  # NaN and inf land on the cap


def _address_hash(address: Optional[str]) -> int:
    # 0 stands for "no address"; a real hash of 0 only costs an exact string comparison.
    return hash(address) if address else 0


class Columns:
    """What ranking needs of each entry, as numpy arrays with one row per entry.

    Ranking 100,000 caches in a few milliseconds needs vector arithmetic over contiguous
    arrays; reading the numbers out of 100,000 Python objects alone takes longer than that.
    ``ratio`` is ``load_fraction(load, max_load)``; ``pub``/``ext`` are hashes of public_ip and
    external_ip, so a same-address search is one vector comparison plus an exact check.
    """

    __slots__ = ("x", "y", "z", "placed", "ratio", "verified", "upstream", "pub", "ext", "last_active", "created")
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    placed: np.ndarray
    ratio: np.ndarray
    verified: np.ndarray
    upstream: np.ndarray
    pub: np.ndarray
    ext: np.ndarray
    last_active: np.ndarray
    created: np.ndarray
    _DTYPES = {"x": np.float64, "y": np.float64, "z": np.float64, "placed": np.bool_,
               "ratio": np.float64, "verified": np.bool_, "upstream": np.int8, "pub": np.int64,
               "ext": np.int64, "last_active": np.float64, "created": np.float64}

    def __init__(self, capacity: int = 0, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        for name, dtype in self._DTYPES.items():
            setattr(self, name, arrays[name] if arrays is not None else np.zeros(capacity, dtype))

    @classmethod
    def from_entries(cls, entries: Sequence[CacheEntry]) -> "Columns":
        cols = cls(len(entries))
        for i, entry in enumerate(entries):
            cols.set_row(i, entry)
        return cols

    def __len__(self) -> int:
        return len(self.x)

    def set_row(self, i: int, entry: CacheEntry, located: bool = True) -> None:
        """Write ``entry`` into row ``i``; ``located=False`` skips the unchanged unit vector."""
        hb = entry.hb
        if located:
            unit = entry.unit
            if unit is None:
                self.placed[i] = False
                self.x[i] = self.y[i] = self.z[i] = 0.0
            else:
                self.placed[i] = True
                self.x[i], self.y[i], self.z[i] = unit
            self.pub[i] = _address_hash(hb.public_ip)
            self.ext[i] = _address_hash(hb.external_ip)
        self.set_reading(i, entry)
        self.verified[i] = entry.is_verified
        self.upstream[i] = UPSTREAM_CODES.get(hb.upstream, OTHER_UPSTREAM)
        self.created[i] = entry.created

    def set_reading(self, i: int, entry: CacheEntry) -> None:
        """Write what every heartbeat changes, its load and when it was heard, into row ``i``."""
        self.ratio[i] = load_fraction(entry.hb.load, entry.hb.max_load)
        self.last_active[i] = entry.last_active

    def resized(self, capacity: int) -> "Columns":
        """A copy with room for ``capacity`` rows (rows beyond the old length are zero)."""
        out = Columns(capacity)
        n = min(capacity, len(self))
        for name in self._DTYPES:
            getattr(out, name)[:n] = getattr(self, name)[:n]
        return out

    def head_view(self, n: int) -> "Columns":
        """The first ``n`` rows, sharing memory with this block (no copy)."""
        if n == len(self):
            return self
        return Columns(arrays={name: getattr(self, name)[:n] for name in self._DTYPES})

    def head(self, n: int) -> "Columns":
        """An independent copy of the first ``n`` rows."""
        return Columns(arrays={name: getattr(self, name)[:n].copy() for name in self._DTYPES})

    def compacted(self, keep: np.ndarray, capacity: int) -> "Columns":
        """The rows where ``keep`` is true, in order, in a new block of ``capacity`` rows."""
        out = Columns(capacity)
        n = int(keep.sum())
        for name in self._DTYPES:
            getattr(out, name)[:n] = getattr(self, name)[:len(keep)][keep]
        return out


@dataclasses.dataclass(frozen=True)
class LiveView:
    """What CacheTable.read hands a reader: the table's own list and arrays, not copies.

    Rows ``0 .. size-1`` are the table's; a writer may change any of them meanwhile (read()
    notices which). ``sphere`` indexes rows ``0 .. sphere.size-1`` by place, except ``extra``
    rows, which have moved since it was built.
    """

    rows: Sequence[CacheEntry]
    cols: Columns
    size: int
    sphere: Optional[SphereIndex]
    extra: np.ndarray


def in_thread(job: Callable[[], None]) -> None:
    """Run ``job`` in a daemon thread: how a table builds its spatial index off the request path."""
    threading.Thread(target=job, name="shoal-sphere-index", daemon=True).start()


class CacheTable:
    """Thread-safe map of uuid to CacheEntry; readers work on immutable snapshots or on live columns.

    Entries live in a list (row order = insertion order, kept on removal) with a parallel
    block of numpy ``Columns`` updated in place. /nearest reads the live block without copying
    it (``read``): every row write is noted in a journal, and a reader re-checks, under the
    lock, the rows written while it computed. A SphereIndex over the unit vectors lets ranking
    skip caches too far away to matter; it is rebuilt in the background (``schedule``) once
    enough caches have arrived or moved since the last one, or after rows were removed.
    """

    JOURNAL = 1 << 16   # row writes remembered; a reader slower than this many writes starts again

    def __init__(self, schedule: Callable[[Callable[[], None]], None] = in_thread, index_min: int = 4096,
                 per_cell: int = 64) -> None:
        self._lock = threading.Lock()
        self._schedule, self._index_min, self._per_cell = schedule, index_min, per_cell
        self._journal = np.zeros(self.JOURNAL, dtype=np.int64)
        self._jlen = 0
        self._jgen = 0          # bumped when the journal starts over
        self._sgen = 0          # bumped when rows are renumbered (removal)
        self._sphere: Optional[SphereIndex] = None
        self._moved: List[int] = []   # rows the sphere holds whose unit vector changed since
        self._building = False
        self._next_quiet_build = 0.0  # monotonic time before which readers ask for no rebuild
        self._rows: List[CacheEntry] = []
        self._slot: Dict[str, int] = {}
        self._cols = Columns(64)
        self._version = 0
        self._snapshot: Tuple[int, Tuple[CacheEntry, ...]] = (0, ())
        self._view: Tuple[int, Tuple[CacheEntry, ...], Columns] = (0, (), Columns(0))
        # Equal locations are shared between entries: thousands of caches sit in one city.
        self._places: "weakref.WeakValueDictionary[Location, Location]" = weakref.WeakValueDictionary()
        # Per identity: how many uuids it holds; per host name: how many authenticated entries use it.
        self._owned: Counter[str] = collections.Counter()
        self._auth_hosts: Counter[str] = collections.Counter()
        self._unauth_hosts: Counter[str] = collections.Counter()

    @property
    def version(self) -> int:
        """A number that changes whenever the table does (for caching derived answers)."""
        return self._version

    def upsert(self, hb: Heartbeat, now: float, locate: Locate, max_uuids: Optional[int] = None) -> CacheEntry:
        """Add or refresh the cache ``hb`` describes; GeoIP runs only for a new address.

        Raises InvalidHeartbeat: 'owner_mismatch' when another AMQP user owns the uuid,
        'too_many_uuids' when a new uuid would give its identity more than ``max_uuids``,
        'hostname_taken' when an unauthenticated heartbeat names a host an authenticated entry
        holds. An authenticated heartbeat takes over unauthenticated entries of its host name.
        """
        with self._lock:
            i = self._slot.get(hb.uuid)
            old = self._rows[i] if i is not None else None
            known = old is not None and old.hb.address == hb.address
            if known:
                # Nearly every heartbeat: a known cache at its known address, so no GeoIP and one lock.
                assert old is not None
                _check_owner(old, hb)
                entry, build = self._store(i, old, hb, now, old.location, max_uuids)
        if known:
            if build:
                self._schedule(self._build_index)
            return entry
        _check_owner(old, hb)
        location = locate(hb.address)   # outside the lock: readers never wait for GeoIP
        with self._lock:
            location = self._intern(location)
            i = self._slot.get(hb.uuid)
            old = self._rows[i] if i is not None else None
            _check_owner(old, hb)
            entry, build = self._store(i, old, hb, now, location, max_uuids)
        if build:
            self._schedule(self._build_index)
        return entry

    def refresh(self, previous: Heartbeat, hb: Heartbeat, now: float) -> Optional[CacheEntry]:
        """Store ``hb`` -- ``previous`` with another load and timestamp -- if the table still holds
        ``previous`` for the same identity; else None, and ``upsert`` decides. What upsert would
        do then, without its checks: nothing they look at differs from what ``previous`` passed."""
        with self._lock:
            i = self._slot.get(hb.uuid)
            if i is None:
                return None
            old = self._rows[i]
            if (old.hb is not previous or old.owner != hb.user_id or hb.user_id != previous.user_id
                    or (not hb.authenticated and hb.hostname in self._auth_hosts)):
                return None
            entry = _refreshed_entry(old, hb, now, old.location)
            self._rows[i] = entry
            # Flags, upstream and creation time are previous's, which the row holds already.
            self._cols.set_reading(i, entry)
            self._note(i)
            self._version += 1
            build = self._sphere is None and self._wants_index()
        if build:
            self._schedule(self._build_index)
        return entry

    def _store(self, i: Optional[int], old: Optional[CacheEntry], hb: Heartbeat, now: float,
               location: Optional[Location], max_uuids: Optional[int]) -> Tuple[CacheEntry, bool]:
        # With the lock held: the rest of upsert once GeoIP has answered; also whether to rebuild the index.
        self._check_place(old, hb, max_uuids)
        if hb.authenticated and hb.hostname in self._unauth_hosts and hb.hostname not in self._auth_hosts:
            self._evict_squatters(hb)
            i = self._slot.get(hb.uuid)
        if old is None or i is None:
            entry = CacheEntry(hb, now, now, location, None, hb.user_id)
            i = self._append(entry)  # may replace self._cols with a larger block
            self._write(i, entry)
            located = True
        else:
            entry = _refreshed_entry(old, hb, now, location)
            if (old.hb.hostname, old.hb.authenticated, old.owner) != (hb.hostname, hb.authenticated, entry.owner):
                self._unindex(old)
                self._index(entry)
            self._rows[i] = entry
            located = (location is not old.location or hb.public_ip != old.hb.public_ip
                       or hb.external_ip != old.hb.external_ip)
            self._write(i, entry, located)
        self._version += 1
        # A refresh in place neither adds rows nor moves one: an index it had is no staler than before.
        return entry, (located or self._sphere is None) and self._wants_index()

    def relocate(self, locate: Locate) -> int:
        """Place every cache again (a new GeoIP database appeared); return how many moved."""
        places = {e.address: locate(e.address) for e in self.snapshot()}  # GeoIP outside the lock
        moved = 0
        with self._lock:
            for i, old in enumerate(self._rows):
                if old.address not in places:
                    continue  # arrived meanwhile, located by its own upsert
                location = self._intern(places[old.address])
                if location != old.location:
                    entry = dataclasses.replace(old, location=location)
                    self._rows[i] = entry
                    self._write(i, entry)
                    moved += 1
            if moved:
                self._version += 1
            build = self._wants_index()
        if build:
            self._schedule(self._build_index)
        return moved

    def expire(self, now: float, max_age: float, hold: Optional[float] = None) -> List[str]:
        """Remove caches silent for more than ``max_age`` seconds; return their uuids.

        With ``hold`` (a mass silence is held), established caches -- heard over at least
        ``max_age`` -- go only once silent for ``hold`` seconds; see ``expiring``.
        """
        with self._lock:
            n = len(self._rows)
            last = self._cols.last_active[:n]
            silent = expiring(now - last, last - self._cols.created[:n], max_age, hold)
            if not silent.any():
                return []
            gone = [self._rows[i].uuid for i in np.flatnonzero(silent)]
            self._remove(~silent)
            build = self._wants_index()
        if build:
            self._schedule(self._build_index)
        return gone

    def silence(self, now: float) -> Tuple[np.ndarray, np.ndarray]:
        """Per cache: seconds since its last heartbeat, and seconds from its first to its last one (copies)."""
        with self._lock:
            n = len(self._rows)
            last = self._cols.last_active[:n]
            return now - last, last - self._cols.created[:n]

    def set_verified(self, uuid: str, verified: bool) -> None:
        """Record the result of a verification run, if the cache is still there."""
        with self._lock:
            i = self._slot.get(uuid)
            if i is not None and self._rows[i].verified != verified:
                entry = dataclasses.replace(self._rows[i], verified=verified)
                self._rows[i] = entry
                self._write(i, entry, located=False)
                self._version += 1

    def discard(self, keep: Callable[[CacheEntry], bool]) -> List[str]:
        """Remove the entries ``keep`` refuses (e.g. after the grants changed); return their uuids."""
        with self._lock:
            mask = np.fromiter((keep(e) for e in self._rows), dtype=bool, count=len(self._rows))
            if mask.all():
                return []
            gone = [self._rows[i].uuid for i in np.flatnonzero(~mask)]
            self._remove(mask)
            build = self._wants_index()
        if build:
            self._schedule(self._build_index)
        return gone

    def owned(self, user: str) -> int:
        """How many uuids ``user`` holds."""
        with self._lock:
            return self._owned.get(user, 0)

    def load(self, entries: Iterable[CacheEntry],
             max_uuids: Optional[Callable[[Heartbeat], Optional[int]]] = None) -> None:
        """Insert entries restored from a snapshot file (existing uuids win, limits as for heartbeats)."""
        with self._lock:
            for entry in entries:
                limit = max_uuids(entry.hb) if max_uuids is not None else None
                try:
                    self._check_place(None, entry.hb, limit)
                except InvalidHeartbeat:
                    continue
                if entry.uuid not in self._slot:
                    if entry.location is not None:
                        entry = dataclasses.replace(entry, location=self._intern(entry.location))
                    i = self._append(entry)
                    self._write(i, entry)
            self._version += 1
            build = self._wants_index()
        if build:
            self._schedule(self._build_index)

    def snapshot(self) -> Tuple[CacheEntry, ...]:
        """Return the current entries; the tuple is shared until the table next changes."""
        with self._lock:
            return self._current_entries()

    def columns(self) -> Tuple[Tuple[CacheEntry, ...], Columns]:
        """Return the snapshot and its Columns (row i describes entry i); shared until a change."""
        with self._lock:
            version, entries, cols = self._view
            if version != self._version:
                entries = self._current_entries()
                cols = self._cols.head(len(entries))
                self._view = (self._version, entries, cols)
            return entries, cols

    def read(self, choose: Callable[[LiveView], Tuple[np.ndarray, np.ndarray]]) -> List[CacheEntry]:
        """The current entries of the rows ``choose`` picks, plus of every row written meanwhile.

        ``choose(view)`` runs without the lock on the live arrays and returns (picked rows,
        rows whose values decided the pick). A row written while it ran is handed back with
        its current entry for the caller to judge exactly; if such a row also decided the pick
        (its values may have been half-written), or rows were renumbered, or the journal
        started over, ``choose`` runs again under the lock, where nothing can change. The
        result is therefore what ``choose`` would pick from the table at the moment read()
        returns, plus rows the caller re-checks: never a removed cache, never a torn row.
        """
        with self._lock:
            view = self._live()
            started = (self._sgen, self._jgen, self._jlen)
            build = self._wants_index(reader=True)
        if build:
            self._schedule(self._build_index)
        picked, touched = choose(view)
        with self._lock:
            if started[:2] == (self._sgen, self._jgen):
                written = self._journal[started[2]:self._jlen]
                if not len(written):
                    return [self._rows[i] for i in picked.tolist()]
                if not np.intersect1d(written, touched).size:
                    return [self._rows[i] for i in np.union1d(picked, written).tolist()]
            picked, _ = choose(self._live())
            return [self._rows[i] for i in picked.tolist()]

    def index_stats(self) -> Dict[str, int]:
        """The spatial index's size: rows covered, cells, bytes; rows scanned beside it."""
        with self._lock:
            sphere, size, moved = self._sphere, len(self._rows), len(self._moved)
        if sphere is None:
            return {"rows": 0, "cells": 0, "bytes": 0, "unindexed": size}
        return {"rows": sphere.size, "cells": len(sphere), "bytes": sphere.nbytes(),
                "unindexed": size - sphere.size + moved}

    def get(self, uuid: str) -> Optional[CacheEntry]:
        with self._lock:
            return self._get(uuid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def _build_index(self) -> None:
        """Index the unit vectors of the current rows (outside the lock), then install it if still valid."""
        with self._lock:
            if self._building:
                return
            self._building = True
            cols, size, sgen, moved_from = self._cols, len(self._rows), self._sgen, len(self._moved)
        began = time.monotonic()
        try:
            # One copy of the positions: a row moved while we copy is in self._moved[moved_from:].
            x, y, z, placed = (np.array(getattr(cols, name)[:size]) for name in ("x", "y", "z", "placed"))
            sphere = SphereIndex.build(x, y, z, placed, self._per_cell)
        except BaseException:
            with self._lock:
                self._building = False
            raise
        with self._lock:
            self._building = False
            # Readers' rebuilds (below the writers' threshold) take at most ~5 % of a core.
            self._next_quiet_build = time.monotonic() + max(2.0, 20 * (time.monotonic() - began))
            if sgen == self._sgen:   # else rows were renumbered meanwhile: this index is void
                self._sphere, self._moved = sphere, self._moved[moved_from:]
            build = self._wants_index()
        if build:
            self._schedule(self._build_index)

    # The helpers below run with the lock held.
    def _live(self) -> LiveView:
        sphere = self._sphere
        extra = np.asarray(self._moved, dtype=np.int64) if sphere is not None and self._moved else None
        return LiveView(self._rows, self._cols, len(self._rows), sphere,
                        extra if extra is not None else np.zeros(0, dtype=np.int64))

    def _write(self, i: int, entry: CacheEntry, located: bool = True) -> None:
        """Write row ``i`` and journal it."""
        self._cols.set_row(i, entry, located)
        self._note(i)
        if located and self._sphere is not None and i < self._sphere.size:
            self._moved.append(i)

    def _note(self, i: int) -> None:
        """Journal row ``i`` as written, so that readers of the live arrays re-check it."""
        if self._jlen == self.JOURNAL:
            self._jgen += 1
            self._jlen = 0
        self._journal[self._jlen] = i
        self._jlen += 1

    def _wants_index(self, reader: bool = False) -> bool:
        """Whether the spatial index is missing or stale enough to rebuild.

        Writers ask after 1/32 of the table arrived or moved (a fill rebuilds ~32 times per
        doubling); readers, who scan the unindexed rows on every request, after 128 once the
        last build is a while ago, so that a quiet table ends up fully indexed.
        """
        size = len(self._rows)
        if self._building or size < self._index_min:
            return False
        sphere = self._sphere
        if sphere is None:
            return True
        stale = size - sphere.size + len(self._moved)
        if reader:
            return stale > 128 and time.monotonic() >= self._next_quiet_build
        return stale > max(512, sphere.size // 32)

    def _get(self, uuid: str) -> Optional[CacheEntry]:
        i = self._slot.get(uuid)
        return self._rows[i] if i is not None else None

    def _current_entries(self) -> Tuple[CacheEntry, ...]:
        version, entries = self._snapshot
        if version != self._version:
            entries = tuple(self._rows)
            self._snapshot = (self._version, entries)
        return entries

    def _append(self, entry: CacheEntry) -> int:
        i = len(self._rows)
        if i == len(self._cols):
            self._cols = self._cols.resized(2 * i)
        self._rows.append(entry)
        self._slot[entry.uuid] = i
        self._index(entry)
        return i

    def _index(self, entry: CacheEntry) -> None:
        if entry.hb.authenticated:
            self._auth_hosts[entry.hb.hostname] += 1
            if entry.owner:
                self._owned[entry.owner] += 1
        else:
            self._unauth_hosts[entry.hb.hostname] += 1

    def _unindex(self, entry: CacheEntry) -> None:
        if entry.hb.authenticated:
            _decrement(self._auth_hosts, entry.hb.hostname)
            if entry.owner:
                _decrement(self._owned, entry.owner)
        else:
            _decrement(self._unauth_hosts, entry.hb.hostname)

    def _check_place(self, old: Optional[CacheEntry], hb: Heartbeat, max_uuids: Optional[int]) -> None:
        if not hb.authenticated:
            if hb.hostname in self._auth_hosts:
                raise InvalidHeartbeat("hostname_taken", f"{hb.hostname} is held by an authenticated agent")
            return
        if max_uuids is not None and hb.user_id and (old is None or not old.hb.authenticated) \
                and self._owned.get(hb.user_id, 0) >= max_uuids:
            raise InvalidHeartbeat("too_many_uuids", f"user {hb.user_id} already holds {max_uuids} uuid(s)")

    def _evict_squatters(self, hb: Heartbeat) -> None:
        # The first authenticated entry of a host name: unauthenticated entries of it go.
        keep = np.fromiter((e.hb.authenticated or e.hb.hostname != hb.hostname or e.uuid == hb.uuid
                            for e in self._rows), dtype=bool, count=len(self._rows))
        if not keep.all():
            self._remove(keep)

    def _remove(self, keep: np.ndarray) -> None:
        self._rows = [e for e, k in zip(self._rows, keep.tolist()) if k]
        self._slot = {e.uuid: i for i, e in enumerate(self._rows)}
        self._owned.clear()
        self._auth_hosts.clear()
        self._unauth_hosts.clear()
        for e in self._rows:
            self._index(e)
        capacity = len(self._cols)
        if len(self._rows) * 4 < capacity:
            capacity = max(64, capacity // 2)
        self._cols = self._cols.compacted(keep, capacity)
        self._version += 1
        self._sgen += 1
        self._sphere, self._moved = None, []

    def _intern(self, location: Optional[Location]) -> Optional[Location]:
        if location is None:
            return None
        return self._places.setdefault(location, location)


def expiring(silent_for: np.ndarray, heard_for: np.ndarray, max_age: float, hold: Optional[float]) -> np.ndarray:
    """Which caches expire: silent for more than ``max_age``; with ``hold``, an established cache
    (heard for ``max_age`` or longer) only once silent for more than ``hold`` (never less than
    ``max_age``). A uuid heard only briefly (a one-shot or restarted identity) is never held."""
    if hold is None:
        return silent_for > max_age
    established = heard_for >= max_age
    return (silent_for > max(hold, max_age)) | ((silent_for > max_age) & ~established)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def _refreshed_entry(old: CacheEntry, hb: Heartbeat, now: float, location: Optional[Location]) -> CacheEntry:
    """``old`` heard again as ``hb`` at ``now``: built as a copy of its fields, a third of the frozen
    dataclass's ``__init__`` on the path nearly every heartbeat takes."""
    entry = object.__new__(CacheEntry)
    fields = entry.__dict__
    fields.update(old.__dict__)
    fields["hb"], fields["last_active"], fields["location"] = hb, now, location
    if old.owner is None:
        fields["owner"] = hb.user_id
    return entry


def _check_owner(old: Optional[CacheEntry], hb: Heartbeat) -> None:
    if old is not None and old.owner is not None and old.owner != hb.user_id:
        raise InvalidHeartbeat("owner_mismatch", f"uuid {hb.uuid} belongs to {old.owner!r}, not {hb.user_id!r}")
