"""The shipped conf/shoal.conf bounds requests and cuts slow senders under a real Apache httpd.

Apache + mod_wsgi is the production front (issue 14, item 4): LimitRequestLine,
LimitRequestFieldSize, LimitRequestFields and mod_reqtimeout's RequestReadTimeout are its
equivalents of the built-in front's limits and deadlines (docs/security.md, "HTTP front").
"""
from __future__ import annotations

import os
import re
import socket
import time

import pytest

from deploy.test_deploy_apache import APACHE, CONF_DIR, MODULES, Apache, apache_root  # noqa: F401
from support.hostile import Attack, probe_for, summary
from support.procs import write_ini
from support.tools import requires


def shipped() -> str:
    with open(os.path.join(CONF_DIR, "shoal.conf")) as fh:
        return fh.read()


def test_shoal_conf_sets_the_request_limits():
    text = shipped()
    assert re.search(r"^LimitRequestLine 8190$", text, re.M)
    assert re.search(r"^LimitRequestFieldSize 8190$", text, re.M)
    assert re.search(r"^LimitRequestFields 100$", text, re.M)
    block = re.search(r"<IfModule reqtimeout_module>\s*RequestReadTimeout ([^\n]+)\s*</IfModule>", text)
    assert block and "header=10-20,MinRate=500" in block.group(1)


def exchange_bytes(port: int, data: bytes, wait: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


@pytest.mark.integration
@requires("mod_wsgi", os.path.exists(APACHE) and os.path.exists(f"{MODULES}/mod_wsgi.so")
          and os.path.exists(f"{MODULES}/mod_reqtimeout.so"), "apache2 with mod_wsgi and mod_reqtimeout")
def test_apache_refuses_oversized_requests_and_cuts_slow_senders(apache_root, exchange):  # noqa: F811
    config_path = os.path.join(apache_root, "shoal_server.conf")
    write_ini(config_path, {"general": {}, "rabbitmq": {"amqp_server_url": "127.0.0.1", "amqp_port": 5672,
                                                        "amqp_exchange": exchange},
                            "logging": {"logging_level": "info"}})
    os.chmod(config_path, 0o644)
    apache = Apache(apache_root, config_path)
    with open(apache.conf) as fh:       # as on EL9, where 00-base.conf loads mod_reqtimeout
        conf = fh.read()
    with open(apache.conf, "w") as fh:
        fh.write(conf.replace("Include ", f"LoadModule reqtimeout_module {MODULES}/mod_reqtimeout.so\nInclude ", 1))
    try:
        apache.start()
        healthz = apache.url + "/healthz"
        assert summary(probe_for([healthz], 0.5, timeout=30)[healthz])["ok"] >= 1
        line = exchange_bytes(apache.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 10)
        assert line.startswith(b"HTTP/1.1 414 ")
        field = exchange_bytes(apache.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
                               b"\r\n\r\n", 10)
        assert field.startswith(b"HTTP/1.1 400 ")
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
        assert exchange_bytes(apache.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n",
                              10).startswith(b"HTTP/1.1 400 ")
        # 100 clients dripping one header line every 2 s: cut at ~10 s, /healthz answers meanwhile.
        attack = Attack("127.0.0.1", apache.port, slow=100, interval=2.0, duration=14.0)
        start = time.monotonic()
        attack.start()
        try:
            assert attack.ready.wait(20)
            results = probe_for([healthz], 12.0, pause=0.3, timeout=3.0)[healthz]
        finally:
            attack.stop()
            attack.join(10)
        s = summary(results)
        # Apache starts more worker processes for the 100 held workers (3 x 25 at start): one probe
        # may wait for that (measured: 1.4 s once), the rest answer in milliseconds.
        assert s["ok"] == s["n"] and s["max_s"] < 3.0 and s["median_s"] < 0.1, s
        print("apache /healthz under 100 slow senders:", s)
        assert attack.closed >= 100, (attack.closed, time.monotonic() - start)
    finally:
        apache.stop()
