"""The validator's fast paths (dotted-quad regex, cached address classes) agree with ipaddress."""
import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from shoal_server.heartbeat import InvalidHeartbeat, _ip_or_none, _ip_text, address_class, is_hostname


def reference_address(text):
    addr = _ip_or_none(text.strip())
    return "bad" if addr is None else str(addr)


def fast_address(text):
    try:
        return _ip_text({"ip": text}, "ip")
    except InvalidHeartbeat:
        return "bad"


# The special-purpose ranges some Python versions call global; the shared rule refuses them too.
_STRICTER = tuple(ipaddress.ip_network(n) for n in ("192.0.0.0/24", "2001::/23", "2002::/16", "3fff::/20"))


def reference_is_global_unicast(text):
    addr = _ip_or_none(text)
    if addr is None or (addr.version == 6 and addr not in ipaddress.ip_network("2000::/3")):
        return False
    return (addr.is_global and not addr.is_multicast and getattr(addr, "ipv4_mapped", None) is None
            and not any(addr in net for net in _STRICTER if net.version == addr.version))


octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "255", "256", "", "1e1", "١"]))
dotted = st.tuples(octet, octet, octet, octet).map(".".join)
texts = st.one_of(dotted, st.text(alphabet="0123456789.: abcdef%\n", max_size=20),
                  st.ip_addresses().map(str), st.text(max_size=12))


@settings(max_examples=800, deadline=None)
@given(texts)
def test_address_matches_ipaddress(text):
    if text.strip() == "":
        return  # empty means "not given" before any parsing
    assert fast_address(text) == reference_address(text)


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.ip_addresses().map(str), dotted))
def test_address_class_global_matches_ipaddress(text):
    assert (address_class(text) == "global") == reference_is_global_unicast(text)


@pytest.mark.parametrize("text,kind", [("0.0.0.0", "unspecified"), ("::", "unspecified"), ("127.0.0.1", "loopback"),
                                       ("::1", "loopback"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
                                       ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
                                       ("169.254.0.1", "link-local"), ("fe80::1", "link-local"),
                                       ("10.1.1.1", "private"), ("172.31.0.1", "private"), ("192.168.0.1", "private"),
                                       ("100.64.0.1", "private"), ("fd00::1", "private"),
                                       ("198.51.100.7", "documentation"), ("2001:db8::1", "documentation"),
                                       ("::ffff:142.90.1.1", "non-global"), ("142.90.1.1", "global"),
                                       ("2001:1458::1", "global"), ("1.2.3.04", "invalid")])
def test_address_classes(text, kind):
    assert address_class(text) == kind


def reference_is_hostname(name):
    """The shared host-name rule, written again from its text."""
    import re
    if not isinstance(name, str) or not 0 < len(name) <= 253:
        return False
    if _ip_or_none(name) is not None:
        return reference_is_global_unicast(name)
    labels = name.split(".")
    label_re = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
    return all(label_re.match(label) for label in labels) and not labels[-1].isdigit()


@settings(max_examples=800, deadline=None)
@given(st.one_of(dotted, texts, st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,3}\.?", fullmatch=True)))
def test_is_hostname_matches_reference(name):
    assert is_hostname(name) == reference_is_hostname(name)
