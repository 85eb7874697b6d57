"""shoal-ca, run as the installed console script: files, modes, extensions, refusals."""
from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SHOAL_CA = os.path.join(os.path.dirname(sys.executable), "shoal-ca")


def ca(ca_dir, *args, check=True):
    out = subprocess.run([SHOAL_CA, "--dir", str(ca_dir), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def openssl_verify(ca_dir, cert, purpose):
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca_dir / "ca.crt"), "-purpose", purpose, str(cert)],
                          capture_output=True, text=True, timeout=30)


def load(path):
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca"
    ca(path, "init")
    return path


def test_init_creates_private_ca(ca_dir):
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    cert = load(ca_dir / "ca.crt")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = ca(ca_dir, "init", check=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_agent_certificate_is_a_client_certificate_named_after_the_host(ca_dir):
    out = ca(ca_dir, "agent", "Squid1.Example.ORG.")
    crt, key = ca_dir / "agents" / "squid1.example.org.crt", ca_dir / "agents" / "squid1.example.org.key"
    assert f"wrote {key}" in out.stdout and "add-agent squid1.example.org" in out.stdout
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    cert = load(crt)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "squid1.example.org"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 365 <= days <= 900
    # Backdated, so a broker whose clock is a few minutes behind accepts a fresh certificate.
    now = datetime.datetime.now(datetime.timezone.utc)
    assert now - datetime.timedelta(minutes=6) < cert.not_valid_before_utc < now - datetime.timedelta(minutes=4)
    assert openssl_verify(ca_dir, crt, "sslclient").returncode == 0
    assert openssl_verify(ca_dir, crt, "sslserver").returncode != 0   # cannot impersonate the broker


def test_broker_certificate_carries_every_name(ca_dir):
    ca(ca_dir, "broker", "rabbit.example.org", "127.0.0.1", "::1", "--key-type", "rsa")
    crt = ca_dir / "brokers" / "rabbit.example.org.crt"
    san = load(crt).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["rabbit.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert openssl_verify(ca_dir, crt, "sslserver").returncode == 0


def test_expired_certificate_can_be_issued_and_does_not_verify(ca_dir):
    ca(ca_dir, "agent", "old.example.org", "--valid-from", "2020-01-01", "--days", "30")
    result = openssl_verify(ca_dir, ca_dir / "agents" / "old.example.org.crt", "sslclient")
    assert result.returncode != 0 and "expired" in result.stdout + result.stderr


@pytest.mark.parametrize("kind,name", [("agent", "../../etc/passwd"), ("agent", "-rf"), ("agent", "a b"),
                                       ("agent", "squid-.example.org"), ("agent", "127.0.0.1"),
                                       ("agent", "0.0.0.0"), ("agent", "::"), ("server", "../x"), ("broker", "x/y")])
def test_names_that_are_not_host_names_are_refused(ca_dir, kind, name):
    result = ca(ca_dir, kind, "--", name, check=False)
    assert result.returncode != 0
    assert not os.path.exists(ca_dir / (kind + "s") / (name + ".key"))


def test_one_name_holds_one_role(ca_dir):
    ca(ca_dir, "server", "shoal-server")
    result = ca(ca_dir, "agent", "shoal-server", check=False)
    assert result.returncode == 1 and "already has a server certificate" in result.stderr
    ca(ca_dir, "server", "shoal-server")   # renewing the same role is fine


def test_revoke_lists_the_serial_in_the_crl(ca_dir):
    ca(ca_dir, "agent", "gone.example.org")
    serial = load(ca_dir / "agents" / "gone.example.org.crt").serial_number
    out = ca(ca_dir, "revoke", "gone.example.org")
    assert "rabbitmq-shoal-users remove gone.example.org" in out.stdout
    with open(ca_dir / "crl.pem", "rb") as fh:
        crl = x509.load_pem_x509_crl(fh.read())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert "REVOKED" in ca(ca_dir, "list").stdout
    assert ca(ca_dir, "revoke", "gone.example.org", check=False).returncode == 1


def test_issuing_without_a_ca_says_how_to_make_one(tmp_path):
    result = ca(tmp_path / "none", "agent", "squid.example.org", check=False)
    assert result.returncode == 1 and "run 'shoal-ca" in result.stderr and "init" in result.stderr


def test_certificates_work_in_a_mutual_tls_handshake(ca_dir):
    """Broker and agent certificates complete a TLS handshake that authenticates both sides."""
    broker = ca_dir / "brokers" / "rabbit.example.org"
    agent = ca_dir / "agents" / "squid1.example.org"
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(f"{broker}.crt", f"{broker}.key")
    server_ctx.load_verify_locations(str(ca_dir / "ca.crt"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    seen = {}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()["subject"]
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.crt"))
        client_ctx.load_cert_chain(f"{agent}.crt", f"{agent}.key")
        with socket.create_connection(listener.getsockname()) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="rabbit.example.org") as tls:
                assert tls.recv(2) == b"ok"
        thread.join(10)
    assert (("commonName", "squid1.example.org"),) in seen["peer"]
