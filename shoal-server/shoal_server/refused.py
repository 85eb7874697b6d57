"""Senders whose heartbeats were refused, newest first and bounded, for the status page and /healthz.

A cache that is silently missing is the hardest fault to find (a clock 200 s ahead, a host
name the validator refuses, a broker identity that is not allowed ...). Each refusal is
recorded here under its sender; only the newest ``capacity`` senders are kept, so a flood of
made-up uuids costs a fixed amount of memory. Nothing here is trusted: uuid and host name are
only kept when they pass the validator's rules, the broker user is cut to 128 characters, and
the status page escapes all of it.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Dict, List, Optional, Tuple

from .heartbeat import Sender

DEFAULT_CAPACITY = 1000
MAX_USER_CHARS = 128
MAX_DETAIL_CHARS = 200


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The latest refusal of one sender, and how often it was refused since it was first seen."""

    hostname: Optional[str]
    uuid: Optional[str]
    user_id: Optional[str]
    reason: str
    detail: str
    offset: Optional[float]    # stale/future: agent clock minus server clock, seconds
    first_seen: float
    last_seen: float
    count: int

    def as_json(self) -> Dict[str, object]:
        return {"hostname": self.hostname, "uuid": self.uuid, "user_id": self.user_id, "reason": self.reason,
                "detail": self.detail, "offset_seconds": None if self.offset is None else round(self.offset, 1),
                "last_seen": self.last_seen, "count": self.count}


def sender_key(sender: Sender, user_id: Optional[str]) -> Tuple[str, str]:
    """Who a refusal is filed under: the uuid if readable, else the host name, else the broker user."""
    if sender.uuid:
        return ("uuid", sender.uuid)
    if sender.hostname:
        return ("hostname", sender.hostname)
    return ("user", user_id or "")


class RefusedSenders:
    """A thread-safe LRU of the newest ``capacity`` refused senders."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._items: "collections.OrderedDict[Tuple[str, str], Refusal]" = collections.OrderedDict()

    def record(self, sender: Sender, user_id: Optional[str], reason: str, detail: str,
               offset: Optional[float], now: float) -> None:
        user = (user_id or "")[:MAX_USER_CHARS] or None
        key = sender_key(sender, user)
        with self._lock:
            old = self._items.pop(key, None)
            self._items[key] = Refusal(
                hostname=sender.hostname or (old.hostname if old else None), uuid=sender.uuid, user_id=user,
                reason=reason, detail=detail[:MAX_DETAIL_CHARS], offset=offset,
                first_seen=old.first_seen if old else now, last_seen=now, count=(old.count if old else 0) + 1)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def forget(self, sender: Sender, user_id: Optional[str]) -> None:
        """Drop a sender once a heartbeat of it is accepted: the page lists current trouble only."""
        key = sender_key(sender, (user_id or "")[:MAX_USER_CHARS] or None)
        with self._lock:
            self._items.pop(key, None)

    def newest(self, limit: Optional[int] = None) -> List[Refusal]:
        """The refusals, most recent first."""
        with self._lock:
            items = list(self._items.values())
        items.reverse()
        return items if limit is None else items[:limit]

    def summary(self, now: float, window: float) -> Dict[str, object]:
        """For /healthz: how many senders are refused, by reason, and how many within ``window`` s."""
        items = self.newest()
        by_reason: Dict[str, int] = collections.Counter(r.reason for r in items)
        recent = sum(1 for r in items if now - r.last_seen <= window)
        return {"senders": len(items), "recent_senders": recent, "window_seconds": window,
                "by_reason": dict(sorted(by_reason.items()))}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def holds_any(self) -> bool:
        """Whether any sender is listed, without the lock: for the consumer, the only writer, a
        cheap check before ``forget`` on every accepted heartbeat (one atomic read under the GIL)."""
        return bool(self._items)
