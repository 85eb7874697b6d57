"""Identity policy: what an authenticated agent may advertise, and what a legacy one may not.

The broker guarantees a heartbeat's ``user_id`` is the publisher's user, which under SASL
EXTERNAL is its certificate CN. The grants file says what each identity may claim beyond that::

    # certificate CN            what it may advertise (host names, networks, uuids=N)
    squid1.site.example         squid.site.example 142.90.0.0/16 2001:1458::/32
    gateway.other.example:      squid-a.other.example squid-b.other.example 206.12.0.0/16 uuids=8

A token with ``/`` is a network (CIDR) for the cache's ``public_ip`` and ``external_ip``;
``uuids=N`` raises the identity's uuid limit; anything else is a host name it may advertise
besides its CN. With TLS the server binds identity to place by default (docs/security.md):

- ``require_hostname_match``: the host name must be the CN or granted to it (``hostname_mismatch``);
- ``require_network_grant``: every public address must lie in a network granted to the CN
  (``address_not_granted``); an identity with no networks can therefore publish nothing;
- ``max_uuids_per_identity``: an identity holds at most that many uuids (``too_many_uuids``,
  enforced by the table, which knows what each identity holds).

Heartbeats without an identity (legacy agents, ``[security] legacy_agents = accept``) may not
advertise a name that the grants file gives to anyone, nor any identity's CN (``hostname_reserved``).

The file is re-read when it changes (checked at most every ``reload_interval`` seconds), so
sites can be added without restarting the server; a broken edit keeps the previous grants.
The server never sees the agent's certificate (only the broker does), which is why grants live
in a file the server reads rather than in a certificate extension.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import threading
import time
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

from .heartbeat import Heartbeat, InvalidHeartbeat, is_hostname
from .inifile import ConfigError

logger = logging.getLogger(__name__)

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
DEFAULT_MAX_UUIDS = 4
MAX_UUIDS_CEILING = 10000


@dataclasses.dataclass(frozen=True)
class Grant:
    """What one identity may advertise besides its own CN."""

    names: FrozenSet[str] = frozenset()
    networks: Tuple[Network, ...] = ()
    max_uuids: Optional[int] = None

    def covers(self, address: str) -> bool:
        """True when ``address`` lies in one of the granted networks."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)


Grants = Mapping[str, Grant]
# Kept for callers of the host-name-only API: CN -> granted names.
AllowList = Mapping[str, FrozenSet[str]]


def normalise(name: str) -> str:
    """Compare host names the way the validator stores them: lower case, no trailing dot."""
    return name.rstrip(".").lower()


def parse_grants(text: str, source: str = "grants") -> Dict[str, Grant]:
    """Parse ``CN token...`` lines (``#`` comments, blank lines ignored); raise ValueError naming the line."""
    names: Dict[str, set] = {}
    networks: Dict[str, List[Network]] = {}
    limits: Dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        user, tokens = fields[0].rstrip(":"), fields[1:]
        if not tokens:
            raise ValueError(f"{source}:{number}: {user!r} is followed by no host name, network or uuids=N")
        names.setdefault(user, set())
        networks.setdefault(user, [])
        for token in tokens:
            if token.lower().startswith("uuids="):
                value = token.split("=", 1)[1]
                if not value.isdigit() or not 1 <= int(value) <= MAX_UUIDS_CEILING:
                    raise ValueError(f"{source}:{number}: {token!r}: uuids must be 1-{MAX_UUIDS_CEILING}")
                limits[user] = int(value)
            elif "/" in token:
                try:
                    networks[user].append(ipaddress.ip_network(token, strict=False))
                except ValueError:
                    raise ValueError(f"{source}:{number}: {token!r} is not a network (CIDR)") from None
            elif is_hostname(normalise(token)):  # what may be granted is what may be served
                names[user].add(normalise(token))
            else:
                raise ValueError(f"{source}:{number}: {token!r} is not a host name, network or uuids=N")
    return {user: Grant(frozenset(names[user]), tuple(networks[user]), limits.get(user)) for user in names}


def parse_allow_list(text: str, source: str = "allow-list") -> Dict[str, FrozenSet[str]]:
    """The host names of ``parse_grants`` per CN (the file format before networks existed)."""
    return {user: grant.names for user, grant in parse_grants(text, source).items()}


def allowed(user: Optional[str], hostname: str, grants: Mapping[str, object]) -> bool:
    """True when ``user`` may advertise ``hostname``: it is the user's own name or granted to it."""
    if not user:
        return False
    host = normalise(hostname)
    grant = grants.get(user)
    granted = grant.names if isinstance(grant, Grant) else (grant or frozenset())
    return host == normalise(user) or host in granted  # type: ignore[operator]


