"""The agent beside a real Squid on loopback: check_url gates announcements, and Squid's counters give the load."""
import time
import urllib.request

import pytest

from agenthelp import dry_run_heartbeat, entries, wait_until
from support.squid import Origin, Squid, squid_binary
from support.tools import requires

pytestmark = requires("squid", squid_binary() is not None)

BIG = 2_000_000


@pytest.fixture
def origin():
    server = Origin({"/check": b"squid is serving\n", "/big": b"x" * BIG}).start()
    yield server
    server.stop()


@pytest.fixture
def squid(tmp_path, origin):
    proxy = Squid(str(tmp_path / "squid"))
    proxy.start(origin.port)
    yield proxy
    proxy.close()


def through(squid, url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": squid.proxy_url}))
    with opener.open(url, timeout=30) as response:
        return len(response.read())


def test_check_url_gates_announcements_as_squid_stops_and_starts(squid, origin, server_factory, agent_factory):
    server = server_factory(cache={"cache_inactive_time": 2, "cache_cleanse_interval": 0.25})
    agent = agent_factory(general={"interval": 0.5, "squid_port": squid.port},
                          squid={"check_url": origin.url("/check"), "check_interval": 0.5, "check_timeout": 3})
    agent.start()
    wait_until(lambda: entries(server), 15, what="agent announced while the check passes")
    uuid = agent.uuid
    assert "/check" in origin.requests, "the check never reached the origin"
    assert "/check" in squid.access_log(), "the check did not go through Squid"

    squid.stop()
    stopped_at = time.time()
    last = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        record = entries(server).get(uuid)
        if record is None:
            break
        last = record["last_active"]
        time.sleep(0.1)
    else:
        raise AssertionError("the server still lists the cache long after Squid stopped")
    # Nothing was announced after Squid went away (one heartbeat may have been in flight).
    assert last is None or last <= stopped_at + 1.0, (last, stopped_at)
    assert "not announcing until it passes" in agent.log()

    squid.start(origin.port)
    wait_until(lambda: uuid in entries(server), 15, what="announcements resumed after Squid restarted")
    assert "passes again" in agent.log()
    assert agent.alive and "Traceback" not in agent.log()


def test_failing_check_means_no_heartbeat(squid, origin, agent_factory):
    agent = agent_factory(general={"squid_port": squid.port}, squid={"check_url": origin.url("/missing")})
    result = agent.run("--once")
    assert result.returncode == 1
    assert "check_url" in result.stderr and "HTTP 404" in result.stderr
    dry = agent.run("--dry-run")
    assert dry.returncode == 1 and "would not announce" in dry.stderr


def test_load_source_squid_reads_the_real_squid_counters(squid, origin, server_factory, agent_factory):
    server = server_factory(cache={"cache_inactive_time": 120})
    agent = agent_factory(general={"squid_port": squid.port, "load_source": "squid", "interval": 30})
    start1 = time.time()
    first = agent.run("--once")
    end1 = time.time()
    assert first.returncode == 0, first.stderr + agent.log()
    sent = sum(through(squid, origin.url("/big")) for _ in range(2))
    time.sleep(0.5)
    start2 = time.time()
    second = agent.run("--once")
    end2 = time.time()
    assert second.returncode == 0, second.stderr + agent.log()
    assert "cannot measure load" not in agent.log()

    kbytes = sent / 1024
    low, high = kbytes / (end2 - start1), kbytes * 1.05 / (start2 - end1)

    def refreshed():
        record = entries(server).get(agent.uuid)
        return record if record and record["load"] > 0 else None

    record = wait_until(refreshed, 15, what="second heartbeat listed")
    assert low <= record["load"] <= high, (low, record["load"], high)


def test_squid_5min_page_is_read_as_a_rate(squid, agent_factory):
    agent = agent_factory(general={"squid_port": squid.port, "load_source": "squid"},
                          squid={"manager_url": squid.manager_url("5min")})
    data = dry_run_heartbeat(agent.run("--dry-run"))
    assert data["load"] == 0.0          # a fresh Squid's five-minute average
    assert "cannot measure load" not in agent.log()
