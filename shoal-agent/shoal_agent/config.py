"""shoal-agent configuration: typed sections with defaults, loaded explicitly by ``load_config``.

Detection work (addresses, interfaces, the state directory) happens later in its own modules;
this module only parses and checks what can be checked without touching the machine.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Optional

from .addresses import is_dns_name
from .amqp import RabbitSettings, check_settings
from .inifile import ConfigError, Schema, find_config, load_ini, setting, to_choice, to_float, to_int, to_path
from .logsetup import LoggingSettings

UPSTREAMS = ("cvmfs", "frontier", "both")
CACHE_TYPES = ("squid", "varnish")
LOAD_SOURCES = ("interface", "squid")


def to_ip(text: str) -> str:
    """An IPv4/IPv6 literal in canonical form, or '' when empty."""
    text = text.strip()
    if not text:
        return ""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if addr.is_unspecified or addr.is_multicast:
        raise ValueError(f"{text!r} is not a usable unicast address")
    return str(addr)


def to_dns_name(text: str) -> str:
    """A host name clients can resolve, or '' when empty."""
    text = text.strip()
    if text and not is_dns_name(text):
        raise ValueError(f"{text!r} is not a valid DNS host name")
    return text.rstrip(".").lower()


def to_interface(text: str) -> str:
    """A network interface name as the kernel allows it (no slash, at most 15 characters)."""
    text = text.strip()
    if text and (len(text) > 15 or "/" in text or text in (".", "..") or any(c.isspace() for c in text)):
        raise ValueError(f"{text!r} is not a network interface name")
    return text


def to_http_url(text: str) -> str:
    """An http:// URL (https:// for the check only), or '' when empty."""
    text = text.strip()
    if text and not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"{text!r} is not an http:// URL")
    return text


@dataclasses.dataclass(frozen=True)
class GeneralSettings:
    interval: float = setting(30.0, to_float(0.1, 3600))
    external_ip: str = setting("", to_ip)
    dnsname: str = setting("", to_dns_name)
    interface: str = setting("", to_interface)
    squid_port: int = setting(3128, to_int(1, 65535), aliases=("cache_port",))
    max_load: float = setting(122000.0, to_float(1e-9))
    upstream: str = setting("both", to_choice(*UPSTREAMS))
    cache_type: str = setting("squid", to_choice(*CACHE_TYPES))
    load_source: str = setting("interface", to_choice(*LOAD_SOURCES))
    state_dir: str = setting("", to_path)


@dataclasses.dataclass(frozen=True)
class SquidSettings:
    check_url: str = setting("", to_http_url)
    check_interval: float = setting(60.0, to_float(0.1, 86400))
    check_timeout: float = setting(10.0, to_float(0.1, 300))
    proxy_host: str = "127.0.0.1"
    manager_url: str = setting("", to_http_url)


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything shoal-agent reads from its INI file; ``path`` is where it came from."""

    general: GeneralSettings = GeneralSettings()
    squid: SquidSettings = SquidSettings()
    rabbitmq: RabbitSettings = RabbitSettings()
    logging: LoggingSettings = LoggingSettings()
    path: str = "(defaults)"

    @property
    def manager_url(self) -> str:
        """The Squid cache manager page with cumulative counters, unless one is configured."""
        if self.squid.manager_url:
            return self.squid.manager_url
        return f"http://{_url_host(self.squid.proxy_host)}:{self.general.squid_port}/squid-internal-mgr/counters"

    @property
    def expiration_ms(self) -> str:
        """The per-message AMQP expiration: twice the interval, in milliseconds, as AMQP wants it."""
        return str(max(1, int(round(self.general.interval * 2000))))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Keys of the 2014-2025 agents (hep-gc/shoal 0.7.1 ... master) that no longer mean anything here,
# each with what replaces it: old files load with one warning per key (tests/compat/configs/).
_NO_ACCESS_FLAGS = ("ignored: this agent sends no access flags; the server decides which clients get a cache "
                    "(verification and its policy)")
OBSOLETE = {
    "general.global_access": _NO_ACCESS_FLAGS,                          # 0.9.5-0.9.9
    "general.domain_access": _NO_ACCESS_FLAGS,                          # 0.9.5-0.9.9
    "general.access_level": _NO_ACCESS_FLAGS + "; for a cache no client may use, do not run the agent",  # 0.9.9
    "general.cloud": "ignored (no server ever used it)",                # 0.7.1-HEAD
    "general.admin_email": "ignored: the agent sends no mail; problems go to [logging] log_file",  # 1.0.x-HEAD
    "general.verified": "ignored: the server verifies caches itself ([cache] cache_verification)",
    "general.test_targeturl": "replaced by [squid] check_url",
    "general.load_factor": "ignored: [general] max_load is the ceiling in KB/s (the interface speed is not read)",
    "rabbitmq.amqp_exchange_type": "ignored: the exchange is always a non-durable topic exchange",
}

SCHEMA = Schema(
    sections={"general": GeneralSettings, "squid": SquidSettings, "rabbitmq": RabbitSettings,
              "logging": LoggingSettings},
    obsolete=OBSOLETE,
)


def load_config(path: Optional[str]) -> AgentConfig:
    """Read ``path`` (None: built-in defaults) and check what can be checked without I/O to peers."""
    sections = load_ini(path, SCHEMA)
    config = AgentConfig(path=path or "(defaults)", **sections)
    check_settings(config.rabbitmq, config.path)
    _check_proxy_host(config)
    return config


def _check_proxy_host(config: AgentConfig) -> None:
    host = config.squid.proxy_host.strip()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_dns_name(host):
            raise ConfigError(config.path, "squid", "proxy_host", f"{host!r} is not a host name or IP") from None


def locate_config(explicit: Optional[str] = None) -> Optional[str]:
    """--config, then $SHOAL_AGENT_CONFIG, then /etc/shoal, then ~/.shoal."""
    return find_config(explicit, "SHOAL_AGENT_CONFIG", "shoal_agent.conf")


__all__ = ["AgentConfig", "ConfigError", "GeneralSettings", "LoggingSettings", "SquidSettings",
           "load_config", "locate_config"]
