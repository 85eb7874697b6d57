"""Decode and validate one heartbeat message; pure, no I/O.

Everything that reaches the cache table, the JSON answers, the status page or the PAC file
passes through ``parse_heartbeat`` first, so the rules here are the security boundary for
agent-supplied text: host names are RFC 1123 names or IP literals, numbers are finite.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
from typing import Any, Dict, Mapping, Optional, Union

MAX_BODY_BYTES = 16 * 1024
UPSTREAMS = ("cvmfs", "frontier", "both")
CACHE_TYPES = ("squid", "varnish")

_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z")  # what ipaddress accepts, canonical
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]{0,63}\Z")
_PORT_TEXT_RE = re.compile(r"[0-9]{1,5}\Z")


class InvalidHeartbeat(ValueError):
    """A message that must be dropped; ``reason`` is a short label for metrics and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Server-side policy the validator applies (from the ``[cache]`` section)."""

    default_max_load: float = 122000.0
    max_age: float = 180.0          # older than this never creates or refreshes an entry
    drift_tolerance: float = 60.0   # beyond this the entry is flagged as drifting
    require_user_id: bool = False
    # With server-side verification on, an agent's own "verified": true must not count.
    trust_verified_claim: bool = True


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """A validated heartbeat. ``drift`` is agent clock minus server clock, in seconds."""

    uuid: str
    hostname: str
    squid_port: int
    public_ip: Optional[str]
    private_ip: Optional[str]
    external_ip: Optional[str]
    load: float
    max_load: float
    timestamp: float
    drift: float
    verified: bool
    upstream: str
    cache_type: str
    agent_version: Optional[str]
    user_id: Optional[str]

    @property
    def address(self) -> str:
        """The address clients reach and GeoIP places: ``external_ip`` wins over ``public_ip``."""
        return self.external_ip or self.public_ip or ""

    def drifting(self, tolerance: float) -> bool:
        return abs(self.drift) > tolerance


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def decode(body: bytes) -> Dict[str, Any]:
    """Turn the raw body into a JSON object, or raise InvalidHeartbeat."""
    if not isinstance(body, (bytes, bytearray)):
        raise InvalidHeartbeat("not_bytes", "body is not bytes")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidHeartbeat("too_large", f"{len(body)} bytes > {MAX_BODY_BYTES}")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHeartbeat("not_utf8", "body is not UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise InvalidHeartbeat("not_json", str(err)[:80]) from None
    if not isinstance(data, dict):
        raise InvalidHeartbeat("not_object", f"top level is {type(data).__name__}")
    return data


def is_hostname(name: str) -> bool:
    """True for an RFC 1123 host name (a trailing dot allowed) or an IPv4/IPv6 literal."""
    if not isinstance(name, str) or not name or len(name) > 254:
        return False
    # Only digits-and-dots (IPv4) or a colon (IPv6) can be a literal; skipping the parse
    # attempt for names saves two exceptions per heartbeat.
    if (":" in name or name.replace(".", "").isdigit()) and _ip_or_none(name) is not None:
        return True
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(".".join(labels)) > 253:
        return False
    return all(_LABEL_RE.match(label) for label in labels) and not labels[-1].isdigit()


def _ip_or_none(text: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    # An IPv6 scope ("fe80::1%eth0") may hold any character, ";" and spaces included, which
    # would split a PAC proxy list or CVMFS_HTTP_PROXY; it means nothing off the agent's host.
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _number(data: Mapping[str, Any], key: str, reason: str) -> Optional[float]:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidHeartbeat(reason, f"{key} is not a number")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        raise InvalidHeartbeat(reason, f"{key} is not finite") from None
    if not math.isfinite(value):
        raise InvalidHeartbeat(reason, f"{key} is not finite")
    return value


def _address(data: Mapping[str, Any], key: str) -> Optional[str]:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidHeartbeat("bad_ip", f"{key} is not a string")
    text = value.strip()
    if _IPV4_RE.match(text):
        # Canonical dotted quad: the same answer as ipaddress, at a tenth of the cost.
        first = int(text[:text.index(".")])
        if text == "0.0.0.0" or 224 <= first <= 239:
            raise InvalidHeartbeat("bad_ip", f"{key} is not a usable IP address")
        return text
    addr = _ip_or_none(text)
    if addr is None or addr.is_unspecified or addr.is_multicast:
        raise InvalidHeartbeat("bad_ip", f"{key} is not a usable IP address")
    return str(addr)


def _port(data: Mapping[str, Any]) -> int:
    ports = [data[key] for key in ("squid_port", "cache_port") if data.get(key) is not None]
    if not ports:
        raise InvalidHeartbeat("bad_port", "squid_port/cache_port missing")
    values = set()
    for value in ports:
        if isinstance(value, str) and _PORT_TEXT_RE.match(value.strip()):  # not str.isdigit: "²" is a digit
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise InvalidHeartbeat("bad_port", "port must be an integer 1-65535")
        values.add(value)
    if len(values) > 1:
        raise InvalidHeartbeat("bad_port", "squid_port and cache_port disagree")
    return values.pop()


def _choice(data: Mapping[str, Any], key: str, choices: tuple, default: str) -> str:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidHeartbeat(f"bad_{key}", f"{key} must be one of {', '.join(choices)}")
    return value.lower()


def validate(data: Mapping[str, Any], now: float, limits: Limits, user_id: Optional[str] = None) -> Heartbeat:
    """Check a decoded heartbeat against the protocol and ``limits``; raise InvalidHeartbeat."""
    uuid = data.get("uuid")
    if not isinstance(uuid, str) or not _UUID_RE.match(uuid):
        raise InvalidHeartbeat("bad_uuid", "uuid missing or not [A-Za-z0-9._:-]{1,128}")
    port = _port(data)
    public_ip = _address(data, "public_ip")
    private_ip = _address(data, "private_ip")
    external_ip = _address(data, "external_ip")
    if not (public_ip or external_ip):
        raise InvalidHeartbeat("no_address", "neither public_ip nor external_ip is set")
    hostname = data.get("hostname")
    if hostname is None or hostname == "":
        hostname = external_ip or public_ip
    if not isinstance(hostname, str) or not is_hostname(hostname):
        raise InvalidHeartbeat("bad_hostname", "hostname is not an RFC 1123 name or IP literal")
    hostname = hostname.rstrip(".").lower()
    load = _number(data, "load", "bad_load")
    if load is None or load < 0:
        raise InvalidHeartbeat("bad_load", "load missing or negative")
    max_load = _number(data, "max_load", "bad_max_load")
    if max_load is None:
        max_load = limits.default_max_load
    elif max_load <= 0:
        raise InvalidHeartbeat("bad_max_load", "max_load must be > 0")
    timestamp = _number(data, "timestamp", "bad_timestamp")
    if timestamp is None:
        raise InvalidHeartbeat("bad_timestamp", "timestamp missing")
    drift = timestamp - now
    if drift < -limits.max_age:
        raise InvalidHeartbeat("stale", f"timestamp {-drift:.0f} s old > {limits.max_age:.0f} s")
    if drift > limits.max_age:
        raise InvalidHeartbeat("future", f"timestamp {drift:.0f} s in the future")
    verified = data.get("verified", False)
    if not isinstance(verified, bool):
        raise InvalidHeartbeat("bad_verified", "verified must be true or false")
    verified = verified and limits.trust_verified_claim
    version = data.get("agent_version")
    if version is not None and (not isinstance(version, str) or not _VERSION_RE.match(version)):
        raise InvalidHeartbeat("bad_agent_version", "agent_version has unexpected characters")
    if limits.require_user_id and not user_id:
        raise InvalidHeartbeat("no_user_id", "message has no user_id but TLS is required")
    return Heartbeat(
        uuid=uuid, hostname=hostname, squid_port=port, public_ip=public_ip, private_ip=private_ip,
        external_ip=external_ip, load=load, max_load=max_load, timestamp=timestamp, drift=drift,
        verified=verified, upstream=_choice(data, "upstream", UPSTREAMS, "both"),
        cache_type=_choice(data, "cache_type", CACHE_TYPES, "squid"), agent_version=version,
        user_id=user_id or None,
    )


def parse_heartbeat(body: bytes, now: float, limits: Limits = Limits(), user_id: Optional[str] = None) -> Heartbeat:
    """Decode and validate a raw AMQP body received at ``now``; raise InvalidHeartbeat."""
    return validate(decode(body), now, limits, user_id)
