"""``shoal-ca``: the private certificate authority that decides who may speak on the Shoal broker.

RabbitMQ accepts only TLS clients whose certificate this CA signed, and maps the certificate's
common name (CN) to the broker user; so issuing a certificate is granting an identity. Built on
the ``cryptography`` package rather than an ``openssl`` subprocess: key files are created with
mode 0600 before any byte is written, extensions are set explicitly instead of through an
``openssl.cnf`` whose defaults differ between distributions, and errors arrive as exceptions.

Layout of the CA directory (``--dir``, default ``$SHOAL_CA_DIR`` or ``/etc/shoal/ca``)::

    ca.key  ca.crt  index.json  crl.pem  grants
    brokers/NAME.{crt,key}  servers/NAME.{crt,key}  agents/NAME.{crt,key}

``grants`` is the server's ``[security] grants`` file (host names, networks, uuids=N per agent
CN), written by ``shoal-ca agent NAME --network CIDR`` and ``shoal-ca grant``: the site's grant
is recorded where its certificate is issued. The directory is kept at mode 0700.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import ipaddress
import json
import os
import re
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .heartbeat import address_class, is_hostname

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]

DEFAULT_DIR = "/etc/shoal/ca"
KINDS = ("broker", "server", "agent")
CA_DAYS = 3650
LEAF_DAYS = 825          # a little over two years: renew with the same command before it runs out
CRL_DAYS = 30
CLOCK_SKEW = datetime.timedelta(minutes=5)
KEY_TYPES = ("ec", "rsa")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
CN_MAX = 64              # X.509 upper bound for a common name (RFC 5280 ub-common-name)
NAME_MAX = 253           # a DNS name


class CAError(Exception):
    """A problem the admin must fix; ``main`` prints it and exits with ``exit_code``."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class Issued:
    """One line of ``index.json``: what was signed, for whom, and whether it was revoked."""

    serial: int
    kind: str
    cn: str
    names: Tuple[str, ...]
    not_before: str
    not_after: str
    revoked: Optional[str] = None

    def as_json(self) -> Dict[str, object]:
        data = dataclasses.asdict(self)
        data["serial"] = format(self.serial, "x")
        data["names"] = list(self.names)
        return data

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "Issued":
        raw_names = data.get("names")
        names = tuple(str(n) for n in raw_names) if isinstance(raw_names, list) else ()
        return cls(serial=int(str(data["serial"]), 16), kind=str(data["kind"]), cn=str(data["cn"]), names=names,
                   not_before=str(data["not_before"]), not_after=str(data["not_after"]),
                   revoked=None if data.get("revoked") is None else str(data["revoked"]))


