"""shoal-ca (issue 14 items 1 and 8): name lengths, a loose CA directory, IP-literal agent names, grants."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from shoal_server import ca
from shoal_server.policy import parse_grants


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = ca.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ca_dir(tmp_path):
    path = str(tmp_path / "ca")
    assert run("--dir", path, "init")[0] == 0
    return path


@pytest.mark.parametrize("length", [65, 100, 253])
def test_long_names_are_refused_with_a_message_not_a_traceback(tmp_path, ca_dir, length):
    labels, name = [], ""
    while len(name) < length:
        labels.append("a" * min(63, length - len(name) - (1 if labels else 0) - 4) or "a")
        name = ".".join(labels) + ".org"
    name = name[:length]
    assert len(name) == length
    # the console script, as an admin would run it: exit 1, one line, no traceback
    out = subprocess.run([sys.executable, "-m", "shoal_server.ca", "--dir", ca_dir, "agent", name],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"has {length} characters; a certificate CN (the broker user) has at most 64" in out.stderr
    assert not os.path.exists(os.path.join(ca_dir, "agents", name + ".crt"))


def test_names_beyond_253_characters_are_not_host_names(ca_dir):
    code, _, err = run("--dir", ca_dir, "broker", "rabbit.example.org", "a" * 60 + "." + "b" * 60 + "." + "c" * 60
                       + "." + "d" * 60 + ".example.org")
    assert code == 1 and "at most 253" in err


def test_a_64_character_name_still_works(ca_dir):
    name = "s" * 52 + ".example.org"
    assert len(name) == 64
    assert run("--dir", ca_dir, "agent", name)[0] == 0


def test_an_existing_world_writable_ca_directory_is_tightened(tmp_path):
    path = tmp_path / "ca"
    path.mkdir()
    os.chmod(path, 0o777)
    code, out, _ = run("--dir", str(path), "init")
    assert code == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.chmod(path, 0o777)
    os.chmod(path / "ca.key", 0o644)
    code, out, _ = run("--dir", str(path), "agent", "squid.site.example")
    assert code == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path / "ca.key").st_mode) == 0o600
    assert f"tightened {path} from 0777 to 0700" in out


@pytest.mark.parametrize("name", ["127.0.0.1", "0.0.0.0", "::", "::1", "10.1.2.3", "192.168.1.1",
                                  "169.254.1.1", "255.255.255.255", "240.0.0.1", "224.0.0.1", "fd00::1",
                                  "fe80::1", "192.0.2.10", "2001:db8::1"])
def test_agent_certificates_for_non_global_ip_literals_are_refused(ca_dir, name):
    code, _, err = run("--dir", ca_dir, "agent", name)
    assert code == 1
    assert "is not a global unicast address" in err


@pytest.mark.parametrize("name", ["188.184.10.20", "2001:1458:201::1"])
def test_agent_certificates_for_global_ip_literals_are_issued(ca_dir, name):
    assert run("--dir", ca_dir, "agent", name)[0] == 0


def test_the_broker_may_still_have_loopback_names(ca_dir):
    assert run("--dir", ca_dir, "broker", "localhost", "127.0.0.1", "::1")[0] == 0


def test_issuing_an_agent_records_its_grant_for_the_server(ca_dir):
    code, out, _ = run("--dir", ca_dir, "agent", "squid.cern.ch", "--network", "188.184.0.0/15",
                       "--network", "2001:1458::/32", "--name", "squid-alias.cern.ch", "--uuids", "2")
    assert code == 0
    grants_path = os.path.join(ca_dir, "grants")
    assert f"in {grants_path}" in out
    with open(grants_path) as fh:
        grants = parse_grants(fh.read(), grants_path)
    grant = grants["squid.cern.ch"]
    assert grant.names == {"squid-alias.cern.ch"} and grant.max_uuids == 2
    assert grant.covers("188.185.1.1") and grant.covers("2001:1458:1::1") and not grant.covers("81.2.69.1")
    # a later grant replaces the line; other lines stay
    assert run("--dir", ca_dir, "agent", "squid.uvic.ca", "--network", "142.104.0.0/16")[0] == 0
    assert run("--dir", ca_dir, "grant", "squid.cern.ch", "--network", "188.184.0.0/16")[0] == 0
    with open(grants_path) as fh:
        grants = parse_grants(fh.read())
    assert set(grants) == {"squid.cern.ch", "squid.uvic.ca"}
    assert not grants["squid.cern.ch"].covers("188.185.1.1") and grants["squid.cern.ch"].max_uuids is None


def test_an_agent_without_a_network_is_told_what_the_server_will_do(ca_dir):
    code, out, _ = run("--dir", ca_dir, "agent", "squid.site.example")
    assert code == 0 and "no network granted" in out


@pytest.mark.parametrize("network", ["not-a-net/33", "10.0.0.0/40", "2001:db8::/200"])
def test_grants_of_malformed_networks_are_refused(ca_dir, network):
    code, _, err = run("--dir", ca_dir, "grant", "squid.site.example", "--network", network)
    assert code == 1 and "--network" in err
