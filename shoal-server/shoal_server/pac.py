"""The /wpad.dat PAC file: route by destination, rotate equally good caches per client, end in the
site's fallback. Pure: the web layer ranks, this module decides and renders.

A PAC answer is a ``;``-separated list CVMFS turns into its proxy chain (``PROXY a; PROXY b;
DIRECT`` becomes ``a;b;DIRECT``, wpad.cc) and Frontier reads as its proxy list. A PAC cannot say
CVMFS's ``|`` (pick one member at random), so the members of each group of equally good caches
(``grouping.group_ranked``) are put in an order of the client's own (``client_order``): every
worker keeps its order from one fetch to the next, and a site's workers spread over its caches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from typing import List, Optional, Sequence, Tuple

from .heartbeat import is_hostname
from .render import hostport, js_string

DEFAULT_PROXY_PORT = 3128
# shExpMatch patterns on the URL. CVMFS evaluates the PAC for its first stratum-1 URL, whose path is
# /cvmfs/<repository> on every deployed stratum-1 and CDN (CVMFS_SERVER_URL=http://HOST/cvmfs/@fqrn@);
# Frontier server URLs name Frontier in the host (cmsfrontier.cern.ch, atlasfrontier-ai.cern.ch)
# or in the servlet path (:8000/FrontierProd, /atlr is served by *frontier* hosts).
DEFAULT_CVMFS_URLS = ("*/cvmfs/*",)
DEFAULT_FRONTIER_URLS = ("*frontier*", "*Frontier*")


class FallbackError(ValueError):
    """A [pac] fallback item that is neither DIRECT nor host[:port]."""


def parse_fallback(text: str) -> Tuple[str, ...]:
    """The site's fallback as PAC items (``PROXY host:port`` or ``DIRECT``), in order.

    Accepted, item by item (``;`` or ``,`` between items): ``DIRECT``, ``host``, ``host:port``,
    ``[v6]:port``, optionally written ``PROXY host:port`` or ``http://host:port`` (the forms a
    PAC file or CVMFS_HTTP_PROXY uses). The host is a DNS name of the shared rule or any IP
    literal (a site's own squid may well sit at a private address its workers reach).
    """
    items: List[str] = []
    for raw in text.replace(",", ";").split(";"):
        item = raw.strip()
        if not item:
            continue
        if item.upper() == "DIRECT":
            value = "DIRECT"
        else:
            if item.upper().startswith("PROXY "):
                item = item[6:].strip()
            if item.lower().startswith("http://"):
                item = item[7:].rstrip("/")
            value = "PROXY " + hostport(*_fallback_hostport(item))
        if value not in items:
            items.append(value)
    return tuple(items)


def _fallback_hostport(item: str) -> Tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif item.count(":") == 1:
        host, port_text = item.split(":")
    else:
        host, port_text = item, ""
    if not (is_hostname(host) or _is_ip(host)):
        raise FallbackError(f"{item!r}: not DIRECT, a host name or an IP address (with an optional :port)")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise FallbackError(f"{item!r}: invalid port")
    return host, int(port_text) if port_text else DEFAULT_PROXY_PORT


def _is_ip(text: str) -> bool:
    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def client_order(client_ip: Optional[str], group: Sequence[Tuple[str, int]]) -> List[Tuple[str, int]]:
    """The members of one group in ``client_ip``'s own order (rendezvous hashing).

    Each member's weight is a digest of (client, member): stable across fetches, servers and
    restarts (never Python's per-process ``hash``), uniform over a site's addresses. So every
    member comes first for an equal share of the workers, the workers of a failed member spread
    evenly over the others (a plain rotation would send them all to the next one), and a member
    joining or leaving moves only the workers that had it first.
    """
    if not client_ip or len(group) <= 1:
        return list(group)

    def weight(proxy: Tuple[str, int]) -> bytes:
        return hashlib.sha256(f"{client_ip}|{proxy[0]}:{proxy[1]}".encode("utf-8", "replace")).digest()

    return sorted(group, key=weight, reverse=True)


def rotate_groups(groups: Sequence[Sequence[Tuple[str, int]]], client_ip: Optional[str]) -> List[Tuple[str, int]]:
    """Flatten groups in rank order, each group's members in ``client_ip``'s order."""
    out: List[Tuple[str, int]] = []
    for group in groups:
        for proxy in client_order(client_ip, group):
            if proxy not in out:
                out.append(proxy)
    return out


@dataclasses.dataclass(frozen=True)
class Route:
    """One ``if`` of the PAC: URLs matching any of ``patterns`` go to ``proxies`` (in order)."""

    name: str
    patterns: Tuple[str, ...]
    proxies: Tuple[Tuple[str, int], ...]


def pac_value(proxies: Sequence[Tuple[str, int]], fallback: Sequence[str]) -> str:
    """The string FindProxyForURL returns: the caches, then the fallback items."""
    items = [f"PROXY {hostport(host, port)}" for host, port in proxies]
    items += [item for item in fallback if item not in items]
    return "; ".join(items)


def has_answer(routes: Sequence[Route], default: Sequence[Tuple[str, int]], fallback: Sequence[str]) -> bool:
    """False when no cache is known for any destination and no fallback is configured: the PAC
    must then not be served (CVMFS and Frontier move on to their next PAC URL on an HTTP error,
    as with the WLCG WPAD service; a PAC answering ``NONE`` would be fatal for Frontier)."""
    return bool(fallback) or bool(default) or any(route.proxies for route in routes)


def render_pac(routes: Sequence[Route], default: Sequence[Tuple[str, int]], fallback: Sequence[str],
               comment: str = "") -> str:
    """The PAC file: one ``if`` per route with caches, the default list for every other URL.

    A route with no cache of its kind is left out, so its URLs get the default list (every kind
    of cache, nearest first) and the fallback: better a cache that may serve them than ``NONE``
    (fatal for Frontier) or a DIRECT the site did not ask for.
    """
    lines = []
    if comment:
        lines.append("// " + comment.replace("\n", " ").replace("\r", " "))
    lines.append("function FindProxyForURL(url, host) {")
    for route in routes:
        if not route.proxies or not route.patterns:
            continue
        test = " || ".join(f"shExpMatch(url, {js_string(p)})" for p in route.patterns)
        lines.append(f"    if ({test}) {{")
        lines.append(f"        return {js_string(pac_value(route.proxies, fallback))};")
        lines.append("    }")
    lines.append(f"    return {js_string(pac_value(default, fallback))};")
    lines.append("}")
    return "\n".join(lines) + "\n"