def new_key(key_type: str = "ec") -> PrivateKey:
    """Return a fresh private key: ECDSA P-256 (default) or RSA 3072."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise CAError(f"unknown key type {key_type!r} (use one of {', '.join(KEY_TYPES)})")


def _name(cn: str, org: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _key_usage(key: PrivateKey, ca: bool) -> x509.KeyUsage:
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=rsa_key and not ca, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)


def make_ca(key: PrivateKey, cn: str, now: datetime.datetime, days: int = CA_DAYS) -> x509.Certificate:
    """Self-sign a CA certificate that may sign leaf certificates only (path length 0)."""
    subject = _name(cn, "Shoal")
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))


def check_names(kind: str, names: Sequence[str]) -> Tuple[str, ...]:
    """Validate the names for a certificate; the first one becomes the CN (and the broker user)."""
    if kind not in KINDS:
        raise CAError(f"unknown certificate kind {kind!r}")
    if not names:
        raise CAError(f"a {kind} certificate needs a name")
    if kind == "server" and len(names) != 1:
        raise CAError("a server certificate has exactly one name")
    if kind == "agent" and len(names) != 1:
        raise CAError("an agent certificate has exactly one host name (issue one per Squid)")
    checked = []
    for name in names:
        if len(name.rstrip(".")) > NAME_MAX:
            raise CAError(f"{name[:40]!r}... has {len(name)} characters; a host name has at most {NAME_MAX}")
        ip = _ip(name)
        if kind == "agent" and ip is not None and not (ip.is_global and not ip.is_multicast):
            # A worker would be sent to this address as its proxy: loopback, private, link-local,
            # reserved or broadcast would make any local listener on that port the proxy.
            raise CAError(f"{name!r} is not a global unicast address; an agent's IP-literal name must be one")
        if kind == "server":
            ok, what = bool(_NAME_RE.match(name)), "a name of [A-Za-z0-9._-]"
        else:
            name = name[:-1] if name.endswith(".") and len(name) > 1 else name
            # An agent names the cache clients are sent to: the served host-name rule, IP literals
            # global unicast only. A broker may well listen on loopback or a private address.
            ok = is_hostname(name) or (kind != "agent" and address_class(name) != "invalid")
            what = ("a host name or global unicast IP address (docs/protocol.md, host-name rule)" if kind == "agent"
                    else "a host name or IP address")
        if not ok:
            raise CAError(f"{name!r} is not {what}")
        checked.append(name.lower() if kind != "server" else name)
    if len(checked[0]) > CN_MAX:
        raise CAError(f"{checked[0]!r} has {len(checked[0])} characters; a certificate CN (the broker user) has "
                      f"at most {CN_MAX}: use a shorter alias as the name and grant the long one "
                      f"(shoal-ca grant CN --name LONG)" if kind == "agent" else
                      f"{checked[0]!r} has {len(checked[0])} characters; a certificate CN has at most {CN_MAX} "
                      "(list the long name after a shorter first one)")
    return tuple(checked)


def _ip(name: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


# ---- grants ------------------------------------------------------------------------------------

def grant_tokens(names: Sequence[str], networks: Sequence[str], uuids: Optional[int]) -> List[str]:
    """Check and normalise what ``--name``/``--network``/``--uuids`` grant; the tokens of one grants line."""
    tokens = []
    for name in names:
        if not is_hostname(name.rstrip(".").lower()) or len(name.rstrip(".")) > NAME_MAX:
            raise CAError(f"--name {name!r} is not a host name")
        tokens.append(name.rstrip(".").lower())
    for text in networks:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise CAError(f"--network {text!r} is not a network (CIDR, e.g. 192.0.2.0/24)") from None
        tokens.append(str(net))
    if uuids is not None:
        if not 1 <= uuids <= 10000:
            raise CAError("--uuids must be 1-10000")
        tokens.append(f"uuids={uuids}")
    return tokens


def update_grants(text: str, cn: str, tokens: Sequence[str]) -> str:
    """Replace ``cn``'s line in a grants file's text (drop it when ``tokens`` is empty); keep the rest."""
    lines = [line for line in text.splitlines()
             if not (line.split("#", 1)[0].split() or [""])[0].rstrip(":") == cn]
    if tokens:
        lines.append(f"{cn:<30} {' '.join(tokens)}")
    return "\n".join(lines) + "\n" if lines else ""


def _tighten(path: str, mode: int) -> Optional[str]:
    """Remove permission bits beyond ``mode`` from an existing file or directory; say what changed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_mode & 0o777 & ~mode:
        os.chmod(path, st.st_mode & 0o777 & mode)
        return f"tightened {path} from {st.st_mode & 0o777:04o} to {st.st_mode & 0o777 & mode:04o}"
    return None


