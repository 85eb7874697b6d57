"""Build the heartbeat message; pure, so the contract test can check it against the server's validator.

The field names are those of the 2013-2024 protocol (``squid_port``, ``public_ip``, ...), so
older servers keep understanding new agents.
"""
from __future__ import annotations

import json
from typing import Any, Dict

from . import __version__
from .addresses import Addresses


def build_heartbeat(uuid: str, hostname: str, squid_port: int, addresses: Addresses, load: float,
                    max_load: float, timestamp: float, upstream: str = "both", cache_type: str = "squid",
                    agent_version: str = __version__) -> Dict[str, Any]:
    """Return the heartbeat as a dict; absent addresses are left out rather than sent as null.

    The port goes out under both names: 2014-era servers read ``squid_port``, later ones
    ``cache_port``; the current server accepts either and requires them to agree.
    """
    data: Dict[str, Any] = {
        "uuid": uuid,
        "hostname": hostname,
        "squid_port": int(squid_port),
        "cache_port": int(squid_port),
        "load": round(max(0.0, float(load)), 3),
        "max_load": float(max_load),
        "timestamp": round(float(timestamp), 3),
        "upstream": upstream,
        "cache_type": cache_type,
        "agent_version": agent_version,
    }
    for key in ("public_ip", "private_ip", "external_ip"):
        value = getattr(addresses, key)
        if value:
            data[key] = value
    return data


def encode(data: Dict[str, Any]) -> bytes:
    """The message body: compact JSON, no NaN (the server rejects it anyway)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
