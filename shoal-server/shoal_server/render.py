"""Turn ranked caches into the bytes clients read: JSON in the upstream shape and PAC files. Pure."""
from __future__ import annotations

import itertools
import json
import operator
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .ranking import Ranked
from .table import CacheEntry

FIELD_ORDER = ("hostname", "squid_port", "public_ip", "private_ip", "external_ip", "load", "max_load",
               "distance", "last_active", "created", "verified", "global_access", "local", "upstream",
               "cache_type", "uuid", "authenticated")


def cache_record(entry: CacheEntry, distance_km: Optional[float] = None, verification: bool = False,
                 client_ip: Optional[str] = None) -> Dict[str, Any]:
    """One cache as every JSON endpoint shows it (upstream HEAD's field names and meanings).

    ``public_ip`` is the agent's, else its ``external_ip`` (agents behind NAT send only that),
    as upstream HEAD fills it. ``global_access``: any client may be given the cache (the
    server's verification passed, or verification is off). ``local``: true when the client
    (``client_ip``, on /nearest*) shares the cache's public address, i.e. sits behind the same
    NAT, so shoal-client 1.0.x tries the cache's private_ip first; otherwise null, never
    false: upstream's client reads the value with a regex and takes the text "false" as true.
    """
    hb = entry.hb
    shared = client_ip is not None and client_ip in (hb.public_ip, hb.external_ip)
    record: Dict[str, Any] = {
        "hostname": hb.hostname,
        "squid_port": hb.squid_port,
        "public_ip": hb.public_ip or hb.external_ip,
        "private_ip": hb.private_ip,
        "external_ip": hb.external_ip,
        "load": hb.load,
        "max_load": hb.max_load,
        "distance": None if distance_km is None else round(distance_km, 1),
        "last_active": entry.last_active,
        "created": entry.created,
        "verified": entry.is_verified,
        "global_access": entry.is_verified or not verification,
        "local": True if shared else None,
        "upstream": hb.upstream,
        "cache_type": hb.cache_type,
        "uuid": hb.uuid,
        # False for a heartbeat no broker identity vouches for (legacy agents, docs/security.md).
        "authenticated": hb.authenticated,
        "geo_data": entry.location.as_json() if entry.location else None,
    }
    return record


def to_json(records: Iterable[Dict[str, Any]]) -> str:
    """Serialise records as ``{"0": {...}, "1": ...}`` with the standard separators.

    The key/separator layout matters: the 2014 client extracts ``"name": value`` pairs with
    regular expressions, so ``": "`` and ``", "`` must stay and nothing may be indented.
    """
    body = {str(i): record for i, record in enumerate(records)}
    return json.dumps(body, separators=(", ", ": "), allow_nan=False)


class AllBody:
    """``/all``'s body, rendered from one JSON fragment per entry, kept while the entry lives.

    Entries are immutable and a heartbeat replaces one, so after a change only the new entries
    are encoded. When the list kept its length (heartbeats of known caches: the hostname order
    does not move) the previous body's parts are patched at the positions that changed, found
    by one C-speed comparison; otherwise fragments are looked up by entry. The rest is one join.
    The body is kept as bytes (JSON here is ASCII), so a request for a megabytes-long /all does
    not encode it again; they are exactly ``to_json`` of the same records, encoded
    (tests/web/test_statuspage_cache.py).
    """

    # Above this share of changed positions the parts are rebuilt by entry instead of patched.
    PATCH_SHARE = 8

    def __init__(self, verification: bool) -> None:
        self.verification = verification
        # The last list rendered and its body's parts (keys and fragments interleaved); the list
        # keeps the entries alive, so ids taken from it are those very entries. One tuple:
        # replaced at once, so a concurrent render sees a consistent pair.
        self._last: Tuple[Sequence[CacheEntry], List[bytes]] = ((), [b"{}"])
        self._keys: List[bytes] = []

    def fragment(self, entry: CacheEntry) -> bytes:
        return json.dumps(cache_record(entry, verification=self.verification),
                          separators=(", ", ": "), allow_nan=False).encode("ascii")

    def render(self, ordered: Sequence[CacheEntry]) -> bytes:
        """The body listing ``ordered`` as ``{"0": {...}, ...}``."""
        last, last_parts = self._last
        n = len(ordered)
        if n == 0:
            parts = [b"{}"]
        elif n == len(last):
            changed = list(itertools.compress(range(n), map(operator.is_not, ordered, last)))
            if len(changed) * self.PATCH_SHARE > n:
                parts = self._parts(ordered, last, last_parts)
            else:
                parts = last_parts[:]   # the previous body may still be in use by another thread
                for i in changed:
                    parts[2 * i + 1] = self.fragment(ordered[i])
        else:
            parts = self._parts(ordered, last, last_parts)
        self._last = (ordered, parts)
        return b"".join(parts)

    def _parts(self, ordered: Sequence[CacheEntry], last: Sequence[CacheEntry],
               last_parts: List[bytes]) -> List[bytes]:
        old = dict(zip(map(id, last), last_parts[1::2])) if last else {}
        fragments: List[Optional[bytes]] = list(map(old.get, map(id, ordered)))
        i = 0
        while True:   # only the new entries: list.index scans in C
            try:
                i = fragments.index(None, i)
            except ValueError:
                break
            fragments[i] = self.fragment(ordered[i])
            i += 1
        n = len(ordered)
        keys = self._keys   # '{"0": ', ', "1": ', ...: the separators go with the keys
        if len(keys) < n:
            keys = self._keys = [b'{"0": '] + [b', "%d": ' % i for i in range(1, max(n, 2 * len(keys)))]
        parts: List[Optional[bytes]] = [None] * (2 * n + 1)
        parts[0:2 * n:2] = keys[:n]        # slice assignments: C-speed
        parts[1:2 * n:2] = fragments
        parts[2 * n] = b"}"
        return parts  # type: ignore[return-value]


def ranked_json(ranked: Sequence[Ranked], verification: bool = False, client_ip: Optional[str] = None,
                groups: Optional[Sequence[int]] = None) -> str:
    """/nearest: the ranked caches; with ``groups``, each record's ``group`` number (equal numbers
    mark equally good caches, which shoal-client joins with ``|``; readers of upstream's shape
    ignore the extra key)."""
    records = []
    for i, r in enumerate(ranked):
        record = cache_record(r.entry, r.distance_km, verification, client_ip)
        if groups is not None:
            record["group"] = groups[i]
        records.append(record)
    return to_json(records)


def hostport(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals bracketed as URLs and PAC files need."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def js_string(text: str) -> str:
    """A JavaScript string literal safe inside a PAC file or an HTML <script>."""
    quoted = json.dumps(text, ensure_ascii=True)
    return quoted.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

