"""shoal-server configuration: typed sections with defaults, loaded explicitly by ``load_config``."""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Dict, Optional, Tuple

from .amqp import RabbitSettings, check_settings, check_tls_files
from .inifile import (ConfigError, Schema, find_config, load_ini, setting, to_bool, to_choice, to_float, to_int,
                      to_list, to_path)
from .logsetup import LoggingSettings
from .pac import DEFAULT_CVMFS_URLS, DEFAULT_FRONTIER_URLS, parse_fallback



def _networks(text: str) -> Tuple[str, ...]:
    items = to_list(text)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return items


@dataclasses.dataclass(frozen=True)
class GeneralSettings:
    host: str = "127.0.0.1"
    port: int = setting(8080, to_int(1, 65535))
    geoip_database: str = setting("", to_path)
    geoip_check_interval: float = setting(30.0, to_float(0.1, 86400))
    trusted_proxies: Tuple[str, ...] = setting((), _networks)
    state_dir: str = setting("", to_path)
    snapshot_interval: float = setting(30.0, to_float(1, 86400))
    web_threads: int = setting(16, to_int(1, 256))
    status_page_size: int = setting(100, to_int(10, 10000))
    # The built-in HTTP front (httpfront.py); Apache's equivalents are in docs/deployment.md.
    http_request_timeout: float = setting(10.0, to_float(0.5, 300))
    http_idle_timeout: float = setting(5.0, to_float(0.5, 300))
    http_max_request_line: int = setting(8190, to_int(256, 65536))
    http_max_header_bytes: int = setting(16384, to_int(1024, 1048576))
    http_max_connections: int = setting(1000, to_int(10, 100000))


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    cache_cleanse_interval: float = setting(15.0, to_float(0.05, 3600), aliases=("squid_cleanse_interval",))
    cache_inactive_time: float = setting(180.0, to_float(0.1, 86400), aliases=("squid_inactive_time",))
    cache_verification: bool = setting(False, aliases=("squid_verification",))
    cache_verify_interval: float = setting(60.0, to_float(0.1, 86400), aliases=("squid_verify_interval",))
    verification_url: str = "/cvmfs/cvmfs-config.cern.ch/.cvmfspublished"
    verification_origin: str = ""
    verification_timeout: float = setting(5.0, to_float(0.1, 120))
    verification_concurrency: int = setting(8, to_int(1, 256))
    cache_max_load: float = setting(122000.0, to_float(1e-9), aliases=("squid_max_load",))
    cache_loadconstant: float = setting(1.0, to_float(0.01, 100), aliases=("squid_loadconstant",))
    cache_distloadweight: float = setting(0.5, to_float(0.0, 1.0), aliases=("squid_distloadweight",))
    cache_clock_drift: float = setting(60.0, to_float(0, 86400))
    # How far a heartbeat's timestamp may be behind or ahead of the server's clock before it is
    # refused (stale/future; replay protection). 0: the same as cache_inactive_time.
    heartbeat_window: float = setting(0.0, to_float(0, 86400))
    # Caches costing at most this much more than the best of their run (or at the same site) are
    # equally good: one `|` group for shoal-client, rotated per client in /wpad.dat (grouping.py).
    cache_group_margin: float = setting(0.02, to_float(0.0, 1.0))
    # How long expiry waits while no heartbeat at all arrives (a cluster-wide stall looks like
    # every cache dying at once) before it believes the silence; 0: 4 x cache_inactive_time.
    cache_silence_hold: float = setting(0.0, to_float(0, 7 * 86400))
    # The lost-minority guard: when at least this fraction of the established caches (and 3 or
    # more) fall silent together while others keep beating -- a cut-off broker node, not so many
    # deaths at once -- they are kept until silent for cache_silence_hold. 0: off.
    cache_mass_silence: float = setting(0.25, to_float(0.0, 1.0))

    def window(self) -> float:
        """The stale/future window in seconds."""
        return self.heartbeat_window or self.cache_inactive_time

    def silence_hold(self) -> float:
        return self.cache_silence_hold or 4 * self.cache_inactive_time


def _auto_bool(text: str) -> Optional[bool]:
    """``auto`` (or empty): decided by ``use_ssl``; otherwise a boolean."""
    return None if text.strip().lower() in ("", "auto") else to_bool(text)


