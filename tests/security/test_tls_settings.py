"""TLS settings fail at start, naming the key, instead of as an endless "[SSL] PEM lib" retry loop."""
from __future__ import annotations

import ssl
import subprocess
import sys

import pytest

from shoal_server.amqp import RabbitSettings, make_ssl_context
from shoal_server.config import ConfigError, load_config
from support.procs import write_ini
from support.tlsbroker import issue, make_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(str(root / "ca"))
    server = issue(str(root / "ca"), "server", "shoal-server")
    other = issue(str(root / "ca"), "agent", "squid.example.org")
    garbage = root / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    encrypted = root / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", server.key, "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    return {"ca": ca, "cert": server.cert, "key": server.key, "other_key": other.key, "garbage": str(garbage),
            "encrypted": str(encrypted)}


def conf(tmp_path, **rabbitmq):
    return write_ini(str(tmp_path / "shoal_server.conf"), {"rabbitmq": {"use_ssl": "true", **rabbitmq}})


def test_valid_files_load(tmp_path, pki):
    config = load_config(conf(tmp_path, amqp_ca_cert=pki["ca"], amqp_client_cert=pki["cert"],
                              amqp_client_key=pki["key"]))
    assert config.rabbitmq.uses_external_auth()


@pytest.mark.parametrize("files,key,words", [
    ({"amqp_ca_cert": "garbage"}, "amqp_ca_cert", "holds no PEM CA certificate"),
    ({"amqp_client_cert": "garbage"}, "amqp_client_cert", "is not a PEM certificate"),
    ({"amqp_client_cert": "ca", "amqp_client_key": "key"}, "amqp_client_key", "KEY_VALUES_MISMATCH"),
    ({"amqp_client_key": "other_key"}, "amqp_client_key", "matching amqp_client_cert"),
    ({"amqp_client_key": "encrypted"}, "amqp_client_key", "encrypted"),
    ({"amqp_client_key": "garbage"}, "amqp_client_key", "is not an unencrypted PEM private key"),
])
def test_unusable_files_name_the_key(tmp_path, pki, files, key, words):
    chosen = {"amqp_ca_cert": "ca", "amqp_client_cert": "cert", "amqp_client_key": "key", **files}
    path = conf(tmp_path, **{k: pki[v] for k, v in chosen.items()})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: [rabbitmq] {key}: ")
    assert words in str(info.value)


def test_server_exits_2_with_one_line(tmp_path, pki):
    path = conf(tmp_path, amqp_ca_cert=pki["ca"], amqp_client_cert=pki["cert"], amqp_client_key=pki["encrypted"])
    out = subprocess.run([sys.executable, "-m", "shoal_server", "--config", path], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"shoal-server: {path}: [rabbitmq] amqp_client_key: {pki['encrypted']} is not an unencrypted PEM private "
        f"key matching amqp_client_cert (the key is encrypted)"]


def test_context_requires_tls12_verification_and_host_name(pki):
    context = make_ssl_context(pki["ca"], pki["cert"], pki["key"])
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    settings = RabbitSettings(use_ssl=True, amqp_ca_cert=pki["ca"], amqp_client_cert=pki["cert"],
                              amqp_client_key=pki["key"])
    assert settings.uses_external_auth()