def issue(ca_key: PrivateKey, ca_cert: x509.Certificate, kind: str, names: Sequence[str], key: PrivateKey,
          start: datetime.datetime, days: int = LEAF_DAYS) -> x509.Certificate:
    """Sign a broker (TLS server) or server/agent (TLS client) certificate for ``names``."""
    names = check_names(kind, names)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
    public = key.public_key()
    builder = (x509.CertificateBuilder()
               .subject_name(_name(names[0], "Shoal " + kind)).issuer_name(ca_cert.subject)
               .public_key(public).serial_number(x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(start + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(key, ca=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if kind != "server":
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                        critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def not_before(cert: x509.Certificate) -> datetime.datetime:
    """Validity start as an aware UTC datetime (cryptography < 42 has only the naive attribute)."""
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def not_after(cert: x509.Certificate) -> datetime.datetime:
    """Validity end as an aware UTC datetime."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_crl(ca_key: PrivateKey, ca_cert: x509.Certificate, revoked: Sequence[Issued],
             now: datetime.datetime, days: int = CRL_DAYS) -> x509.CertificateRevocationList:
    """Sign a CRL listing ``revoked``; it must be re-signed (``shoal-ca crl``) before ``days`` pass."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + datetime.timedelta(days=days)))
    for item in revoked:
        when = datetime.datetime.fromisoformat(item.revoked or now.isoformat())
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(item.serial).revocation_date(when).build())
    return builder.sign(ca_key, hashes.SHA256())


# ---- files -------------------------------------------------------------------------------------

def _write(path: str, data: bytes, mode: int) -> None:
    """Write via a temp file created with ``mode`` (never world-readable, even briefly), then rename."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class CADirectory:
    """The CA's files on disk: key, certificate, index of issued certificates, CRL."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.key_path = os.path.join(path, "ca.key")
        self.cert_path = os.path.join(path, "ca.crt")
        self.index_path = os.path.join(path, "index.json")
        self.crl_path = os.path.join(path, "crl.pem")
        self.grants_path = os.path.join(path, "grants")
        self.notes: List[str] = []

    def exists(self) -> bool:
        return os.path.exists(self.key_path) or os.path.exists(self.cert_path)

    def init(self, cn: str, now: datetime.datetime, days: int, key_type: str) -> x509.Certificate:
        if self.exists():
            raise CAError(f"{self.path} already holds a CA; refusing to overwrite it")
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self.tighten()
        key = new_key(key_type)
        cert = make_ca(key, cn, now, days)
        _write(self.key_path, key_pem(key), 0o600)
        _write(self.cert_path, cert_pem(cert), 0o644)
        self.save_index([])
        self.write_crl(now)
        return cert

    def tighten(self) -> None:
        """An existing CA directory gets 0700 and its key 0600, whatever they were (e.g. 0777)."""
        for path, mode in ((self.path, 0o700), (self.key_path, 0o600)):
            note = _tighten(path, mode)
            if note:
                self.notes.append(note)

    def grant(self, cn: str, tokens: Sequence[str]) -> str:
        """Record ``cn``'s grant in the grants file (replacing its old line); return the file's path."""
        try:
            with open(self.grants_path) as fh:
                text = fh.read()
        except FileNotFoundError:
            text = "# shoal-server [security] grants, written by shoal-ca: CN  names networks uuids=N\n"
        _write(self.grants_path, update_grants(text, cn, tokens).encode(), 0o644)
        return self.grants_path

    def load(self) -> Tuple[PrivateKey, x509.Certificate]:
        self.tighten()
        try:
            with open(self.key_path, "rb") as fh:
                key = serialization.load_pem_private_key(fh.read(), password=None)
            with open(self.cert_path, "rb") as fh:
                cert = x509.load_pem_x509_certificate(fh.read())
        except FileNotFoundError:
            raise CAError(f"no CA in {self.path}: run 'shoal-ca --dir {self.path} init' first") from None
        except (OSError, ValueError) as err:
            raise CAError(f"cannot read the CA in {self.path}: {err}") from None
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise CAError(f"{self.key_path} is neither an EC nor an RSA key")
        return key, cert

    def index(self) -> List[Issued]:
        try:
            with open(self.index_path) as fh:
                return [Issued.from_json(item) for item in json.load(fh)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CAError(f"cannot read {self.index_path}: {err}") from None

    def save_index(self, items: Sequence[Issued]) -> None:
        text = json.dumps([i.as_json() for i in items], indent=1) + "\n"
        _write(self.index_path, text.encode(), 0o644)

    def issue(self, kind: str, names: Sequence[str], now: datetime.datetime, days: int, key_type: str,
              out_dir: Optional[str] = None) -> Tuple[str, str]:
        """Issue and record a certificate; return the (certificate, key) paths."""
        names = check_names(kind, names)
        cn = names[0]
        items = self.index()
        clash = [i for i in items if i.cn == cn and i.kind != kind and i.revoked is None]
        if clash:
            # The CN is the broker user name: one name must never hold two roles.
            article = "an" if clash[0].kind == "agent" else "a"
            raise CAError(f"{cn!r} already has {article} {clash[0].kind} certificate; a name holds one role only")
        ca_key, ca_cert = self.load()
        if days <= 0:
            raise CAError("--days must be positive")
        key = new_key(key_type)
        cert = issue(ca_key, ca_cert, kind, names, key, now, days)
        if not_after(cert) > not_after(ca_cert):
            raise CAError(f"the certificate would outlive the CA (expires {not_after(ca_cert):%Y-%m-%d}); "
                          "use a shorter --days")
        directory = out_dir or os.path.join(self.path, kind + "s")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        crt_path, key_path = (os.path.join(directory, f"{cn}.{ext}") for ext in ("crt", "key"))
        _write(key_path, key_pem(key), 0o600)
        _write(crt_path, cert_pem(cert), 0o644)
        items.append(Issued(serial=cert.serial_number, kind=kind, cn=cn, names=names,
                            not_before=not_before(cert).isoformat(),
                            not_after=not_after(cert).isoformat()))
        self.save_index(items)
        return crt_path, key_path

    def revoke(self, cn: str, now: datetime.datetime) -> List[Issued]:
        """Mark every live certificate of ``cn`` revoked and re-sign the CRL; return them."""
        items = self.index()
        hit = [i for i in items if i.cn == cn and i.revoked is None]
        if not hit:
            raise CAError(f"no unrevoked certificate for {cn!r} in {self.index_path}")
        stamp = now.isoformat()
        items = [dataclasses.replace(i, revoked=stamp) if i in hit else i for i in items]
        self.save_index(items)
        self.write_crl(now)
        return hit

    def write_crl(self, now: datetime.datetime) -> str:
        ca_key, ca_cert = self.load()
        crl = make_crl(ca_key, ca_cert, [i for i in self.index() if i.revoked], now)
        _write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return self.crl_path


# ---- command line ------------------------------------------------------------------------------

def _when(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date (YYYY-MM-DD[THH:MM])") from None
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shoal-ca", description="Private CA for the Shoal broker, server and agents.")
    parser.add_argument("--dir", default=os.environ.get("SHOAL_CA_DIR", DEFAULT_DIR),
                        help="CA directory (default: $SHOAL_CA_DIR or %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    def leaf(name: str, help_text: str, nargs: Union[str, int], metavar: str) -> None:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("names", nargs=nargs, metavar=metavar)
        p.add_argument("--days", type=int, default=LEAF_DAYS, help="validity in days (default %(default)s)")
        p.add_argument("--valid-from", type=_when, help="start of validity, ISO date (default: now)")
        p.add_argument("--out", help="write NAME.crt and NAME.key here instead of the CA directory")
        p.add_argument("--key-type", choices=KEY_TYPES, default="ec", help="ec = P-256 (default), rsa = 3072 bit")
        if name == "agent":
            grant_options(p)

    def grant_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--network", action="append", default=[], metavar="CIDR",
                       help="grant a network for the cache's public/external address (repeat for more)")
        p.add_argument("--name", action="append", default=[], metavar="HOSTNAME", dest="grant_names",
                       help="grant another host name the agent may advertise (repeat for more)")
        p.add_argument("--uuids", type=int, help="how many uuids the agent may hold (server default: 4)")

    p = sub.add_parser("init", help="create the CA key and self-signed certificate")
    p.add_argument("--cn", default="Shoal CA", help="CA common name (default %(default)s)")
    p.add_argument("--days", type=int, default=CA_DAYS, help="validity in days (default %(default)s)")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec")
    leaf("broker", "certificate for the RabbitMQ broker (TLS server), one SAN per name", "+", "HOSTNAME")
    leaf("server", "client certificate for a shoal-server (CN = NAME = its broker user)", 1, "NAME")
    leaf("agent", "client certificate for a shoal-agent (CN = the Squid's host name)", 1, "HOSTNAME")
    p = sub.add_parser("revoke", help="revoke every certificate of a CN and re-sign the CRL")
    p.add_argument("cn", metavar="NAME")
    p = sub.add_parser("grant", help="record (replace) what an agent CN may advertise in the grants file")
    p.add_argument("cn", metavar="CN")
    grant_options(p)
    sub.add_parser("crl", help="re-sign the CRL (it is valid for %d days)" % CRL_DAYS)
    sub.add_parser("list", help="show the issued certificates")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, now: datetime.datetime) -> List[str]:
    """Carry out one command; return the lines to print."""
    store = CADirectory(args.dir)
    if args.command == "init":
        cert = store.init(args.cn, now, args.days, args.key_type)
        return [f"created CA {args.cn!r} in {store.path}, valid until {not_after(cert):%Y-%m-%d}",
                f"distribute {store.cert_path} to the broker, the server and every agent ({'amqp_ca_cert'})"]
    if args.command in KINDS:
        # Backdated a little: a broker whose clock lags the CA's must not see "not yet valid".
        start = args.valid_from or now - CLOCK_SKEW
        cn = check_names(args.command, args.names)[0]
        tokens = (grant_tokens(args.grant_names, args.network, args.uuids)
                  if args.command == "agent" else [])
        crt, key = store.issue(args.command, args.names, start, args.days, args.key_type, args.out)
        lines = store.notes + [f"wrote {crt}", f"wrote {key} (mode 0600: copy it to the host securely, never by mail)"]
        if tokens:
            lines.append(f"granted {cn}: {' '.join(tokens)} in {store.grant(cn, tokens)} "
                         "(copy it to the server's [security] grants file)")
        elif args.command == "agent":
            lines.append(f"no network granted: with use_ssl the server drops {cn}'s heartbeats until "
                         f"'shoal-ca grant {cn} --network CIDR'")
        if args.command in ("agent", "server"):
            lines.append(f"next, on the broker: rabbitmq-shoal-users add-{args.command} {cn}")
        return lines
    if args.command == "grant":
        cn = check_names("agent", [args.cn])[0]
        tokens = grant_tokens(args.grant_names, args.network, args.uuids)
        store.tighten()
        path = store.grant(cn, tokens)
        return store.notes + [f"granted {cn}: {' '.join(tokens) or '(nothing: line removed)'} in {path}"]
    if args.command == "revoke":
        gone = store.revoke(args.cn, now)
        return [f"revoked {len(gone)} certificate(s) of {args.cn!r}; CRL re-signed at {store.crl_path}",
                f"to cut it off now, on the broker: rabbitmq-shoal-users remove {args.cn}"]
    if args.command == "crl":
        return [f"re-signed {store.write_crl(now)}"] + store.notes
    rows = [f"{i.kind:6} {i.cn:40} until {i.not_after[:10]} {'REVOKED ' + i.revoked[:10] if i.revoked else ''}".rstrip()
            for i in store.index()]
    return rows or ["no certificates issued yet"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        lines = run(args, datetime.datetime.now(datetime.timezone.utc))
    except CAError as err:
        print(f"shoal-ca: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"shoal-ca: {err}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
