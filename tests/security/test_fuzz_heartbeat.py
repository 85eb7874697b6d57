"""Fuzz the heartbeat validator: nothing but InvalidHeartbeat escapes, nothing accepted breaks an invariant.

CI runs a bounded budget per target (FUZZ_EXAMPLES, default 1500); the long run is e.g.
``FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/security/test_fuzz_heartbeat.py``.
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import string
import time

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from shoal_server.heartbeat import CACHE_TYPES, UPSTREAMS, Heartbeat, InvalidHeartbeat, Limits, parse_heartbeat

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NOW = 1_700_000_000.0
LIMITS = Limits(default_max_load=122000.0, max_age=180.0, require_user_id=False)
# Written independently of heartbeat.py: what may reach the table, the status page, JSON and PAC.
# The shared host-name rule: letters, digits, "_" and inner "-"; IP literals global unicast only.
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
SAFE_UUID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")


# Special-purpose ranges some Python versions call global (docs/security.md, address rules).
STRICTER = tuple(ipaddress.ip_network(n) for n in ("192.0.0.0/24", "2001::/23", "2002::/16", "3fff::/20"))


def is_global_unicast(text: str) -> bool:
    ip = ipaddress.ip_address(text)
    if ip.version == 6 and ip not in ipaddress.ip_network("2000::/3"):
        return False
    return (ip.is_global and not ip.is_multicast and getattr(ip, "ipv4_mapped", None) is None
            and not any(ip in net for net in STRICTER if net.version == ip.version))


def rfc1123_or_ip(name: str) -> bool:
    if "%" not in name:
        try:
            return is_global_unicast(name)
        except ValueError:
            pass
    labels = name.split(".")
    return (0 < len(name) <= 253 and all(LABEL.match(label) for label in labels)
            and not labels[-1].isdigit())


def check_invariants(hb: Heartbeat, user_id) -> None:
    assert isinstance(hb.hostname, str) and rfc1123_or_ip(hb.hostname), hb.hostname
    assert not set(hb.hostname) & set(" ;,|<>\"'&%\\/\t\r\n"), hb.hostname
    assert type(hb.squid_port) is int and 1 <= hb.squid_port <= 65535
    assert isinstance(hb.load, float) and math.isfinite(hb.load) and hb.load >= 0
    assert isinstance(hb.max_load, float) and math.isfinite(hb.max_load) and hb.max_load > 0
    assert math.isfinite(hb.timestamp) and abs(hb.drift) <= LIMITS.max_age
    assert SAFE_UUID.match(hb.uuid)
    for ip in (hb.public_ip, hb.private_ip, hb.external_ip):
        assert ip is None or (str(ipaddress.ip_address(ip)) == ip and "%" not in ip)
    # Only routable things are served: public/external global unicast, private_ip private or global.
    for ip in (hb.public_ip, hb.external_ip):
        assert ip is None or is_global_unicast(ip), ip
    if hb.private_ip is not None:
        addr = ipaddress.ip_address(hb.private_ip)
        assert is_global_unicast(hb.private_ip) or (addr.is_private and not (
            addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_reserved)) \
            or addr in ipaddress.ip_network("100.64.0.0/10"), hb.private_ip
    assert hb.address
    assert hb.upstream in UPSTREAMS and hb.cache_type in CACHE_TYPES
    assert hb.agent_version is None or re.fullmatch(r"[A-Za-z0-9.+_~-]{1,64}", hb.agent_version)
    assert isinstance(hb.verified, bool)
    assert hb.user_id == (user_id or None)


def note(what: str) -> None:
    """Count outcomes; ``--hypothesis-show-statistics`` shows the mix of accepted and rejected inputs."""
    if currently_in_test_context():
        event(what)


def run(body: bytes, user_id=None) -> None:
    try:
        hb = parse_heartbeat(body, NOW, LIMITS, user_id)
    except InvalidHeartbeat as err:
        assert err.reason and isinstance(err.detail, str)
        note(f"rejected: {err.reason}")
        return
    note("accepted")
    check_invariants(hb, user_id)


# ---- strategies -------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**1100, max_value=2**1100),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=12)

NASTY_TEXT = ["", " ", "<script>alert(1)</script>", "\"; alert(1); //", "';DIRECT", "a; PROXY evil:80",
              "squid.example.org; PROXY evil.example:80", "evil.example:80|http://x", "fe80::1%eth0",
              "fe80::1%a]:1;PROXY evil:80;PROXY [::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "999.1.1.1",
              "1.2.3", "01.2.3.4", "127.0.0.1", "::1", "::ffff:1.2.3.4", "squid..example.org", "-squid.org",
              "squid-.org", "a" * 64 + ".org", ("a" * 63 + ".") * 4 + "org", "123", "1.2.3.4.5", "localhost.",
              "xn--bcher-kva.example", "bücher.example", "squid\u0000.org", "squid\n.org", "SQUID.Example.ORG.",
              "3128", " 3128 ", "+3128", "-1", "0", "65535", "65536", "²", "٣١٢٨", "1e3", "NaN", "Infinity",
              "cvmfs", "FRONTIER", "both ", "squid", "varnish", "1.0.0", "1.0.0<b>", "true"]
# Values valid for some field: mixed into the mutations so that many mutants are still accepted
# and the invariants are checked on them, not only on the rejections.
dns_names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,12}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,12}[A-Za-z0-9])?)"
                          r"{0,3}\.[A-Za-z]{2,6}\.?", fullmatch=True)
unicast_ips = st.ip_addresses().filter(lambda ip: not (ip.is_unspecified or ip.is_multicast)).map(str)
global_ips = st.ip_addresses().map(str).filter(is_global_unicast)
plausible = st.one_of(dns_names, unicast_ips, st.integers(min_value=1, max_value=65535),
                      st.integers(min_value=1, max_value=65535).map(str),
                      st.floats(min_value=0, max_value=1e15, allow_nan=False),
                      st.floats(min_value=NOW - 170, max_value=NOW + 170), st.booleans(),
                      st.sampled_from(["cvmfs", "Frontier", "BOTH", "squid", "VARNISH", "1.0.0", "2.0.0+el9"]),
                      st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True))
nasty = st.one_of(plausible, plausible, st.sampled_from(NASTY_TEXT), json_scalars, st.sampled_from([float("nan"), float("inf"),
                  -float("inf"), 10**400, -10**400, 2**63, 1e308, -0.0, 5e-324, True, False, [], {}]),
                  json_values, st.text(alphabet=string.printable, max_size=300))
KEYS = ["uuid", "hostname", "squid_port", "cache_port", "public_ip", "private_ip", "external_ip", "load",
        "max_load", "timestamp", "verified", "upstream", "cache_type", "agent_version"]


def valid_heartbeat():
    return {"uuid": "a1b2c3", "hostname": "squid1.example.org", "squid_port": 3128, "public_ip": "142.90.1.7",
            "private_ip": "10.0.0.5", "load": 10.5, "max_load": 1000, "timestamp": NOW, "verified": True,
            "upstream": "both", "cache_type": "squid", "agent_version": "2.0.0"}


@st.composite
def near_valid(draw):
    data = valid_heartbeat()
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True)):
        action = draw(st.sampled_from(["replace", "replace", "delete"]))
        if action == "delete":
            data.pop(key, None)
        else:
            data[key] = draw(nasty)
    if draw(st.booleans()):
        data[draw(st.text(max_size=10))] = draw(json_values)
    return data


def encode(data) -> bytes:
    # allow_nan: the wire may carry NaN/Infinity tokens even though json.dumps would normally refuse them.
    return json.dumps(data, allow_nan=True).encode()


user_ids = st.one_of(st.none(), st.just(""), st.sampled_from(["squid1.example.org", "agent"]), st.text(max_size=20))


# ---- targets ----------------------------------------------------------------------------------------

@st.composite
def valid_heartbeats(draw):
    """Heartbeats inside the protocol's valid space, with values at its edges."""
    data = {"uuid": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", fullmatch=True)),
            draw(st.sampled_from(["squid_port", "cache_port"])): draw(st.integers(min_value=1, max_value=65535)),
            "public_ip": draw(global_ips), "load": draw(st.floats(min_value=0, max_value=1e300)),
            "timestamp": NOW + draw(st.floats(min_value=-LIMITS.max_age, max_value=LIMITS.max_age))}
    if draw(st.booleans()):
        data["hostname"] = draw(st.one_of(dns_names, global_ips))
    if draw(st.booleans()):
        data["max_load"] = draw(st.floats(min_value=1e-300, max_value=1e300))
    if draw(st.booleans()):
        data["external_ip"] = draw(global_ips)
    for key, choices in (("upstream", UPSTREAMS), ("cache_type", CACHE_TYPES)):
        if draw(st.booleans()):
            data[key] = draw(st.sampled_from(choices)).upper()
    return data


