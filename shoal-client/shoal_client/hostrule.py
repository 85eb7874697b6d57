"""Which host names the client accepts from the server: exactly the names the server serves.

The rule (docs/security.md, "host names"): a DNS name of 1-253 characters, no trailing dot,
dot-separated labels of letters, digits, ``_`` and inner ``-`` (``squid_05.example.org`` is a
deployed name), the last label not all digits; or an IP literal that is a global unicast
address. Nothing else can appear, so a name can never break a URL or the shell-sourced CVMFS file.
Pure functions, no I/O; Python 2.7 has no ``ipaddress`` module, so the address tables are here.
"""
import re
import socket
import struct

from ._compat import string_types, text_type

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
# Names every host resolves to itself (what gethostname() says on an unconfigured VM, RFC 6761):
# as dangerous as 127.0.0.1 -- any local user listening on the port would become the proxy.
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4", "localhost6",
                  "localhost6.localdomain6", "ip6-localhost", "ip6-loopback")

# IPv4 ranges that are not global unicast (the IANA special-purpose registry, plus multicast):
# (network, prefix length). Where Python versions' ipaddress tables differ (192.0.0.0/24 vs /29, the
# anycast exceptions 3.13 added), the stricter reading wins: no cache lives in those ranges.
_IPV4_NOT_GLOBAL = (
    ("0.0.0.0", 8), ("10.0.0.0", 8), ("100.64.0.0", 10), ("127.0.0.0", 8), ("169.254.0.0", 16),
    ("172.16.0.0", 12), ("192.0.0.0", 24), ("192.0.2.0", 24), ("192.168.0.0", 16), ("198.18.0.0", 15),
    ("198.51.100.0", 24), ("203.0.113.0", 24), ("224.0.0.0", 4), ("240.0.0.0", 4),
)

# IPv6: only 2000::/3 is global unicast; inside it these are special-purpose and not global.
_IPV6_GLOBAL_UNICAST = ("2000::", 3)
_IPV6_NOT_GLOBAL = (("2001::", 23), ("2001:db8::", 32), ("2002::", 16), ("3fff::", 20))


def _ascii(text):
    if not isinstance(text, string_types):
        return False
    try:
        text.encode("ascii") if isinstance(text, text_type) else text.decode("ascii")
    except (UnicodeError, AttributeError):
        return False
    return True


def _digits(text):
    return bool(text) and all(c in "0123456789" for c in text)


def is_ipv4(text):
    """True for a dotted quad (exactly four decimal parts, 0-255, no leading zeros)."""
    parts = text.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not _digits(part) or len(part) > 3 or (len(part) > 1 and part[0] == "0") or int(part) > 255:
            return False
    return True


def is_ipv6(text):
    """True for an IPv6 literal without brackets or zone id."""
    if ":" not in text or "%" in text or not _ascii(text):
        return False
    try:
        socket.inet_pton(socket.AF_INET6, str(text))
    except (socket.error, ValueError, UnicodeError):
        return False
    return True


def _ipv4_int(text):
    return struct.unpack("!I", socket.inet_aton(str(text)))[0]


def _ipv6_int(text):
    high, low = struct.unpack("!QQ", socket.inet_pton(socket.AF_INET6, str(text)))
    return (high << 64) | low


def _in(value, network, bits, to_int, width):
    shift = width - bits
    return (value >> shift) == (to_int(network) >> shift)


def is_global_ipv4(text):
    """True for a dotted quad that is global unicast (not private, loopback, broadcast, reserved ...)."""
    if not is_ipv4(text):
        return False
    value = _ipv4_int(text)
    return not any(_in(value, net, bits, _ipv4_int, 32) for net, bits in _IPV4_NOT_GLOBAL)


def is_global_ipv6(text):
    """True for an IPv6 literal in 2000::/3 outside the special-purpose ranges."""
    if not is_ipv6(text):
        return False
    value = _ipv6_int(text)
    if not _in(value, _IPV6_GLOBAL_UNICAST[0], _IPV6_GLOBAL_UNICAST[1], _ipv6_int, 128):
        return False
    return not any(_in(value, net, bits, _ipv6_int, 128) for net, bits in _IPV6_NOT_GLOBAL)


def is_dns_name(name):
    """True for a DNS name by the shared rule (``_`` allowed, no trailing dot, last label not numeric)."""
    if not _ascii(name) or not 0 < len(name) <= 253:
        return False
    labels = name.split(".")
    return all(_LABEL.match(label) for label in labels) and not _digits(labels[-1])


def is_loopback_name(name):
    """True for ``localhost`` and its kin, and any name under ``.localhost``."""
    lower = name.lower()
    return lower in LOOPBACK_NAMES or lower.endswith(".localhost")


def is_served_host(name):
    """True for a host name the server may serve: a DNS name (not a loopback name) or a global unicast IP literal."""
    if not _ascii(name) or not name:
        return False
    if is_ipv4(name):
        return is_global_ipv4(name)
    if ":" in name:
        return is_global_ipv6(name)
    return is_dns_name(name) and not is_loopback_name(name)


def is_proxy_host(name):
    """True for a host in a site's own proxy setting: a DNS name or any IPv4/IPv6 literal.

    The site's configuration is trusted with private and loopback addresses (a squid on the
    node itself or on the site network); only names from the server must be global.
    """
    if not _ascii(name) or not name:
        return False
    return is_ipv4(name) or is_ipv6(name) or is_dns_name(name)
