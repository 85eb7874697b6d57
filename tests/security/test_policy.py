"""The hostname policy: pure rules, the allow-list file, and its place in the per-message path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from shoal_server.consumer import ConsumerStatus, HeartbeatSink
from shoal_server.heartbeat import InvalidHeartbeat, Limits, parse_heartbeat
from shoal_server.inifile import ConfigError
from shoal_server.policy import HostnamePolicy, allowed, build_policy, parse_allow_list
from shoal_server.table import CacheTable

NOW = 1_700_000_000.0


def heartbeat(hostname, user_id, uuid="u1"):
    body = json.dumps({"uuid": uuid, "hostname": hostname, "squid_port": 3128, "public_ip": "142.90.100.7",
                       "load": 10, "timestamp": NOW}).encode()
    return parse_heartbeat(body, NOW, Limits(require_user_id=True), user_id)


def test_allow_list_format():
    grants = parse_allow_list("# comment\n\nsquid1.site.example  squid.site.example 142.90.2.10 # trailing\n"
                              "gw.other.example: A.other.example.\ngw.other.example b.other.example\n")
    assert grants == {"squid1.site.example": {"squid.site.example", "142.90.2.10"},
                      "gw.other.example": {"a.other.example", "b.other.example"}}


@pytest.mark.parametrize("text,message", [("lonely.example\n", ":1: 'lonely.example' is followed by no host name"),
                                          ("ok.example ok.example\nu <script>\n", ":2: '<script>' is not"),
                                          ("u bad/name.example\n", "'bad/name.example' is not"),
                                          ("u 127.0.0.1\n", "'127.0.0.1' is not")])
def test_allow_list_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=".*" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_allow_list(text, "allow.txt")


@pytest.mark.parametrize("user,host,ok", [
    ("squid1.site.example", "squid1.site.example", True),
    ("squid1.site.example", "SQUID1.site.example.", True),
    ("squid1.site.example", "squid.site.example", True),        # granted by the list
    ("squid1.site.example", "142.90.2.10", True),
    ("squid1.site.example", "squid2.site.example", False),
    ("gw.other.example", "squid.site.example", False),          # granted to another user
    (None, "squid1.site.example", False),                       # no authenticated user, no match
    ("", "squid1.site.example", False),
])
def test_allowed(user, host, ok):
    grants = {"squid1.site.example": frozenset({"squid.site.example", "142.90.2.10"})}
    assert allowed(user, host, grants) is ok


def test_policy_rejects_with_a_reason_naming_user_and_host():
    policy = HostnamePolicy()
    policy(heartbeat("squid1.site.example", "squid1.site.example"))
    with pytest.raises(InvalidHeartbeat) as info:
        policy(heartbeat("victim.example.org", "squid1.site.example"))
    assert info.value.reason == "hostname_mismatch"
    assert "squid1.site.example may not advertise victim.example.org" in str(info.value)


def test_allow_list_is_reloaded_when_it_changes_and_a_broken_edit_keeps_the_old_one(tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("agent.example a.example\n")
    clock = [0.0]
    policy = HostnamePolicy(str(path), reload_interval=10, clock=lambda: clock[0])
    assert allowed("agent.example", "a.example", policy.grants())
    path.write_text("agent.example b.example\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert not allowed("agent.example", "b.example", policy.grants())   # not re-checked before 10 s
    clock[0] = 11
    assert allowed("agent.example", "b.example", policy.grants())
    assert not allowed("agent.example", "a.example", policy.grants())
    path.write_text("agent.example bad_name!\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    clock[0] = 30
    assert allowed("agent.example", "b.example", policy.grants())


def test_build_policy(tmp_path):
    assert build_policy(False, "", "x.conf") is None
    assert isinstance(build_policy(True, "", "x.conf"), HostnamePolicy)
    with pytest.raises(ConfigError) as info:
        build_policy(True, str(tmp_path / "missing.txt"), "/etc/shoal/shoal_server.conf")
    assert str(info.value).startswith("/etc/shoal/shoal_server.conf: [security] grants: cannot read")
    bad = tmp_path / "bad.txt"
    bad.write_text("x.example\n")
    with pytest.raises(ConfigError, match="grants: .*bad.txt:1"):
        build_policy(True, str(bad), "s.conf")


class _NoGeo:
    def locate(self, address):
        return None


def test_sink_drops_what_the_policy_refuses_and_counts_it():
    table, status = CacheTable(), ConsumerStatus()
    sink = HeartbeatSink(table, _NoGeo(), Limits(require_user_id=True), status, clock=lambda: NOW,
                         policy=HostnamePolicy())
    good = {"uuid": "u1", "hostname": "squid1.site.example", "squid_port": 3128, "public_ip": "142.90.100.7",
            "load": 1, "timestamp": NOW}
    assert sink.handle(json.dumps(good).encode(), "squid1.site.example") is not None
    assert sink.handle(json.dumps({**good, "uuid": "u2", "hostname": "victim.example"}).encode(),
                       "squid1.site.example") is None
    assert [e.hb.hostname for e in table.snapshot()] == ["squid1.site.example"]
    assert status.counters()["dropped"] == {"hostname_mismatch": 1}


def test_server_refuses_to_start_with_an_unreadable_allow_list(tmp_path):
    conf = tmp_path / "shoal_server.conf"
    conf.write_text(f"[security]\nrequire_hostname_match = true\nhostname_allow_list = {tmp_path / 'nope.txt'}\n"
                    f"[general]\nport = 1\n")
    out = subprocess.run([sys.executable, "-m", "shoal_server", "--config", str(conf)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert f"{conf}: [security] grants: cannot read {tmp_path / 'nope.txt'}" in out.stderr
