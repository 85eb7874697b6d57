"""Turn ranked caches into the bytes clients read: JSON in the upstream shape and PAC files. Pure."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .ranking import Ranked
from .table import CacheEntry

FIELD_ORDER = ("hostname", "squid_port", "public_ip", "private_ip", "external_ip", "load", "max_load",
               "distance", "last_active", "created", "verified", "upstream", "cache_type", "uuid")


def cache_record(entry: CacheEntry, distance_km: Optional[float] = None) -> Dict[str, Any]:
    """One cache as every JSON endpoint shows it (the 2014-2024 field names)."""
    hb = entry.hb
    record: Dict[str, Any] = {
        "hostname": hb.hostname,
        "squid_port": hb.squid_port,
        "public_ip": hb.public_ip,
        "private_ip": hb.private_ip,
        "external_ip": hb.external_ip,
        "load": hb.load,
        "max_load": hb.max_load,
        "distance": None if distance_km is None else round(distance_km, 1),
        "last_active": entry.last_active,
        "created": entry.created,
        "verified": entry.is_verified,
        "upstream": hb.upstream,
        "cache_type": hb.cache_type,
        "uuid": hb.uuid,
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


def ranked_json(ranked: Sequence[Ranked]) -> str:
    return to_json(cache_record(r.entry, r.distance_km) for r in ranked)


def hostport(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals bracketed as URLs and PAC files need."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def js_string(text: str) -> str:
    """A JavaScript string literal safe inside a PAC file or an HTML <script>."""
    quoted = json.dumps(text, ensure_ascii=True)
    return quoted.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def pac_proxies(ranked: Sequence[Ranked]) -> List[Tuple[str, int]]:
    return [(r.entry.hb.hostname, r.entry.hb.squid_port) for r in ranked]


def render_pac(proxies: Sequence[Tuple[str, int]]) -> str:
    """A PAC file sending every URL to the given proxies in order, then DIRECT."""
    value = "; ".join([f"PROXY {hostport(host, port)}" for host, port in proxies] + ["DIRECT"])
    return ("function FindProxyForURL(url, host) {\n"
            f"    return {js_string(value)};\n"
            "}\n")