@FUZZ
@given(valid_heartbeats())
def test_valid_heartbeats_are_accepted(data):
    """No false rejections at the edges of the valid space (old agents must keep working)."""
    hb = parse_heartbeat(encode(data), NOW, LIMITS, "agent")
    check_invariants(hb, "agent")
    if "hostname" in data:
        assert hb.hostname == data["hostname"].rstrip(".").lower()


@FUZZ
@given(st.binary(max_size=2048), user_ids)
def test_arbitrary_bytes(body, user_id):
    run(body, user_id)


@FUZZ
@given(json_values)
def test_arbitrary_json(value):
    run(encode(value))


@FUZZ
@given(near_valid(), user_ids)
def test_near_valid_heartbeats(data, user_id):
    run(encode(data), user_id)


@FUZZ
@given(near_valid(), st.integers(min_value=0, max_value=40), st.binary(min_size=1, max_size=4))
def test_mutated_bytes_of_near_valid_heartbeats(data, position, noise):
    body = bytearray(encode(data))
    position = min(position, len(body))
    body[position:position + len(noise)] = noise
    run(bytes(body))


def test_the_valid_heartbeat_is_accepted():
    """The fuzz targets start from a heartbeat that passes, so mutations probe the boundary."""
    hb = parse_heartbeat(encode(valid_heartbeat()), NOW, LIMITS, "squid1.example.org")
    check_invariants(hb, "squid1.example.org")


