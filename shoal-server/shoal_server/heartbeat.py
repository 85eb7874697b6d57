"""Decode and validate one heartbeat message; pure, no I/O.

Everything that reaches the cache table, the JSON answers, the status page or the PAC file
passes through ``parse_heartbeat`` first, so the rules here are the security boundary for
agent-supplied text: host names follow the shared host-name rule (DNS names with letters,
digits, ``_`` and inner ``-``, or global unicast IP literals), numbers are finite, public and
external addresses are global unicast.

Liberal in what deployed agents send: a field that 2014-2025 agents send in a repairable form
(a number as a JSON string, ``max_load`` of -112 from a virtio NIC, a private ``external_ip``
beside a global one ...) is repaired, and the repair is named in ``Heartbeat.repairs`` so the
server can count it. What cannot be repaired raises InvalidHeartbeat.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import json
import math
import operator
import re
import socket
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

MAX_BODY_BYTES = 16 * 1024
UPSTREAMS = ("cvmfs", "frontier", "both")
CACHE_TYPES = ("squid", "varnish")

_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
# The shared host-name rule (docs/protocol.md): "_" is allowed because deployed sites use
# names like squid_05.example.org; nothing that could break a URL, a PAC or a shell file.
_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z")  # what ipaddress accepts, canonical
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_~-]{0,63}\Z")
_PORT_TEXT_RE = re.compile(r"[0-9]{1,5}\Z")
# A number written as a JSON string by agents that read it with ConfigParser.get ("122000").
_NUMBER_TEXT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\Z")
# What gethostname() answers on an unconfigured VM: a name every client resolves to itself.
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4",
                   "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback")
_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: behind NAT, like RFC 1918

# Every repair label ``Heartbeat.repairs`` can hold (docs/protocol.md "Repairs").
REPAIRS = ("load_string", "timestamp_string", "max_load_string", "max_load_missing", "max_load_not_positive",
           "max_load_unparsable", "port_string", "hostname_underscore", "hostname_loopback",
           "public_ip_private", "external_ip_private", "public_ip_not_global", "external_ip_not_global",
           "private_ip_dropped")


class InvalidHeartbeat(ValueError):
    """A message that must be dropped; ``reason`` is a short label for metrics and logs."""

    def __init__(self, reason: str, detail: str, offset: Optional[float] = None) -> None:
        self.reason = reason
        self.detail = detail
        self.offset = offset  # stale/future: agent clock minus server clock, in seconds
        super().__init__(f"{reason}: {detail}")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Server-side policy the validator applies (from the ``[cache]`` section)."""

    default_max_load: float = 122000.0
    max_age: float = 180.0          # older than this never creates or refreshes an entry
    future_age: Optional[float] = None  # further ahead than this is refused; None: same as max_age
    drift_tolerance: float = 60.0   # beyond this the entry is flagged as drifting
    require_user_id: bool = False
    # [security] legacy_agents = accept: a heartbeat without user_id is kept, as unauthenticated.
    accept_unauthenticated: bool = False
    # Broker logins shared by legacy agents (e.g. guest): their user_id proves nothing.
    legacy_users: FrozenSet[str] = frozenset()
    # With server-side verification on, an agent's own "verified": true must not count.
    trust_verified_claim: bool = True
    # Single-host labs and tests only ([security] lab_addresses): loopback, private and
    # documentation addresses count as routable. Never on a production server.
    lab_addresses: bool = False


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
    # What was repaired to accept this message (reason labels, see REPAIRS); not part of equality.
    repairs: Tuple[str, ...] = dataclasses.field(default=(), compare=False)
    # True when the broker vouched for user_id and it is no shared legacy login.
    authenticated: bool = False
    # How the message's fields other than load and timestamp looked (see RawShape); None: unknown.
    shape: Optional["RawShape"] = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def address(self) -> str:
        """The address clients reach and GeoIP places: ``external_ip`` wins over ``public_ip``."""
        return self.external_ip or self.public_ip or ""

    def drifting(self, tolerance: float) -> bool:
        return abs(self.drift) > tolerance


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# One decoder for every message: json.loads with a keyword argument builds a new one per call.
# A JSONDecoder holds no state between calls, so threads may share it.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(body: bytes) -> Dict[str, Any]:
    """Turn the raw body into a JSON object, or raise InvalidHeartbeat."""
    if not isinstance(body, (bytes, bytearray)):
        raise InvalidHeartbeat("not_bytes", "body is not bytes")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidHeartbeat("too_large", f"{len(body)} bytes > {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHeartbeat("not_utf8", "body is not UTF-8") from None
    try:
        if text.startswith("\ufeff"):  # what json.loads says of a BOM, word for word
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = _DECODER.decode(text)
    except (ValueError, RecursionError) as err:
        raise InvalidHeartbeat("not_json", str(err)[:80]) from None
    if not isinstance(data, dict):
        raise InvalidHeartbeat("not_object", f"top level is {type(data).__name__}")
    return data


def is_hostname(name: str) -> bool:
    """True for a name the shared host-name rule admits: a DNS name or a global unicast IP literal.

    DNS names: 1-253 characters, no trailing dot, labels of letters, digits, ``_`` and inner
    ``-`` (at most 63), the last label not all-numeric. IP literals: IPv4 dotted quad or IPv6,
    global unicast only (never loopback, unspecified, private, link-local, reserved ...).
    """
    if not isinstance(name, str) or not name or len(name) > 253:
        return False
    # Only digits-and-dots (IPv4) or a colon (IPv6) can be a literal; skipping the parse
    # attempt for names saves two exceptions per heartbeat.
    if ":" in name or name.replace(".", "").isdigit():
        return address_class(name) == "global"
    labels = name.split(".")
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


@functools.lru_cache(maxsize=65536)  # the same few thousand addresses arrive every 30 s
def address_class(text: str) -> str:
    """Classify an IP literal: ``global``, ``private`` (RFC 1918, CGNAT, ULA) or what else it is.

    Anything but ``global`` and ``private`` (``loopback``, ``unspecified``, ``multicast``,
    ``broadcast``, ``link-local``, ``reserved``, ``documentation``, ``non-global``) never
    reaches a client; ``invalid`` is not an address at all.
    """
    # A cache's address is global: decide that from integer ranges (a bisect, not fifteen
    # ipaddress membership tests); whatever is not global takes the full classification.
    if _IPV4_RE.match(text):
        if not _in_ranges(_NOT_GLOBAL_V4_RANGES, int.from_bytes(socket.inet_aton(text), "big")):
            return "global"
    elif ":" in text:
        addr = _ip_or_none(text)
        if isinstance(addr, ipaddress.IPv6Address) and _global_unicast_v6(int(addr)):
            return "global"
    return _classify(text)


def _classify(text: str) -> str:
    addr = _ip_or_none(text)
    if addr is None:
        return "invalid"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return "non-global"  # ::ffff:a.b.c.d: clients would connect to an IPv4 address in disguise
    if addr.is_global and not addr.is_multicast:
        # Python's tables differ between 3.9, 3.11 and 3.13; the fixed table below is the one the
        # client applies too, so the client accepts exactly the addresses the server serves.
        return "reserved" if _outside_global_table(addr) else "global"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_loopback:
        return "loopback"
    if addr.is_multicast:
        return "multicast"
    if addr.is_link_local:
        return "link-local"
    if isinstance(addr, ipaddress.IPv4Address):
        if addr == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
        if addr in _SHARED_V4 or any(addr in net for net in _PRIVATE_V4):
            return "private"
        if addr.is_reserved:
            return "reserved"
        if any(addr in net for net in _DOC_V4):
            return "documentation"
    else:
        if addr in _ULA_V6:
            return "private"
        if addr in _DOC_V6:
            return "documentation"
        if addr.is_reserved:
            return "reserved"
    return "non-global"


# The stricter reading of the IANA special-purpose registries, shared with shoal_client/hostrule.py:
# no cache lives in these ranges, whatever a Python version's ipaddress calls global. Every
# range any supported Python (3.9-3.13) calls non-global lies inside them, so outside them an
# address is global on every version (tests/server/test_ingest_fast_paths.py holds address_class
# against the ipaddress classification, range boundaries included).
_NOT_GLOBAL_V4 = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"))
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NOT_GLOBAL_V6 = tuple(ipaddress.ip_network(n) for n in ("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20"))

Ranges = Tuple[Tuple[int, ...], Tuple[int, ...]]


def _int_ranges(networks: Tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]) -> Ranges:
    """(first addresses, last addresses) of the merged networks, sorted, for ``_in_ranges``."""
    merged: List[List[int]] = []
    for first, last in sorted((int(n.network_address), int(n.broadcast_address)) for n in networks):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return tuple(m[0] for m in merged), tuple(m[1] for m in merged)


