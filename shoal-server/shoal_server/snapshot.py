"""Warm restart: save the cache table to ``state_dir`` and read it back when the server starts.

A restarted server would otherwise answer ``/nearest`` with an empty list until every agent has
sent its next heartbeat (up to one interval). The file is JSON, written to a temporary file,
fsynced and renamed over the old one, so a crash mid-write leaves the previous snapshot intact.
Restored heartbeats go through the same validator as AMQP messages (the file is input too), and
anything wrong with the file as a whole (corrupt, foreign, another version) only costs the warm
start: it is ignored with a warning.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .heartbeat import Heartbeat, InvalidHeartbeat, Limits, validate
from .table import CacheEntry, Locate

logger = logging.getLogger(__name__)

FORMAT = "shoal-server-table"
# A snapshot written longer ago than this is ignored (the server was down for over a day: the
# deployment may have changed entirely). Younger ones are used whatever the inactive time.
MAX_DOWNTIME = 86400.0
VERSION = 1
FILENAME = "table.json"

# The heartbeat fields a snapshot keeps, under the names agents send them.
Admit = Optional[Callable[[Heartbeat], None]]   # raises InvalidHeartbeat to refuse

_HB_FIELDS = ("uuid", "hostname", "squid_port", "public_ip", "private_ip", "external_ip", "load", "max_load",
              "timestamp", "verified", "upstream", "cache_type", "agent_version")


class SnapshotError(ValueError):
    """The file as a whole cannot be used (corrupt, not ours, or another format version)."""


def snapshot_path(state_dir: str) -> str:
    return os.path.join(state_dir, FILENAME)


def encode(entries: Iterable[CacheEntry], now: float, exchange: str) -> bytes:
    """Serialise table entries; ``exchange`` marks which Shoal deployment the table belongs to."""
    records = []
    for entry in entries:
        hb = entry.hb
        records.append({
            "heartbeat": {name: getattr(hb, name) for name in _HB_FIELDS},
            "user_id": hb.user_id,
            "created": entry.created,
            "last_active": entry.last_active,
            "verified": entry.verified,
            "owner": entry.owner,
        })
    doc = {"format": FORMAT, "version": VERSION, "written_at": now, "exchange": exchange, "entries": records}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode(data: bytes, now: float, max_age: float, exchange: str, limits: Limits,
           locate: Locate, admit: Admit = None) -> Tuple[List[CacheEntry], int]:
    """Return (entries that were alive when the snapshot was written, number of unusable records).

    An entry counts as alive when it was silent for at most ``max_age`` (the inactive time) at
    the moment the file was written. The server's own downtime is not held against a cache --
    no heartbeat could be heard -- so after a downtime longer than the inactive time the entries
    are still restored and answer (marked stale in /healthz) until fresh heartbeats arrive;
    the purge then drops those not refreshed within an inactive time of the reconnection.
    Raises SnapshotError when the file as a whole must be ignored (also when written more
    than MAX_DOWNTIME ago). Records that fail validation or ``admit`` (the live policy, which
    may have changed since) are skipped and counted; dead ones are dropped silently.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise SnapshotError(f"not a JSON document ({str(err)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError("not a shoal-server table snapshot")
    if doc.get("version") != VERSION:
        raise SnapshotError(f"format version {doc.get('version')!r}, this server reads {VERSION}")
    if doc.get("exchange") != exchange:
        raise SnapshotError(f"written for exchange {doc.get('exchange')!r}, this server uses {exchange!r}")
    records = doc.get("entries")
    if not isinstance(records, list):
        raise SnapshotError("no entry list")
    try:
        written_at = min(_time(doc.get("written_at")), now)
    except ValueError:
        written_at = now   # unknown: judge the entries by today's clock, as if just written
    if now - written_at > MAX_DOWNTIME:
        raise SnapshotError(f"written {now - written_at:.0f} s ago, more than {MAX_DOWNTIME:.0f} s")
    entries: List[CacheEntry] = []
    bad = 0
    for record in records:
        try:
            entry = _entry(record, now, limits, locate, admit)
        except (InvalidHeartbeat, TypeError, ValueError, KeyError):
            bad += 1
            continue
        if written_at - entry.last_active <= max_age:
            entries.append(entry)
    return entries, bad


def _entry(record: Dict[str, Any], now: float, limits: Limits, locate: Locate, admit: Admit) -> CacheEntry:
    if not isinstance(record, dict) or not isinstance(record.get("heartbeat"), dict):
        raise TypeError("record")
    last_active = _time(record["last_active"])
    created = _time(record["created"])
    user_id = record.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise TypeError("user_id")
    # Validated as of its reception, so drift and the age check come out as they did then.
    hb: Heartbeat = validate(record["heartbeat"], last_active, limits, user_id)
    if admit is not None:
        admit(hb)
    owner = record.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise TypeError("owner")
    # The owner is the identity the broker stamped on the heartbeat (after legacy logins are
    # mapped to none); a file whose owner says otherwise was not written by this rule.
    if owner != hb.user_id:
        raise ValueError("owner does not match user_id")
    # A clock that stepped back must not make an entry look younger than now, nor live forever.
    last_active = min(last_active, now)
    # The server's verification result is not taken from the file: the entry is unchecked (None)
    # until the verifier has fetched through it again; the agent's own claim was re-derived by
    # validate() under the current trust_verified_claim.
    return CacheEntry(hb=hb, created=min(created, last_active), last_active=last_active,
                      location=locate(hb.address), verified=None, owner=owner)


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError("bad time")
    return float(value)


def write_snapshot(path: str, data: bytes) -> None:
    """Replace ``path`` atomically: temp file in the same directory, fsync, rename, fsync the directory."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".table-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot(path: str, now: float, max_age: float, exchange: str, limits: Limits,
                  locate: Locate, admit: Admit = None) -> List[CacheEntry]:
    """Load ``path`` if it is a usable snapshot; otherwise log why and return nothing."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        logger.info("no table snapshot at %s; starting with an empty table", path)
        return []
    except OSError as err:
        logger.warning("cannot read table snapshot %s (%s); starting with an empty table", path, err)
        return []
    try:
        entries, bad = decode(data, now, max_age, exchange, limits, locate, admit)
    except SnapshotError as err:
        logger.warning("ignoring table snapshot %s: %s", path, err)
        return []
    if bad:
        logger.warning("table snapshot %s: skipped %d invalid or refused record(s)", path, bad)
    old = sum(1 for entry in entries if now - entry.last_active > max_age)
    if old:
        logger.warning("restored %d cache(s) from %s; %d not heard for longer than the inactive time (the "
                       "server was down) are served as stale until fresh heartbeats arrive", len(entries), path, old)
    else:
        logger.info("restored %d cache(s) from %s", len(entries), path)
    return entries


class Snapshots:
    """Where and how this server saves its table; ``None`` state_dir means warm restart is off."""

    def __init__(self, state_dir: str, exchange: str, limits: Limits, max_age: float) -> None:
        self.path: Optional[str] = snapshot_path(state_dir) if state_dir else None
        self._state_dir, self._exchange, self._limits, self._max_age = state_dir, exchange, limits, max_age

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def prepare(self) -> bool:
        """Create ``state_dir`` if needed; on failure log it and turn snapshots off (serving matters more)."""
        if self.path is None:
            return False
        try:
            os.makedirs(self._state_dir, mode=0o750, exist_ok=True)
        except OSError as err:
            logger.error("state_dir %s unusable (%s); table snapshots disabled", self._state_dir, err)
            self.path = None
            return False
        return True

    def load(self, now: float, locate: Locate, admit: Admit = None) -> List[CacheEntry]:
        if self.path is None:
            return []
        return read_snapshot(self.path, now, self._max_age, self._exchange, self._limits, locate, admit)

    def save(self, entries: Iterable[CacheEntry], now: float) -> bool:
        """Write the table; failures are logged, never raised (the next attempt may succeed)."""
        if self.path is None:
            return False
        entries = tuple(entries)
        try:
            write_snapshot(self.path, encode(entries, now, self._exchange))
        except (OSError, ValueError) as err:
            logger.error("cannot write table snapshot %s: %s", self.path, err)
            return False
        logger.debug("saved %d cache(s) to %s", len(entries), self.path)
        return True