def test_regressions_found_by_fuzzing():
    """Inputs that once escaped as another exception or were accepted although unsafe."""
    base = valid_heartbeat()
    for key, value in [("squid_port", "²"), ("load", 10**400), ("timestamp", 10**400),
                       ("hostname", "fe80::1%a]:1;PROXY evil:80;PROXY [::1"), ("public_ip", "fe80::1%eth0"),
                       ("external_ip", "fe80::1%x; PROXY evil:80")]:
        try:
            parse_heartbeat(encode({**base, key: value}), NOW, LIMITS)
        except InvalidHeartbeat:
            continue
        raise AssertionError(f"{key}={value!r} was accepted")
    # An unusable max_load is replaced by the server's default (a repair), never served as sent.
    for value in (-10**400, 10**400, "1e400", "-1", 0, [], None):
        hb = parse_heartbeat(encode({**base, "max_load": value}), NOW, LIMITS)
        assert hb.max_load == LIMITS.default_max_load and hb.repairs, value


def test_validator_throughput_is_not_a_bottleneck():
    """Hostile input costs microseconds, so a flood is limited by the broker, not the validator."""
    bodies = [encode({**valid_heartbeat(), "hostname": "x" * 300}), b"\xff" * 16000, b"[" * 5000,
              encode(valid_heartbeat())]
    start = time.perf_counter()
    for _ in range(500):
        for body in bodies:
            run(body)
    per_message = (time.perf_counter() - start) / 2000
    assert per_message < 0.005, per_message
