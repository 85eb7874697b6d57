"""AMQP settings, TLS context and connection parameters shared by server and agent.

This file is the single source; ``shoal_agent/amqp.py`` is a symlink to it. It may import
only the standard library, pika and ``inifile`` (also shared).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import ssl
from typing import List, Tuple

import pika
import pika.adapters.utils.connection_workflow
import pika.credentials
import pika.exceptions

from .inifile import ConfigError, setting, to_int, to_list, to_path

logger = logging.getLogger(__name__)

# The exchange exactly as 2014-2024 Shoal agents and servers declare it: a mismatch in any
# flag makes RabbitMQ close the channel with PRECONDITION_FAILED.
EXCHANGE_TYPE = "topic"
EXCHANGE_DURABLE = False
EXCHANGE_AUTO_DELETE = False
ROUTING_KEY = "info"
CONTENT_TYPE = "application/json"

# Every way opening or using a broker connection fails. pika's connection workflow raises
# AMQPConnectorStackTimeout (a hung handshake: the node accepts TCP and never answers) and its
# siblings, which are neither AMQPError nor OSError; an ``except`` that misses them ends in a
# traceback and a retry of the same hung broker forever. ssl.SSLError is an OSError.
BROKER_ERRORS = (pika.exceptions.AMQPError, pika.adapters.utils.connection_workflow.AMQPConnectorException,
                 OSError)


class DeadlineExceeded(pika.exceptions.AMQPConnectionError):
    """A broker did not answer in time (a confirm, a channel open, a declare); the connection is dropped."""


class Deadline:
    """Drop ``connection`` if the block does not finish within ``seconds``.

    pika's BlockingConnection waits without limit for a publisher confirm or an RPC reply; a
    node that is paused (SIGSTOP, a frozen VM) or a queue on such a node keeps the TCP
    connection alive and never answers. The timer runs inside pika's own I/O loop (where it
    processes the blocking wait) and terminates the stream, exactly as pika's AMQP heartbeat
    checker does, so the waiting call raises DeadlineExceeded instead of hanging.
    """

    def __init__(self, connection: pika.BlockingConnection, seconds: float, what: str) -> None:
        self._connection, self._seconds, self._what = connection, seconds, what
        self._timer: object = None
        self.expired = False

    def __enter__(self) -> "Deadline":
        if self._seconds > 0:
            self._timer = self._connection._impl.ioloop.call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self.expired = True
        impl = self._connection._impl
        if not impl.is_closed:
            impl._terminate_stream(DeadlineExceeded(f"no answer to {self._what} within {self._seconds:g} s"))

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None and not self.expired:
            try:
                self._connection._impl.ioloop.remove_timeout(self._timer)
            except (AttributeError, ValueError, KeyError):
                pass


@dataclasses.dataclass(frozen=True)
class RabbitSettings:
    """The ``[rabbitmq]`` section, the same keys for server and agent."""

    amqp_server_url: str = "localhost"
    amqp_port: int = setting(5672, to_int(1, 65535))
    amqp_servers: Tuple[str, ...] = setting((), to_list)
    amqp_virtual_host: str = "/"
    amqp_exchange: str = "shoal"
    use_ssl: bool = False
    amqp_ca_cert: str = setting("", to_path)
    amqp_client_cert: str = setting("", to_path)
    amqp_client_key: str = setting("", to_path)
    use_credentials: bool = False
    amqp_username: str = "guest"
    amqp_password: str = "guest"
    heartbeat: int = setting(30, to_int(0, 3600))
    connect_timeout: float = 10.0
    # Seconds to wait for a publisher confirm or a broker reply before the connection counts
    # as failed and the next broker of amqp_servers is tried; 0: connect_timeout (the agent
    # also keeps it under a third of its interval).
    confirm_timeout: float = 0.0
    # Seconds on a broker other than the first of amqp_servers before trying the first again
    # (spreading back after a failover); 0 never moves back.
    failback_interval: float = 60.0

    def reply_timeout(self) -> float:
        return self.confirm_timeout if self.confirm_timeout > 0 else self.connect_timeout

    def brokers(self) -> List[Tuple[str, int]]:
        """Return the brokers to try in order: ``amqp_servers`` if set, else the single URL."""
        if not self.amqp_servers:
            return [(_strip_scheme(self.amqp_server_url), self.amqp_port)]
        return [parse_hostport(item, self.amqp_port) for item in self.amqp_servers]

    def uses_external_auth(self) -> bool:
        """TLS without ``use_credentials`` authenticates with the certificate (SASL EXTERNAL)."""
        return self.use_ssl and not self.use_credentials

    def plain_login(self) -> Tuple[str, str]:
        """User name and password for PLAIN login: ours with ``use_credentials``, else guest/guest.

        Every upstream release since 0.9.5 reads ``amqp_username``/``amqp_password`` only when
        ``use_credentials = true`` and otherwise logs in as RabbitMQ's default guest user.
        """
        return (self.amqp_username, self.amqp_password) if self.use_credentials else GUEST_LOGIN

    def ignored_login(self) -> bool:
        """True when a user name or password is set but ``use_credentials`` is off, so unused."""
        return not self.use_credentials and (self.amqp_username, self.amqp_password) != GUEST_LOGIN


GUEST_LOGIN = ("guest", "guest")


def _strip_scheme(url: str) -> str:
    for scheme in ("amqps://", "amqp://"):
        if url.startswith(scheme):
            return url[len(scheme):].split("/", 1)[0].split(":", 1)[0]
    return url


def parse_hostport(item: str, default_port: int) -> Tuple[str, int]:
    """Split ``host``, ``host:port`` or ``[v6]:port`` into a pair; raise ValueError if malformed."""
    item = _strip_scheme(item.strip()) if "://" not in item else item.split("://", 1)[1].split("/", 1)[0]
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif item.count(":") == 1:
        host, port_text = item.split(":")
    else:
        host, port_text = item, ""
    if not host:
        raise ValueError(f"{item!r} has no host")
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError(f"{item!r} has an invalid port")
    return host, port


def check_settings(settings: RabbitSettings, path: str) -> None:
    """Fail at startup, naming the key, when TLS is on and a certificate file is unusable."""
    for key, name in (("amqp_servers", s) for s in settings.amqp_servers):
        try:
            parse_hostport(name, settings.amqp_port)
        except ValueError as err:
            raise ConfigError(path, "rabbitmq", key, str(err)) from None
    if settings.ignored_login():
        # INFO, not WARNING: upstream's own samples set a user name beside use_credentials = False.
        # Should the broker refuse guest, the refused login is logged at ERROR and names the user.
        logger.info("%s: [rabbitmq] amqp_username/amqp_password are not used without use_credentials = true: "
                       "%s (set use_credentials = true to log in with them)", path,
                       "the certificate logs in (SASL EXTERNAL)" if settings.use_ssl else "logging in as guest")
    if not settings.use_ssl:
        return
    needed = ["amqp_ca_cert"]
    if settings.uses_external_auth() or settings.amqp_client_cert or settings.amqp_client_key:
        needed += ["amqp_client_cert", "amqp_client_key"]
    for key in needed:
        value = getattr(settings, key)
        if not value:
            raise ConfigError(path, "rabbitmq", key, "must be set when use_ssl = true")
        if not os.access(value, os.R_OK) or not os.path.isfile(value):
            raise ConfigError(path, "rabbitmq", key, f"{value} is missing or unreadable")


def check_tls_files(settings: RabbitSettings, path: str) -> None:
    """Fail at startup, naming the key, when a TLS file exists but is not what it must be.

    Without this a garbage PEM or a key of another certificate surfaces only as "[SSL] PEM lib"
    on every reconnection attempt. Call after ``check_settings`` (which checks presence).
    """
    if not settings.use_ssl:
        return
    try:
        ssl.create_default_context(cafile=settings.amqp_ca_cert)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(path, "rabbitmq", "amqp_ca_cert",
                          f"{settings.amqp_ca_cert} holds no PEM CA certificate ({_ssl_reason(err)})") from None
    if not settings.amqp_client_cert:
        return
    try:
        ssl._ssl._test_decode_cert(settings.amqp_client_cert)  # type: ignore[attr-defined]
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(path, "rabbitmq", "amqp_client_cert",
                          f"{settings.amqp_client_cert} is not a PEM certificate ({_ssl_reason(err)})") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            settings.amqp_client_cert, settings.amqp_client_key or None, password=_no_password)
    except (ssl.SSLError, ValueError) as err:
        key = "amqp_client_key" if settings.amqp_client_key else "amqp_client_cert"
        raise ConfigError(path, "rabbitmq", key, f"{getattr(settings, key)} is not an unencrypted PEM private key "
                          f"matching amqp_client_cert ({_ssl_reason(err)})") from None


def _no_password() -> str:
    # A passphrase prompt would hang a daemon at start; encrypted keys are refused instead.
    raise ValueError("the key is encrypted")


def _ssl_reason(err: Exception) -> str:
    reason = getattr(err, "reason", None)
    if reason:
        return str(reason)
    return str(err.args[-1] if err.args else err).split(" (_ssl.c")[0]


def make_ssl_context(ca_cert: str, client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    """Return a TLS >= 1.2 client context that verifies the broker and presents our certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_cert)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if client_cert:
        context.load_cert_chain(client_cert, client_key or None)
    return context


def close_quietly(connection: pika.BlockingConnection, timeout: float) -> None:
    """Close a connection without waiting longer than ``timeout`` for a hung broker's close-ok; never raises."""
    if not connection.is_open:
        return
    try:
        with Deadline(connection, timeout, "connection.close"):
            connection.close()
    except BROKER_ERRORS:
        pass


def connection_params(settings: RabbitSettings, host: str, port: int) -> pika.ConnectionParameters:
    """Build pika parameters for one broker; TLS and EXTERNAL auth follow ``settings``."""
    credentials: pika.credentials.VALID_TYPES
    if settings.uses_external_auth():
        credentials = pika.credentials.ExternalCredentials()
    else:
        credentials = pika.PlainCredentials(*settings.plain_login())
    ssl_options = None
    if settings.use_ssl:
        context = make_ssl_context(settings.amqp_ca_cert, settings.amqp_client_cert, settings.amqp_client_key)
        ssl_options = pika.SSLOptions(context, server_hostname=host)
    return pika.ConnectionParameters(
        host=host,
        port=port,
        virtual_host=settings.amqp_virtual_host,
        credentials=credentials,
        ssl_options=ssl_options,
        heartbeat=settings.heartbeat,
        blocked_connection_timeout=settings.connect_timeout * 3,
        socket_timeout=settings.connect_timeout,
        # A hung handshake costs one connect_timeout per broker before the next is tried.
        stack_timeout=settings.connect_timeout,
        connection_attempts=1,
    )


def declare_exchange(channel: "pika.adapters.blocking_connection.BlockingChannel", name: str) -> None:
    """Make sure the Shoal exchange exists; create it (with the flags every release uses) only if missing.

    The check is a passive declare on a throwaway channel: it needs no permission, and a 404
    closes only that channel. So on a production broker (exchange defined at boot, agents and
    servers without the configure right, which would also allow deleting it) nothing is declared,
    while on a development broker the first client still creates the exchange.
    """
    probe = channel.connection.channel()
    try:
        probe.exchange_declare(exchange=name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as err:
        if err.reply_code != 404:
            raise
        channel.exchange_declare(exchange=name, exchange_type=EXCHANGE_TYPE,
                                 durable=EXCHANGE_DURABLE, auto_delete=EXCHANGE_AUTO_DELETE)
    else:
        probe.close()


def authenticated_user(settings: RabbitSettings) -> str:
    """Return the user name the broker will see: the certificate CN under EXTERNAL, else the login."""
    if settings.uses_external_auth():
        return certificate_cn(settings.amqp_client_cert)
    return settings.plain_login()[0]


def certificate_cn(cert_path: str) -> str:
    """Read the subject CN of a PEM certificate with the standard library only."""
    decoded = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
    for rdn in decoded.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise ValueError(f"{cert_path} has no subject CN")
