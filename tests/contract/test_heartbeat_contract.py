"""The contract between agent and server: what shoal-agent sends, shoal-server's validator accepts as meant."""
import json
import subprocess
import sys
import time

import pytest

from shoal_agent.addresses import Addresses
from shoal_agent.heartbeat import build_heartbeat, encode
from shoal_server.heartbeat import Limits, parse_heartbeat
from support.procs import write_ini

CASES = {
    "public ipv4": Addresses("142.90.1.1", "10.0.0.5", None, ("eth0",)),
    "nat with external ip": Addresses(None, "10.0.0.5", "142.90.1.1", ("eth0",)),
    "ipv6 only": Addresses("2001:620:0:1b::1", "fd00::5", None, ("ens3",)),
    "public and external": Addresses("131.225.1.1", None, "142.90.1.1", ("eth0",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_built_heartbeats_validate_with_the_server_validator(name):
    addresses = CASES[name]
    now = time.time()
    data = build_heartbeat("0b8c0dc686f54e7a8643ca3fef184914", "squid.triumf.ca", 3129, addresses, load=812.5,
                           max_load=50000, timestamp=now, upstream="cvmfs", cache_type="squid")
    hb = parse_heartbeat(encode(data), now + 0.5, Limits(require_user_id=True), user_id="squid.triumf.ca")
    assert hb.uuid == data["uuid"] and hb.hostname == "squid.triumf.ca" and hb.squid_port == 3129
    assert hb.address == (addresses.external_ip or addresses.public_ip)
    assert (hb.public_ip, hb.private_ip, hb.external_ip) == (addresses.public_ip, addresses.private_ip,
                                                             addresses.external_ip)
    assert (hb.load, hb.max_load, hb.upstream, hb.cache_type) == (812.5, 50000.0, "cvmfs", "squid")
    assert hb.agent_version == data["agent_version"] and hb.user_id == "squid.triumf.ca"
    assert abs(hb.drift) < 1


def test_ip_literal_hostname_and_zero_load_validate():
    now = time.time()
    data = build_heartbeat("u-1", "2001:620:0:1b::1", 3128, CASES["ipv6 only"], 0.0, 122000, now)
    assert parse_heartbeat(encode(data), now).hostname == "2001:620:0:1b::1"


def test_dry_run_output_validates_with_the_server_validator(tmp_path):
    path = write_ini(str(tmp_path / "shoal_agent.conf"), {
        "general": {"external_ip": "142.90.1.1", "dnsname": "squid.contract.example.org", "cache_port": 3129,
                    "upstream": "frontier", "state_dir": str(tmp_path / "state")},
    })
    result = subprocess.run([sys.executable, "-m", "shoal_agent", "--config", path, "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    body = result.stdout.strip().encode()
    hb = parse_heartbeat(body, time.time())
    assert (hb.hostname, hb.squid_port, hb.external_ip, hb.upstream) == (
        "squid.contract.example.org", 3129, "142.90.1.1", "frontier")
    assert hb.load >= 0 and json.loads(body)["uuid"] == hb.uuid
