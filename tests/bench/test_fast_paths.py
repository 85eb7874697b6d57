"""The validator's fast paths for IPv4 text answer exactly as its general path (_ip_or_none) does."""
import pytest
from hypothesis import given, settings, strategies as st

from shoal_server.heartbeat import InvalidHeartbeat, _address, _ip_or_none, is_hostname


def reference_address(text):
    addr = _ip_or_none(text.strip())
    if addr is None:
        return "bad"
    if addr.is_unspecified or addr.is_multicast:
        return "bad"
    return str(addr)


def fast_address(text):
    try:
        return _address({"ip": text}, "ip")
    except InvalidHeartbeat:
        return "bad"


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


@pytest.mark.parametrize("text", ["0.0.0.0", "224.0.0.1", "239.255.255.255", "223.255.255.255", "240.0.0.1",
                                  "1.2.3.04", " 142.90.1.1 ", "::", "ff02::1", "::ffff:1.2.3.4"])
def test_address_edge_cases(text):
    assert fast_address(text) == reference_address(text)


def reference_is_hostname(name):
    import re
    if not isinstance(name, str) or not name or len(name) > 254:
        return False
    if _ip_or_none(name) is not None:
        return True
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(".".join(labels)) > 253:
        return False
    label_re = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
    return all(label_re.match(label) for label in labels) and not labels[-1].isdigit()


@settings(max_examples=800, deadline=None)
@given(st.one_of(dotted, texts, st.from_regex(r"[a-z0-9-]{1,8}(\.[a-z0-9-]{1,8}){0,3}\.?", fullmatch=True)))
def test_is_hostname_matches_reference(name):
    assert is_hostname(name) == reference_is_hostname(name)