class IdentityPolicy:
    """The ``HeartbeatSink`` policy hook: raise InvalidHeartbeat when a heartbeat claims too much."""

    def __init__(self, grants_path: str = "", reload_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, require_hostname_match: bool = True,
                 require_network_grant: bool = False, max_uuids: Optional[int] = None,
                 legacy: bool = False) -> None:
        self.path = grants_path
        self.legacy = legacy
        self.require_hostname_match = require_hostname_match
        self.require_network_grant = require_network_grant
        self.max_uuids = max_uuids
        self._interval, self._clock = reload_interval, clock
        self._lock = threading.Lock()
        self._grants: Grants = {}
        self._reserved: FrozenSet[str] = frozenset()
        self._mtime: Optional[float] = None
        self._checked = clock()
        self.generation = 0   # changes whenever the grants do, so the table can be re-checked
        if grants_path:
            self._set(*self._read())

    def _read(self) -> Tuple[Grants, float]:
        with open(self.path) as fh:
            mtime = os.fstat(fh.fileno()).st_mtime
            return parse_grants(fh.read(), self.path), mtime

    def _set(self, grants: Grants, mtime: float) -> None:
        reserved = set(normalise(user) for user in grants)
        for grant in grants.values():
            reserved.update(grant.names)
        self._grants, self._mtime, self._reserved = grants, mtime, frozenset(reserved)
        self.generation += 1

    def grants(self) -> Grants:
        """The current grants, re-read first if the file changed."""
        if not self.path:
            return self._grants
        with self._lock:
            now = self._clock()
            if now - self._checked >= self._interval:
                self._checked = now
                self._maybe_reload()
            return self._grants

    def _maybe_reload(self) -> None:
        try:
            if os.stat(self.path).st_mtime == self._mtime:
                return
            self._set(*self._read())
            logger.info("reloaded identity grants %s (%d identities)", self.path, len(self._grants))
        except (OSError, ValueError) as err:
            logger.error("keeping the previous identity grants: %s", err)

    def uuid_limit(self, hb: Heartbeat) -> Optional[int]:
        """How many uuids the heartbeat's identity may hold (None: unlimited or no identity)."""
        if not hb.authenticated or not hb.user_id:
            return None
        grant = self.grants().get(hb.user_id)
        if grant is not None and grant.max_uuids is not None:
            return grant.max_uuids
        return self.max_uuids

    def __call__(self, hb: Heartbeat) -> None:
        grants = self.grants()
        if not hb.authenticated:
            if self.legacy:
                # A legacy sender has no identity to bind; it may only use names nobody was granted.
                if hb.hostname in self._reserved:
                    raise InvalidHeartbeat("hostname_reserved",
                                           f"{hb.hostname} is granted to an authenticated identity")
                return
            if self.require_hostname_match:
                raise InvalidHeartbeat("hostname_mismatch", f"no identity may advertise {hb.hostname}")
            if self.require_network_grant:
                raise InvalidHeartbeat("address_not_granted", "a heartbeat without identity has no grant")
            return
        grant = grants.get(hb.user_id or "", Grant())
        if self.require_hostname_match and not allowed(hb.user_id, hb.hostname, grants):
            raise InvalidHeartbeat("hostname_mismatch",
                                   f"user {hb.user_id or '(none)'!s} may not advertise {hb.hostname}")
        if self.require_network_grant:
            for address in (hb.public_ip, hb.external_ip):
                if address and not grant.covers(address):
                    raise InvalidHeartbeat("address_not_granted",
                                           f"user {hb.user_id} has no network grant for {address}")


# The name this class had when it checked host names only.
HostnamePolicy = IdentityPolicy


def build_policy(require_hostname_match: bool, allow_list_path: str, config_path: str,
                 require_network_grant: bool = False, max_uuids: Optional[int] = None,
                 legacy: bool = False, key: str = "grants") -> Optional[IdentityPolicy]:
    """Return the policy the ``[security]`` section asks for, or None; fail naming the key."""
    if not (require_hostname_match or require_network_grant or max_uuids or legacy):
        if allow_list_path:
            logger.warning("[security] %s is ignored: no identity policy is on (use_ssl is false)", key)
        return None
    try:
        return IdentityPolicy(allow_list_path, require_hostname_match=require_hostname_match,
                              require_network_grant=require_network_grant, max_uuids=max_uuids, legacy=legacy)
    except OSError as err:
        raise ConfigError(config_path, "security", key,
                          f"cannot read {allow_list_path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(config_path, "security", key, str(err)) from None