@dataclasses.dataclass(frozen=True)
class SecuritySettings:
    """The ``[security]`` section; ``auto`` policies are on exactly when ``use_ssl = true``."""

    require_hostname_match: Optional[bool] = setting(None, _auto_bool)
    require_network_grant: Optional[bool] = setting(None, _auto_bool)
    grants: str = setting("", to_path, aliases=("hostname_allow_list",))
    max_uuids_per_identity: int = setting(4, to_int(1, 10000))
    legacy_agents: str = setting("refuse", to_choice("refuse", "accept"))
    legacy_users: Tuple[str, ...] = setting(("guest",), to_list)
    # Publish-rate bound (with use_ssl): per identity, and for all senders without one together.
    max_heartbeat_rate: float = setting(2.0, to_float(0.01, 100000))
    max_heartbeat_burst: float = setting(60.0, to_float(1, 1000000))
    legacy_heartbeat_rate: float = setting(200.0, to_float(0.01, 1000000))
    legacy_heartbeat_burst: float = setting(2000.0, to_float(1, 10000000))
    # Single-host labs and tests: serve loopback/private/documentation addresses. Never in production.
    lab_addresses: bool = False

    def hostname_match(self, use_ssl: bool) -> bool:
        return use_ssl if self.require_hostname_match is None else self.require_hostname_match

    def network_grant(self, use_ssl: bool) -> bool:
        return use_ssl if self.require_network_grant is None else self.require_network_grant

    def accept_legacy(self, use_ssl: bool) -> bool:
        """Legacy mode only means something with TLS (without it nothing carries an identity)."""
        return use_ssl and self.legacy_agents == "accept"


def _patterns(text: str) -> Tuple[str, ...]:
    items = to_list(text)
    for item in items:
        if any(c in item for c in "\"\\<>") or not item.isprintable():
            raise ValueError(f"{item!r}: a shExpMatch pattern may not hold quotes, backslashes or < >")
    return items


@dataclasses.dataclass(frozen=True)
class PacSettings:
    """/wpad.dat: which URLs go to which caches, how many, and what comes after them."""

    cvmfs_urls: Tuple[str, ...] = setting(DEFAULT_CVMFS_URLS, _patterns)
    frontier_urls: Tuple[str, ...] = setting(DEFAULT_FRONTIER_URLS, _patterns)
    # After the caches: nothing by default (no fleet stampeding to the stratum-1s), else e.g.
    # "squid.site.example:3128, DIRECT" (commas: ";" starts an INI comment). DIRECT only when written.
    fallback: Tuple[str, ...] = setting((), parse_fallback)
    caches: int = setting(5, to_int(1, 32))


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything shoal-server reads from its INI file; ``path`` is where it came from."""

    general: GeneralSettings = GeneralSettings()
    rabbitmq: RabbitSettings = RabbitSettings()
    cache: CacheSettings = CacheSettings()
    security: SecuritySettings = SecuritySettings()
    pac: PacSettings = PacSettings()
    logging: LoggingSettings = LoggingSettings()
    path: str = "(defaults)"


_GEOIP = "replaced by [general] geoip_database (the GeoLite2/GeoIP .mmdb or .dat file; nothing is downloaded)"
_BACKOFF = "ignored: the consumer retries for as long as the server runs, with a capped backoff"
_VERIFIED_DEFAULT = ("ignored: with [cache] cache_verification on, only the server's own check counts; "
                     "with it off, a cache's own 'verified' claim is used")
# Keys of upstream shoal_server.conf files of 2014-2025 that have no counterpart here.
OBSOLETE: Dict[str, str] = {
    "general.shoal_dir": "ignored: nothing is written outside [general] state_dir",
    "general.geolitecity_path": _GEOIP,
    "general.geolitecity_url": _GEOIP,
    "general.geolitecity_update": _GEOIP,
    "general.geolitecity_update_time": _GEOIP,
    "general.geodomain_path": "ignored: no domain database is used",
    "squid.squid_verified_default": _VERIFIED_DEFAULT,
    "cache.cache_verified_default": _VERIFIED_DEFAULT,
    "rabbitmq.amqp_exchange_type": "ignored: the exchange is always declared as topic, as every release did",
    "webpy": "ignored: there is no web.py template cache to switch",
    "error": _BACKOFF,
    "agentless": "ignored: agentless caches are not supported",
}

SCHEMA = Schema(
    sections={"general": GeneralSettings, "rabbitmq": RabbitSettings, "cache": CacheSettings,
              "security": SecuritySettings, "pac": PacSettings, "logging": LoggingSettings},
    # Files written for the 2014-2024 server keep working: [squid] squid_* maps onto [cache].
    legacy_sections={"squid": "cache"},
    obsolete=OBSOLETE,
)


def load_config(path: Optional[str]) -> ServerConfig:
    """Read ``path`` (None: built-in defaults) and check what can be checked without I/O to peers."""
    sections = load_ini(path, SCHEMA)
    config = ServerConfig(path=path or "(defaults)", **sections)
    check_settings(config.rabbitmq, config.path)
    check_tls_files(config.rabbitmq, config.path)
    return config


def locate_config(explicit: Optional[str] = None) -> Optional[str]:
    """--config, then $SHOAL_SERVER_CONFIG, then /etc/shoal, then ~/.shoal."""
    return find_config(explicit, "SHOAL_SERVER_CONFIG", "shoal_server.conf")


__all__ = ["ConfigError", "ServerConfig", "load_config", "locate_config"]
