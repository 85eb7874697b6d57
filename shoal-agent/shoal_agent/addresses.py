"""Which addresses and host name to announce: pure classification plus a thin netifaces/DNS layer.

Clients connect to the announced address, and the server places the cache on the map by it, so
loopback and link-local addresses are never announced, private ones only as ``private_ip``.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import socket
import threading
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

PUBLIC = "public"
PRIVATE = "private"

# RFC 1918, carrier-grade NAT (RFC 6598) and IPv6 unique local addresses (RFC 4193):
# reachable inside a site only, so never announced as the address clients world-wide use.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))

# The server's host-name rule (docs/protocol.md): letters, digits, inner "-", and "_", which deployed
# sites use (squid_05.example.org) and upstream agents announced; never anything that could break a
# URL, a shell-sourced CVMFS file, a PAC string or the status page.
_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


class NoUsableAddress(Exception):
    """Nothing to announce; the message names the config key that fixes it."""


@dataclasses.dataclass(frozen=True)
class InterfaceAddress:
    interface: str
    address: str


@dataclasses.dataclass(frozen=True)
class Addresses:
    """What a heartbeat says about where the cache is."""

    public_ip: Optional[str]
    private_ip: Optional[str]
    external_ip: Optional[str]
    load_interfaces: Tuple[str, ...]   # whose transmit counters measure the load

    @property
    def announced(self) -> str:
        """The address clients reach: ``external_ip`` wins, as on the server."""
        return self.external_ip or self.public_ip or ""


def is_dns_name(name: str) -> bool:
    """True for an RFC 1123 host name (a trailing dot allowed), the form the server accepts."""
    if not name or len(name) > 254:
        return False
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    return all(_LABEL_RE.match(label) for label in labels) and not labels[-1].isdigit()


def parse_address(text: str) -> Optional[IPAddress]:
    """Parse an address as netifaces reports it (``fe80::1%eth0`` included); None if it is not one."""
    if not isinstance(text, str):
        return None
    text = text.split("%", 1)[0].strip()
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def classify(text: str) -> Optional[str]:
    """Return PUBLIC, PRIVATE, or None for addresses that must never be announced."""
    addr = parse_address(text)
    if addr is None:
        return None
    if (addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast
            or addr.is_reserved or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)):
        return None
    if any(addr in net for net in PRIVATE_NETWORKS):
        return PRIVATE
    return PUBLIC


def _preference(item: InterfaceAddress, interface: str) -> Tuple[int, int]:
    # The configured interface first, then IPv4 (reachable by every client) before IPv6.
    addr = parse_address(item.address)
    return (0 if interface and item.interface == interface else 1, 0 if addr and addr.version == 4 else 1)


def choose(found: Sequence[InterfaceAddress], external_ip: str = "", interface: str = "") -> Addresses:
    """Pick public/private addresses and the interfaces to measure; raise NoUsableAddress."""
    ordered = sorted(found, key=lambda item: _preference(item, interface))
    public = [item for item in ordered if classify(item.address) == PUBLIC]
    private = [item for item in ordered if classify(item.address) == PRIVATE]
    public_ip = str(parse_address(public[0].address)) if public else None
    private_ip = str(parse_address(private[0].address)) if private else None
    if not public_ip and not external_ip:
        seen = ", ".join(f"{i.interface} {i.address}" for i in found) or "none"
        raise NoUsableAddress(
            f"no public IP address on any interface (found: {seen}); behind NAT or a cloud floating IP, "
            "set [general] external_ip to the address clients reach")
    if interface:
        measured: Tuple[str, ...] = (interface,)
    else:
        # NAT: the traffic leaves through the private interface the external address maps to.
        carriers = public or private
        measured = tuple(dict.fromkeys(item.interface for item in carriers))
    return Addresses(public_ip=public_ip, private_ip=private_ip, external_ip=external_ip or None,
                     load_interfaces=measured)


def usable_hostname(name: Optional[str]) -> Optional[str]:
    """Normalise a DNS answer; None for names useless to clients (invalid, unqualified, localhost)."""
    if not name:
        return None
    name = name.rstrip(".").lower()
    if not is_dns_name(name) or "." not in name:
        return None
    if name.split(".")[0] in ("localhost", "localhost4", "localhost6") or name.endswith(".localdomain"):
        return None
    return name


def choose_hostname(dnsname: str, reverse_name: Optional[str], fqdn: Optional[str], address: str) -> str:
    """``dnsname``, else the reverse name of the address, else the FQDN, else the address itself."""
    for candidate in (dnsname, reverse_name, fqdn):
        name = usable_hostname(candidate)
        if name:
            return name
    return address


# ---- I/O: netifaces and DNS --------------------------------------------------------------------

def list_addresses() -> List[InterfaceAddress]:
    """Every IPv4/IPv6 address netifaces reports, with its interface."""
    import netifaces  # imported here so the pure functions above work without it

    found: List[InterfaceAddress] = []
    for name in netifaces.interfaces():
        try:
            entries = netifaces.ifaddresses(name)
        except ValueError:  # the interface vanished between the two calls
            continue
        for family in (netifaces.AF_INET, netifaces.AF_INET6):
            for entry in entries.get(family, ()):
                addr = entry.get("addr")
                if addr:
                    found.append(InterfaceAddress(name, addr.split("%", 1)[0]))
    return found


def bounded(call: Callable[[], Optional[str]], timeout: float) -> Optional[str]:
    """Run a blocking resolver call for at most ``timeout`` seconds; None if it fails or is slow."""
    result: List[Optional[str]] = [None]

    def target() -> None:
        try:
            result[0] = call()
        except (OSError, UnicodeError):
            result[0] = None

    worker = threading.Thread(target=target, name="shoal-agent-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0]


class HostnameResolver:
    """Resolve the announced host name, repeating DNS lookups only when the address changes."""

    def __init__(self, dnsname: str = "", timeout: float = 3.0,
                 reverse: Optional[Callable[[str], str]] = None, fqdn: Optional[Callable[[], str]] = None) -> None:
        self._dnsname = dnsname
        self._timeout = timeout
        self._reverse = reverse or (lambda addr: socket.gethostbyaddr(addr)[0])
        self._fqdn = fqdn or socket.getfqdn
        self._cache: Optional[Tuple[str, str]] = None

    def hostname(self, address: str) -> str:
        if self._dnsname:
            return self._dnsname
        if self._cache and self._cache[0] == address:
            return self._cache[1]
        reverse = bounded(lambda: self._reverse(address), self._timeout)
        fqdn = None if usable_hostname(reverse) else bounded(self._fqdn, self._timeout)
        name = choose_hostname("", reverse, fqdn, address)
        if name == address:
            logger.warning("no DNS name found for %s; announcing the address itself "
                           "(set [general] dnsname to announce a name)", address)
        else:
            logger.info("announcing host name %s for %s", name, address)
        self._cache = (address, name)
        return name


def describe(found: Iterable[InterfaceAddress]) -> str:
    return ", ".join(f"{item.interface}={item.address}({classify(item.address) or 'unusable'})" for item in found)
