"""Identity policy: which host names an authenticated agent may advertise.

The broker guarantees a heartbeat's ``user_id`` is the publisher's user, which under SASL
EXTERNAL is its certificate CN. With ``[security] require_hostname_match = true`` an agent may
only advertise its own CN as host name, or a name the allow-list file grants to that CN::

    # certificate CN            host names it may also advertise
    squid1.site.example         squid.site.example 142.90.2.10
    gateway.other.example       squid-a.other.example squid-b.other.example

The file is re-read when it changes (checked at most every ``reload_interval`` seconds), so
sites can be added without restarting the server; a broken edit keeps the previous list.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from .heartbeat import Heartbeat, InvalidHeartbeat, is_hostname
from .inifile import ConfigError

logger = logging.getLogger(__name__)

AllowList = Mapping[str, FrozenSet[str]]


def normalise(name: str) -> str:
    """Compare host names the way the validator stores them: lower case, no trailing dot."""
    return name.rstrip(".").lower()


def parse_allow_list(text: str, source: str = "allow-list") -> Dict[str, FrozenSet[str]]:
    """Parse ``CN name...`` lines (``#`` comments, blank lines ignored); raise ValueError naming the line."""
    grants: Dict[str, set] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        user, names = fields[0].rstrip(":"), fields[1:]
        if not names:
            raise ValueError(f"{source}:{number}: {user!r} is followed by no host name")
        for name in names:
            if not is_hostname(normalise(name)):  # what may be granted is what may be served
                raise ValueError(f"{source}:{number}: {name!r} is not a host name or global IP address")
        grants.setdefault(user, set()).update(normalise(n) for n in names)
    return {user: frozenset(names) for user, names in grants.items()}


def allowed(user: Optional[str], hostname: str, grants: AllowList) -> bool:
    """True when ``user`` may advertise ``hostname``: it is the user's own name or granted to it."""
    if not user:
        return False
    host = normalise(hostname)
    return host == normalise(user) or host in grants.get(user, frozenset())


class HostnamePolicy:
    """The ``HeartbeatSink`` policy hook: raise InvalidHeartbeat('hostname_mismatch') when not allowed."""

    def __init__(self, allow_list_path: str = "", reload_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = allow_list_path
        self._interval, self._clock = reload_interval, clock
        self._lock = threading.Lock()
        self._grants: AllowList = {}
        self._mtime: Optional[float] = None
        self._checked = clock()
        if allow_list_path:
            self._grants, self._mtime = self._read()

    def _read(self) -> Tuple[AllowList, float]:
        with open(self.path) as fh:
            mtime = os.fstat(fh.fileno()).st_mtime
            return parse_allow_list(fh.read(), self.path), mtime

    def grants(self) -> AllowList:
        """The current allow-list, re-read first if the file changed."""
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
            self._grants, self._mtime = self._read()
            logger.info("reloaded hostname allow-list %s (%d users)", self.path, len(self._grants))
        except (OSError, ValueError) as err:
            logger.error("keeping the previous hostname allow-list: %s", err)

    def __call__(self, hb: Heartbeat) -> None:
        if not allowed(hb.user_id, hb.hostname, self.grants()):
            raise InvalidHeartbeat("hostname_mismatch",
                                   f"user {hb.user_id or '(none)'!s} may not advertise {hb.hostname}")


def build_policy(require_hostname_match: bool, allow_list_path: str, config_path: str) -> Optional[HostnamePolicy]:
    """Return the policy the ``[security]`` section asks for, or None; fail naming the key."""
    if not require_hostname_match:
        if allow_list_path:
            logger.warning("[security] hostname_allow_list is ignored: require_hostname_match is false")
        return None
    try:
        return HostnamePolicy(allow_list_path)
    except OSError as err:
        raise ConfigError(config_path, "security", "hostname_allow_list",
                          f"cannot read {allow_list_path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(config_path, "security", "hostname_allow_list", str(err)) from None
