"""Decide which address a request ranks for: REMOTE_ADDR, trusted X-Forwarded-For, or ?ip=."""
from __future__ import annotations

import ipaddress
from typing import Iterable, List, Mapping, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class BadClientAddress(ValueError):
    """The ``ip`` query parameter is not an IP address (HTTP 400)."""


class ClientResolver:
    """Resolve the client address of a WSGI request, trusting X-Forwarded-For only from proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted: List[Network] = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def is_trusted(self, address: str) -> bool:
        addr = _parse(address)
        return addr is not None and any(addr in net for net in self._trusted)

    def resolve(self, environ: Mapping[str, str], query_ip: Optional[str] = None) -> Optional[str]:
        """Return the address to rank for; raise BadClientAddress for an invalid ``?ip=``."""
        if query_ip is not None:
            addr = _parse(query_ip.strip())
            if addr is None:
                raise BadClientAddress(f"ip={query_ip[:64]!r} is not an IPv4 or IPv6 address")
            return str(addr)
        remote = environ.get("REMOTE_ADDR", "")
        if self.is_trusted(remote):
            # Walk from the nearest hop outwards; the first untrusted hop is the client.
            hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
            for hop in reversed(hops):
                if _parse(hop) is None:
                    break
                if not self.is_trusted(hop):
                    return str(_parse(hop))
        addr = _parse(remote)
        return str(addr) if addr is not None else None


def _parse(text: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket arrives as ::ffff:a.b.c.d.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr
