"""A private TLS-only RabbitMQ node configured like production, with a throwaway Shoal CA.

The node runs ``shoal-server/conf/rabbitmq.conf`` (only file paths and the port are rewritten)
and its users are made by ``shoal-server/conf/rabbitmq-shoal-users``; certificates come from
``shoal-ca``. So tests, the demo and the benchmarks exercise the shipped broker setup::

    with TLSBroker(str(tmp_path / "broker")) as broker:
        server = broker.add_server("shoal-server")       # cert + broker user
        agent = broker.add_agent("squid1.example.org")
        ini = broker.rabbitmq_section(server)              # [rabbitmq] for shoal-server/-agent
        conn = pika.BlockingConnection(broker.params(agent))

``add_agents(*names)`` registers several at once (one broker command); ``networks=`` grants
them networks through ``shoal-ca --network`` (the grants file is ``grants_path``, for the
server's ``[security] grants``). ``TLSBroker(dir, legacy=True)`` applies the shipped
``rabbitmq-legacy.conf`` (plain listener on ``plain_port``, PLAIN logins) for legacy agents, whose
logins ``add_legacy(name, password)`` creates. ``issue`` makes a
certificate without a broker user (e.g. expired ones via ``valid_from``), ``foreign_identity``
one from an unrelated CA, ``users(...)`` runs the shipped user script, ``log()`` reads the broker
log (TLS alerts, refused logins, channel errors). ``TLSBroker(dir, classic=TERMS)`` runs a
classic Erlang-terms config instead. Everything lives under ``base_dir``; ``stop`` stops the
node by PID. Start one per test module: a node takes 10-30 s to boot.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import os
import ssl
import subprocess
from contextlib import redirect_stdout
from typing import Dict, List, Optional, Sequence

import pika

from shoal_server import ca as shoal_ca
from shoal_server.amqp import RabbitSettings, connection_params

from .rabbitnode import RABBIT_BIN, RabbitNode, free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONF_DIR = os.path.join(REPO, "shoal-server", "conf")
RABBITMQ_CONF = os.path.join(CONF_DIR, "rabbitmq.conf")
DEFINITIONS = os.path.join(CONF_DIR, "rabbitmq-definitions.json")
USERS_SCRIPT = os.path.join(CONF_DIR, "rabbitmq-shoal-users")
LEGACY_CONF = os.path.join(CONF_DIR, "rabbitmq-legacy.conf")
PLUGINS = ["rabbitmq_auth_mechanism_ssl"]
HOST = "127.0.0.1"
EXCHANGE = "shoal"


@dataclasses.dataclass(frozen=True)
class Identity:
    """A certificate and its key; ``cn`` is the broker user name it logs in as."""

    cn: str
    cert: str
    key: str


def run_ca(*argv: str) -> str:
    """Run ``shoal-ca`` in-process (the same code as the console script); return its output."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = shoal_ca.main(list(argv))
    if code != 0:
        raise RuntimeError(f"shoal-ca {' '.join(argv)} exited with {code}")
    return out.getvalue()


def make_ca(ca_dir: str, cn: str = "Shoal test CA") -> str:
    """Create a CA in ``ca_dir``; return the path of its certificate."""
    run_ca("--dir", ca_dir, "init", "--cn", cn)
    return os.path.join(ca_dir, "ca.crt")


def issue(ca_dir: str, kind: str, name: str, *extra_names: str, days: Optional[int] = None,
          valid_from: Optional[str] = None, networks: Sequence[str] = ()) -> Identity:
    """Issue a certificate with ``shoal-ca``; ``valid_from`` (ISO date) allows expired ones."""
    argv = ["--dir", ca_dir, kind, name, *extra_names]
    for net in networks:
        argv += ["--network", net]
    if days is not None:
        argv += ["--days", str(days)]
    if valid_from is not None:
        argv += ["--valid-from", valid_from]
    run_ca(*argv)
    folder = os.path.join(ca_dir, kind + "s")
    return Identity(cn=name, cert=os.path.join(folder, name + ".crt"), key=os.path.join(folder, name + ".key"))


def production_config(ca_cert: str, broker_cert: str, broker_key: str, definitions: str, tls_port: int,
                      source: str = RABBITMQ_CONF) -> str:
    """The shipped rabbitmq.conf with its file paths and TLS port pointed at this test node."""
    replacements = {
        "listeners.ssl.default": f"{HOST}:{tls_port}",
        "ssl_options.cacertfile": ca_cert,
        "ssl_options.certfile": broker_cert,
        "ssl_options.keyfile": broker_key,
        "definitions.local.path": definitions,
    }
    lines = []
    with open(source) as fh:
        for line in fh:
            key = line.split("=", 1)[0].strip()
            if key in replacements and not line.lstrip().startswith("#"):
                line = f"{key} = {replacements.pop(key)}\n"
            lines.append(line)
    if replacements:
        raise ValueError(f"{source} lacks {', '.join(replacements)}")
    return "".join(lines)


def classic_config(terms: str, ca_cert: str, broker_cert: str, broker_key: str, definitions: str,
                   tls_port: int) -> str:
    """A classic Erlang-terms rabbitmq.config (as docs/security.md shows it) pointed at this test node."""
    replacements = {
        "{ssl_listeners, [5671]}": f'{{ssl_listeners, [{{"{HOST}", {tls_port}}}]}}',
        '"/etc/rabbitmq/shoal/ca.crt"': f'"{ca_cert}"',
        '"/etc/rabbitmq/shoal/broker.crt"': f'"{broker_cert}"',
        '"/etc/rabbitmq/shoal/broker.key"': f'"{broker_key}"',
        '"/etc/rabbitmq/shoal-definitions.json"': f'"{definitions}"',
    }
    for old, new in replacements.items():
        if old not in terms:
            raise ValueError(f"the classic config lacks {old}")
        terms = terms.replace(old, new)
    return terms


def legacy_config(plain_port: int, source: str = LEGACY_CONF) -> str:
    """The shipped rabbitmq-legacy.conf with its plain listener on this test node's port."""
    with open(source) as fh:
        text = fh.read()
    line = "listeners.tcp.default = 5672"
    if line not in text:
        raise ValueError(f"{source} lacks {line!r}")
    return text.replace(line, f"listeners.tcp.default = {HOST}:{plain_port}")


class ClassicRabbitNode(RabbitNode):
    """A RabbitNode configured by a classic ``rabbitmq.config`` (Erlang terms) instead of rabbitmq.conf."""

    def __init__(self, base_dir: str, terms: str, **kwargs: object) -> None:
        super().__init__(base_dir, **kwargs)  # type: ignore[arg-type]
        self.terms = terms

    @property
    def env(self) -> Dict[str, str]:
        env = super().env
        env["RABBITMQ_CONFIG_FILE"] = os.path.join(self.base_dir, "rabbitmq.config")
        return env

    def _write_files(self) -> None:
        super()._write_files()
        os.remove(os.path.join(self.base_dir, "rabbitmq.conf"))
        with open(os.path.join(self.base_dir, "rabbitmq.config"), "w") as fh:
            fh.write(self.terms)


class TLSBroker:
    """A private RabbitMQ node that speaks only TLS with certificate (EXTERNAL) logins.

    ``classic``: run this Erlang-terms ``rabbitmq.config`` text (with the production paths and
    port 5671, as in docs/security.md) instead of the shipped rabbitmq.conf.
    """

    def __init__(self, base_dir: str, classic: Optional[str] = None, plain_login: bool = False,
                 legacy: bool = False) -> None:
        """``plain_login`` also opens a plain listener with PLAIN login (benchmarks compare the two);
        ``legacy`` applies the shipped rabbitmq-legacy.conf as docs/security.md says."""
        self.base_dir = base_dir
        self.classic = classic
        self.plain_login = plain_login
        self.legacy = legacy
        self.ca_dir = os.path.join(base_dir, "ca")
        self.ca_cert = os.path.join(self.ca_dir, "ca.crt")
        self.host = HOST
        self.exchange = EXCHANGE
        self.port = free_port()
        self._plain_port = free_port()
        self.node: Optional[RabbitNode] = None

    @property
    def plain_port(self) -> int:
        """The port a plain AMQP listener would use; the shipped config keeps it closed."""
        assert self.node is not None
        return self.node.amqp_port

    def start(self) -> "TLSBroker":
        os.makedirs(self.base_dir, exist_ok=True)
        make_ca(self.ca_dir)
        broker = issue(self.ca_dir, "broker", "localhost", HOST, "::1")
        definitions = os.path.join(self.base_dir, "shoal-definitions.json")
        with open(DEFINITIONS) as src, open(definitions, "w") as dst:
            dst.write(src.read())
        node_dir = os.path.join(self.base_dir, "node")
        if self.classic is None:
            config = production_config(self.ca_cert, broker.cert, broker.key, definitions, self.port)
            if self.plain_login or self.legacy:
                config = "\n".join(line for line in config.splitlines() if not line.startswith("listeners.tcp ="))
            if self.legacy:
                config += "\n" + legacy_config(self._plain_port)
            elif self.plain_login:
                config += "\nauth_mechanisms.2 = PLAIN\n"
            self.node = RabbitNode(node_dir, config=config, plugins=PLUGINS, tls_port=self.port,
                                   plain_listener=self.plain_login or self.legacy, amqp_port=self._plain_port)
        else:
            terms = classic_config(self.classic, self.ca_cert, broker.cert, broker.key, definitions, self.port)
            self.node = ClassicRabbitNode(node_dir, terms, plugins=PLUGINS, tls_port=self.port,
                                          plain_listener=False)
        self.node.start()
        try:
            self.users("setup")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            node.stop()

    def __enter__(self) -> "TLSBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- identities -------------------------------------------------------------------------

    def issue(self, kind: str, name: str, days: Optional[int] = None, valid_from: Optional[str] = None) -> Identity:
        """A certificate from this broker's CA, without a broker user."""
        return issue(self.ca_dir, kind, name, days=days, valid_from=valid_from)

    def add_agent(self, name: str, networks: Sequence[str] = ()) -> Identity:
        """Certificate plus a broker user that may only publish to the shoal exchange."""
        return self.add_agents(name, networks=networks)[name]

    def add_agents(self, *names: str, networks: Sequence[str] = ()) -> Dict[str, Identity]:
        """Several agents at once (one broker command for all the users); keyed by CN."""
        idents = {name: issue(self.ca_dir, "agent", name, networks=networks) for name in names}
        self.users("add-agent", *names)
        return idents

    @property
    def grants_path(self) -> str:
        """The grants file shoal-ca keeps in the CA directory (for ``[security] grants``)."""
        return os.path.join(self.ca_dir, "grants")

    def add_legacy(self, name: str, password: str) -> None:
        """A password login for upstream agents (``rabbitmq-shoal-users legacy``)."""
        self.users("legacy", name, password)

    def legacy_params(self, name: str, password: str, tls: bool = False) -> pika.ConnectionParameters:
        """Connect as an upstream agent does: PLAIN, no client certificate; plain port or (0.7.1) TLS."""
        ssl_options = None
        if tls:
            context = ssl.create_default_context(cafile=self.ca_cert)
            ssl_options = pika.SSLOptions(context, server_hostname="localhost")
        return pika.ConnectionParameters(self.host, self.port if tls else self.plain_port,
                                         credentials=pika.PlainCredentials(name, password),
                                         ssl_options=ssl_options, connection_attempts=1, socket_timeout=5)

    def add_server(self, name: str = "shoal-server") -> Identity:
        """Certificate plus a broker user that may only consume through its own queue."""
        ident = self.issue("server", name)
        self.users("add-server", name)
        return ident

    def foreign_identity(self, kind: str, name: str) -> Identity:
        """A certificate with the same kind of name, signed by an unrelated CA."""
        other = os.path.join(self.base_dir, "other-ca")
        if not os.path.exists(os.path.join(other, "ca.crt")):
            make_ca(other, cn="Shoal CA")   # same CN as a real one: only the key differs
        return issue(other, kind, name)

    def users(self, *args: str) -> str:
        """Run the shipped ``rabbitmq-shoal-users`` against this node."""
        assert self.node is not None
        env = dict(self.node.env)
        env["RABBITMQCTL"] = f"{os.path.join(RABBIT_BIN, 'rabbitmqctl')} -n {self.node.name}"
        out = subprocess.run(["sh", USERS_SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmq-shoal-users {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    # -- how clients connect -----------------------------------------------------------------

    def rabbitmq_section(self, ident: Optional[Identity], **overrides: object) -> Dict[str, object]:
        """The ``[rabbitmq]`` INI section for a server or agent logging in as ``ident``."""
        section: Dict[str, object] = {
            "amqp_server_url": self.host, "amqp_port": self.port, "amqp_exchange": self.exchange,
            "use_ssl": "true", "amqp_ca_cert": self.ca_cert, "connect_timeout": 5,
        }
        if ident is not None:
            section.update(amqp_client_cert=ident.cert, amqp_client_key=ident.key)
        section.update(overrides)
        return section

    def settings(self, ident: Optional[Identity]) -> RabbitSettings:
        return RabbitSettings(amqp_server_url=self.host, amqp_port=self.port, amqp_exchange=self.exchange,
                              use_ssl=True, amqp_ca_cert=self.ca_cert, connect_timeout=5.0,
                              amqp_client_cert=ident.cert if ident else "",
                              amqp_client_key=ident.key if ident else "")

    def params(self, ident: Optional[Identity]) -> pika.ConnectionParameters:
        """pika parameters through ``shoal_server.amqp.connection_params``, as server and agent build them."""
        return connection_params(self.settings(ident), self.host, self.port)

    def log(self) -> str:
        """The broker's log so far (where refused handshakes and channel errors are explained)."""
        assert self.node is not None or os.path.isdir(self.base_dir)
        path = os.path.join(self.base_dir, "node", "log", "rabbit.log")
        try:
            with open(path, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def log_lines_since(self, offset: int) -> List[str]:
        return self.log()[offset:].splitlines()


def valid_from_past(days_ago: int = 400) -> str:
    """An ISO date ``days_ago`` days back, for issuing certificates that have already expired."""
    day = datetime.date.today() - datetime.timedelta(days=days_ago)
    return day.isoformat()


__all__ = ["TLSBroker", "ClassicRabbitNode", "Identity", "classic_config", "issue", "make_ca", "production_config", "run_ca", "valid_from_past"]