def _in_ranges(ranges: Ranges, value: int) -> bool:
    firsts, lasts = ranges
    i = bisect.bisect_right(firsts, value) - 1
    return i >= 0 and value <= lasts[i]


_NOT_GLOBAL_V4_RANGES = _int_ranges(_NOT_GLOBAL_V4)
_NOT_GLOBAL_V6_RANGES = _int_ranges(_NOT_GLOBAL_V6)
_GLOBAL_UNICAST_V6_FIRST = int(_GLOBAL_UNICAST_V6.network_address)
_GLOBAL_UNICAST_V6_LAST = int(_GLOBAL_UNICAST_V6.broadcast_address)


def _global_unicast_v6(value: int) -> bool:
    return (_GLOBAL_UNICAST_V6_FIRST <= value <= _GLOBAL_UNICAST_V6_LAST
            and not _in_ranges(_NOT_GLOBAL_V6_RANGES, value))


def _outside_global_table(addr: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bool:
    if isinstance(addr, ipaddress.IPv4Address):
        return _in_ranges(_NOT_GLOBAL_V4_RANGES, int(addr))
    return not _global_unicast_v6(int(addr))


# What lab_addresses admits besides global unicast; unspecified, multicast and broadcast never.
_LAB_KINDS = ("global", "private", "loopback", "documentation", "link-local", "reserved", "non-global")


def _routable(kind: str, limits: "Limits") -> bool:
    return kind == "global" or (limits.lab_addresses and kind in _LAB_KINDS)


_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_DOC_V4 = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
_ULA_V6 = ipaddress.ip_network("fc00::/7")
_DOC_V6 = ipaddress.ip_network("2001:db8::/32")


def _number(data: Mapping[str, Any], key: str, reason: str, repairs: List[str]) -> Optional[float]:
    """A finite number, also when sent as a numeric JSON string (repair ``<key>_string``)."""
    value = data.get(key)
    if type(value) is float and math.isfinite(value):
        return value   # what a JSON number with a fraction or exponent is: nothing to convert
    if value is None:
        return None
    if isinstance(value, str) and _NUMBER_TEXT_RE.match(value.strip()):
        value = float(value.strip())  # "1e400" gives inf, refused as not finite below
        repairs.append(f"{key}_string")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidHeartbeat(reason, f"{key} is not a number")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        raise InvalidHeartbeat(reason, f"{key} is not finite") from None
    if not math.isfinite(value):
        raise InvalidHeartbeat(reason, f"{key} is not finite")
    return value


def _max_load(data: Mapping[str, Any], limits: Limits, repairs: List[str]) -> float:
    """The agent's max_load, or the server's ``cache_max_load`` when it is absent, <= 0 or unusable.

    1.0.2 and later agents compute max_load from /sys/class/net/IFACE/speed, which is -1 on
    virtio NICs (-112 after their arithmetic); 0.9.x agents send the config text ("122000").
    """
    if data.get("max_load") is None:
        repairs.append("max_load_missing")
        return limits.default_max_load
    try:
        value = _number(data, "max_load", "bad_max_load", repairs)
    except InvalidHeartbeat:
        repairs.append("max_load_unparsable")
        return limits.default_max_load
    assert value is not None
    if value <= 0:
        repairs.append("max_load_not_positive")
        return limits.default_max_load
    return value


def _ip_text(data: Mapping[str, Any], key: str) -> Optional[str]:
    """The canonical text of an IP address field, None when absent; raise when not an address."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidHeartbeat("bad_ip", f"{key} is not a string")
    text = value.strip()
    if _IPV4_RE.match(text):
        return text  # canonical dotted quad: the same text as ipaddress, at a tenth of the cost
    addr = _ip_or_none(text)
    if addr is None:
        raise InvalidHeartbeat("bad_ip", f"{key} is not an IP address")
    return str(addr)


def _addresses(data: Mapping[str, Any], limits: Limits,
               repairs: List[str]) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(public_ip, private_ip, external_ip) under the address rules.

    public_ip and external_ip must be global unicast: clients connect to them and GeoIP places
    them. A private one (RFC 1918, CGNAT, ULA) is what an agent behind NAT reports when its
    NAT gateway's address is unknown; it moves to private_ip (if that is free). Any other
    non-global one (loopback, unspecified, broadcast, multicast, link-local, reserved,
    documentation) is dropped when the other field holds a global address (an agent's
    interface scan found it beside a configured external_ip) and refused otherwise. private_ip
    may be private or global; anything else there is dropped from the record.
    """
    fields = {key: _ip_text(data, key) for key in ("public_ip", "private_ip", "external_ip")}
    private = fields["private_ip"]
    if private is not None and address_class(private) not in ("private", "global"):
        repairs.append("private_ip_dropped")
        private = None
    kinds = {key: address_class(fields[key]) for key in ("public_ip", "external_ip") if fields[key] is not None}
    if limits.lab_addresses:
        kinds = {key: "global" if _routable(kind, limits) else kind for key, kind in kinds.items()}
    kept: Dict[str, Optional[str]] = {"public_ip": None, "external_ip": None}
    for key, kind in kinds.items():
        if kind == "global":
            kept[key] = fields[key]
        elif kind == "private":
            repairs.append(f"{key}_private")
            if private is None:
                private = fields[key]
    unusable = [(key, kind) for key, kind in kinds.items() if kind not in ("global", "private")]
    if kept["public_ip"] or kept["external_ip"]:
        repairs.extend(f"{key}_not_global" for key, _ in unusable)
        return kept["public_ip"], private, kept["external_ip"]
    if unusable:
        key, kind = unusable[0]
        raise InvalidHeartbeat("bad_ip", f"{key} {fields[key]} is {kind}, not a global unicast address")
    if kinds:
        raise InvalidHeartbeat("no_global_address",
                               "public_ip/external_ip are private; set external_ip to the NAT's global address")
    raise InvalidHeartbeat("no_address", "neither public_ip nor external_ip is set")


def _port(data: Mapping[str, Any], repairs: List[str]) -> int:
    ports = [data[key] for key in ("squid_port", "cache_port") if data.get(key) is not None]
    if not ports:
        raise InvalidHeartbeat("bad_port", "squid_port/cache_port missing")
    values = set()
    for value in ports:
        if isinstance(value, str) and _PORT_TEXT_RE.match(value.strip()):  # not str.isdigit: "²" is a digit
            value = int(value)
            repairs.append("port_string")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise InvalidHeartbeat("bad_port", "port must be an integer 1-65535")
        values.add(value)
    if len(values) > 1:
        raise InvalidHeartbeat("bad_port", "squid_port and cache_port disagree")
    return values.pop()


def _hostname(data: Mapping[str, Any], address: str, limits: Limits, repairs: List[str]) -> str:
    """The name clients are given; an unset or loopback name is replaced by the address."""
    hostname = data.get("hostname")
    if hostname is None or hostname == "":
        return address
    if isinstance(hostname, str) and hostname.endswith(".") and len(hostname) > 1:
        hostname = hostname[:-1]  # the absolute form of the same DNS name
    if limits.lab_addresses and isinstance(hostname, str) and _routable(address_class(hostname), limits):
        return str(ipaddress.ip_address(hostname))
    if not isinstance(hostname, str) or not is_hostname(hostname):
        if isinstance(hostname, str) and (":" in hostname or hostname.replace(".", "").isdigit()):
            kind = address_class(hostname)
            if kind != "invalid":
                raise InvalidHeartbeat("bad_hostname", f"hostname {hostname} is {kind}, not a global unicast address")
        raise InvalidHeartbeat("bad_hostname", "hostname does not follow the host-name rule")
    hostname = hostname.lower()
    if hostname in _LOOPBACK_NAMES or hostname.endswith(".localhost"):
        repairs.append("hostname_loopback")  # gethostname() of an unconfigured VM (0.7.1 behind NAT)
        return address
    if "_" in hostname:
        repairs.append("hostname_underscore")
    return hostname


def _choice(data: Mapping[str, Any], key: str, choices: tuple, default: str) -> str:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidHeartbeat(f"bad_{key}", f"{key} must be one of {', '.join(choices)}")
    return value.lower()


# What validate reads of a message besides load and timestamp, as it reads it ("verified"
# absent is false), and the Heartbeat attribute each one becomes.
_STATIC_FIELDS = ("uuid", "squid_port", "cache_port", "public_ip", "private_ip", "external_ip", "hostname",
                  "max_load", "verified", "agent_version", "upstream", "cache_type")
_SAME = object()   # RawShape.literals: the value equals the Heartbeat's own attribute


def seen_fields(data: Mapping[str, Any]) -> Tuple[Any, ...]:
    """The _STATIC_FIELDS values of a decoded message, as validate reads them (for RawShape.matches)."""
    get = data.get
    return (get("uuid"), get("squid_port"), get("cache_port"), get("public_ip"), get("private_ip"),
            get("external_ip"), get("hostname"), get("max_load"), get("verified", False), get("agent_version"),
            get("upstream"), get("cache_type"))


def _static_values(hb: Heartbeat) -> Tuple[Any, ...]:
    """What validate made of the _STATIC_FIELDS, in their order."""
    return (hb.uuid, hb.squid_port, hb.squid_port, hb.public_ip, hb.private_ip, hb.external_ip, hb.hostname,
            hb.max_load, hb.verified, hb.agent_version, hb.upstream, hb.cache_type)


class RawShape:
    """Enough to tell that a message repeats its predecessor's fields exactly (load and timestamp aside).

    ``types`` are the Python types of the _STATIC_FIELDS values, ``literals`` each value or _SAME
    where it equals the Heartbeat's attribute (so agents that send clean messages share one
    shape). A message whose values have these types and equal these values validates, under the
    same ``limits``, to the same fields with the same repairs: validation is a pure function of
    them. The repairs are kept in validation order, split where load's own repair goes.
    """

    __slots__ = ("limits", "types", "literals", "repairs_before_load", "repairs_of_max_load", "_extra", "_expected")

    def __init__(self, limits: "Limits", types: Tuple[type, ...], literals: Tuple[Any, ...],
                 repairs_before_load: Tuple[str, ...], repairs_of_max_load: Tuple[str, ...]) -> None:
        self.limits, self.types, self.literals = limits, types, literals
        self.repairs_before_load, self.repairs_of_max_load = repairs_before_load, repairs_of_max_load
        # The expected values, picked in one C call from the Heartbeat's values followed by the literals.
        self._extra = tuple(literal for literal in literals if literal is not _SAME)
        picks, extra = [], len(literals)
        for i, literal in enumerate(literals):
            if literal is _SAME:
                picks.append(i)
            else:
                picks.append(extra)
                extra += 1
        self._expected = operator.itemgetter(*picks)

    def matches(self, seen: Tuple[Any, ...], hb: Heartbeat, limits: "Limits") -> bool:
        """True when ``seen`` (from seen_fields) holds exactly the values that gave ``hb``."""
        if self.limits is not limits and self.limits != limits:
            return False
        return tuple(map(type, seen)) == self.types and seen == self._expected(_static_values(hb) + self._extra)


@functools.lru_cache(maxsize=1024)  # bounded: a sender that varies its literals only fills the cache
def _interned(limits: Limits, types: Tuple[type, ...], literals: Tuple[Any, ...], before_load: Tuple[str, ...],
              of_max_load: Tuple[str, ...]) -> RawShape:
    return RawShape(limits, types, literals, before_load, of_max_load)


def _shape(seen: Tuple[Any, ...], validated: Tuple[Any, ...], limits: Limits, before_load: List[str],
           of_max_load: List[str]) -> Optional[RawShape]:
    """The RawShape of a message whose _STATIC_FIELDS values ``seen`` became ``validated``."""
    literals = tuple(_SAME if value == result else value for value, result in zip(seen, validated))
    try:
        return _interned(limits, tuple(map(type, seen)), literals, tuple(before_load), tuple(of_max_load))
    except TypeError:   # a list or object among the values: no fast path for this sender
        return None


def _load(data: Mapping[str, Any], repairs: List[str]) -> float:
    load = _number(data, "load", "bad_load", repairs)
    if load is None or load < 0:
        raise InvalidHeartbeat("bad_load", "load missing or negative")
    return load


def _timestamp(data: Mapping[str, Any], now: float, limits: Limits, repairs: List[str]) -> Tuple[float, float]:
    """(timestamp, drift) of a message that is neither stale nor from the future."""
    timestamp = _number(data, "timestamp", "bad_timestamp", repairs)
    if timestamp is None:
        raise InvalidHeartbeat("bad_timestamp", "timestamp missing")
    drift = timestamp - now
    if drift < -limits.max_age:
        raise InvalidHeartbeat("stale", f"timestamp {-drift:.0f} s old > {limits.max_age:.0f} s", offset=drift)
    future_age = limits.max_age if limits.future_age is None else limits.future_age
    if drift > future_age:
        raise InvalidHeartbeat("future", f"timestamp {drift:.0f} s in the future > {future_age:.0f} s", offset=drift)
    return timestamp, drift


def _user(user_id: Optional[str], limits: Limits) -> Optional[str]:
    """The broker user that counts as the sender's identity (None for a shared legacy login)."""
    if user_id in limits.legacy_users:
        user_id = None
    if limits.require_user_id and not user_id and not limits.accept_unauthenticated:
        raise InvalidHeartbeat("no_user_id", "message has no user_id but TLS is required")
    return user_id or None


def validate(data: Mapping[str, Any], now: float, limits: Limits, user_id: Optional[str] = None,
             previous: Optional[Heartbeat] = None) -> Heartbeat:
    """Check a decoded heartbeat against the protocol and ``limits``; raise InvalidHeartbeat.

    ``previous`` is the last heartbeat accepted from the same uuid, if any: when this message
    repeats all its fields but load and timestamp exactly (``RawShape``), only those two and
    the sender's identity are checked again, with the same result the full check would give.
    """
    seen = seen_fields(data)
    if previous is not None and previous.shape is not None and previous.shape.matches(seen, previous, limits):
        return _refreshed(previous, previous.shape, data, now, limits, user_id)
    repairs: List[str] = []
    uuid = data.get("uuid")
    if not isinstance(uuid, str) or not _UUID_RE.match(uuid):
        raise InvalidHeartbeat("bad_uuid", "uuid missing or not [A-Za-z0-9._:-]{1,128}")
    port = _port(data, repairs)
    public_ip, private_ip, external_ip = _addresses(data, limits, repairs)
    hostname = _hostname(data, external_ip or public_ip or "", limits, repairs)
    before_load = len(repairs)
    load = _load(data, repairs)
    after_load = len(repairs)
    max_load = _max_load(data, limits, repairs)
    after_max_load = len(repairs)
    timestamp, drift = _timestamp(data, now, limits, repairs)
    verified = data.get("verified", False)
    if not isinstance(verified, bool):
        raise InvalidHeartbeat("bad_verified", "verified must be true or false")
    verified = verified and limits.trust_verified_claim
    version = data.get("agent_version")
    if version is not None and (not isinstance(version, str) or not _VERSION_RE.match(version)):
        raise InvalidHeartbeat("bad_agent_version", "agent_version has unexpected characters")
    user_id = _user(user_id, limits)
    upstream = _choice(data, "upstream", UPSTREAMS, "both")
    cache_type = _choice(data, "cache_type", CACHE_TYPES, "squid")
    # A first message gets its shape too: every cache's second heartbeat (the whole fleet's, in the
    # minute after a restart) then skips decoding, for a few microseconds more on the first.
    shape = _shape(
        seen, (uuid, port, port, public_ip, private_ip, external_ip, hostname, max_load, verified, version, upstream,
               cache_type), limits, repairs[:before_load], repairs[after_load:after_max_load])
    return Heartbeat(
        uuid=uuid, hostname=hostname, squid_port=port, public_ip=public_ip, private_ip=private_ip,
        external_ip=external_ip, load=load, max_load=max_load, timestamp=timestamp, drift=drift,
        verified=verified, upstream=upstream, cache_type=cache_type, agent_version=version,
        user_id=user_id, repairs=tuple(repairs), authenticated=bool(user_id), shape=shape,
    )


def _refreshed(previous: Heartbeat, shape: RawShape, data: Mapping[str, Any], now: float, limits: Limits,
               user_id: Optional[str]) -> Heartbeat:
    """``previous`` with this message's load, timestamp and identity, checked in validate's order."""
    repairs = list(shape.repairs_before_load)
    load = _load(data, repairs)
    repairs.extend(shape.repairs_of_max_load)
    timestamp, drift = _timestamp(data, now, limits, repairs)
    return _reading(previous, load, timestamp, drift, _user(user_id, limits), tuple(repairs))


def _reading(previous: Heartbeat, load: float, timestamp: float, drift: float, user_id: Optional[str],
             repairs: Tuple[str, ...]) -> Heartbeat:
    """``previous`` with another reading and identity: a copy of its fields with six replaced, a
    fifth of the frozen dataclass's ``__init__`` (18 ``object.__setattr__`` calls), for the path
    nearly every heartbeat takes."""
    hb = object.__new__(Heartbeat)
    fields = hb.__dict__
    fields.update(previous.__dict__)
    fields.update(load=load, timestamp=timestamp, drift=drift, user_id=user_id, repairs=repairs,
                  authenticated=bool(user_id))
    return hb


def refresh(previous: Heartbeat, load: float, timestamp: float, now: float, limits: Limits,
            user_id: Optional[str] = None) -> Heartbeat:
    """What ``validate`` gives for a message that repeats ``previous``'s fields but load and timestamp,
    which it sent as JSON numbers (here as floats); repeats.py says how that is known.

    The common case -- nothing repaired, both numbers acceptable, an identity that counts -- is
    decided here in a few comparisons; anything else goes through ``_refreshed``, which raises
    what validate raises.
    """
    shape = previous.shape
    assert shape is not None
    drift = timestamp - now
    future_age = limits.max_age if limits.future_age is None else limits.future_age
    if (shape.repairs_before_load or shape.repairs_of_max_load or not 0.0 <= load < math.inf
            or not -limits.max_age <= drift <= future_age or user_id in limits.legacy_users
            or (not user_id and limits.require_user_id)):
        return _refreshed(previous, shape, {"load": load, "timestamp": timestamp}, now, limits, user_id)
    return _reading(previous, load, timestamp, drift, user_id or None, ())


def parse_heartbeat(body: bytes, now: float, limits: Limits = Limits(), user_id: Optional[str] = None) -> Heartbeat:
    """Decode and validate a raw AMQP body received at ``now``; raise InvalidHeartbeat.

    The heartbeat's ``repairs`` lists what was repaired to accept it (empty for a clean one).
    """
    return validate(decode(body), now, limits, user_id)


@dataclasses.dataclass(frozen=True)
class Sender:
    """What can safely be said about who sent a refused message (each field None when unknown)."""

    uuid: Optional[str]
    hostname: Optional[str]


def sender_of(body: bytes) -> Sender:
    """The uuid and host name of a message, each only if it passes the rules; never raises."""
    try:
        data = decode(body)
    except InvalidHeartbeat:
        return Sender(None, None)
    uuid = data.get("uuid")
    hostname = data.get("hostname")
    if isinstance(hostname, str) and hostname.endswith("."):
        hostname = hostname[:-1]
    return Sender(uuid if isinstance(uuid, str) and _UUID_RE.match(uuid) else None,
                  hostname.lower() if isinstance(hostname, str) and is_hostname(hostname) else None)
