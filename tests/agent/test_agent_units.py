"""Identity, backoff, the Squid check's state machine, the heartbeat builder and the signal flag."""
import os
import threading
import time

import pytest

from shoal_agent.addresses import Addresses
from shoal_agent.agent import retry_cap
from shoal_agent.heartbeat import build_heartbeat, encode
from shoal_agent.identity import StateDirError, load_or_create_uuid, read_uuid, resolve_state_dir
from shoal_agent.main import SignalFlag, run_daemon
from shoal_agent.publisher import Backoff
from shoal_agent.squidcheck import CheckResult, SquidCheck, proxy_url


def test_uuid_is_created_once_and_kept(tmp_path):
    first = load_or_create_uuid(str(tmp_path))
    assert load_or_create_uuid(str(tmp_path)) == first
    assert (tmp_path / "uuid").read_text().strip() == first
    assert [p.name for p in tmp_path.iterdir()] == ["uuid"]   # no temporary files left behind


def test_malformed_uuid_file_is_replaced(tmp_path):
    (tmp_path / "uuid").write_text("<script>\n")
    assert read_uuid(str(tmp_path)) is None
    fresh = load_or_create_uuid(str(tmp_path))
    assert fresh != "<script>" and read_uuid(str(tmp_path)) == fresh


def test_state_dir_falls_back_to_the_next_candidate(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    home = tmp_path / "home" / ".shoal"
    assert resolve_state_dir("", [str(blocker / "sub"), str(home)]) == str(home)
    assert home.is_dir()
    with pytest.raises(StateDirError, match="no writable state directory"):
        resolve_state_dir(str(blocker / "sub"))


def test_backoff_grows_with_jitter_and_is_capped():
    low = Backoff(cap=60, rand=lambda: 0.0)
    high = Backoff(cap=60, rand=lambda: 1.0)
    lows = [low.next() for _ in range(10)]
    highs = [high.next() for _ in range(10)]
    assert lows[:4] == pytest.approx([0.8, 1.6, 3.2, 6.4])
    assert highs[:4] == pytest.approx([1.2, 2.4, 4.8, 9.6])
    assert max(highs) == 60 and max(lows) == pytest.approx(48.0)
    low.reset()
    assert low.next() == pytest.approx(0.8) and low.failures == 1


def test_retry_cap_never_exceeds_the_interval_or_60_s():
    assert retry_cap(30) == 30
    assert retry_cap(300) == 60
    assert retry_cap(0.2) == 1.0


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_squid_check_runs_when_due_and_retries_every_interval_while_failing(caplog):
    clock = FakeClock()
    verdicts = [CheckResult(True, "HTTP 200"), CheckResult(False, "proxy unreachable"),
                CheckResult(False, "proxy unreachable"), CheckResult(True, "HTTP 200")]
    calls = []

    def fetch(url, proxy, timeout):
        calls.append(clock.now)
        return verdicts[len(calls) - 1]

    check = SquidCheck("http://origin/x", "http://127.0.0.1:3128", check_interval=60, timeout=5,
                       retry_interval=10, clock=clock, fetch=fetch)
    assert check.passing()                 # first use: checks before announcing
    clock.now = 30
    assert check.passing() and calls == [0]    # not due yet
    clock.now = 61
    assert not check.passing()
    clock.now = 65
    assert not check.passing() and len(calls) == 2
    clock.now = 71
    assert not check.passing() and len(calls) == 3   # failing: retried after retry_interval
    clock.now = 81
    assert check.passing()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2    # one when it broke, one when it recovered: no repeats
    assert "not announcing" in warnings[0] and "passes again" in warnings[1]


def test_disabled_check_always_passes():
    check = SquidCheck("", proxy_url("::1", 3128), 60, 5)
    assert not check.enabled and check.passing()
    assert proxy_url("::1", 3128) == "http://[::1]:3128"


def test_heartbeat_builder_fields():
    addresses = Addresses(public_ip="142.90.1.1", private_ip=None, external_ip=None, load_interfaces=("eth0",))
    data = build_heartbeat("abc", "squid.triumf.ca", 3128, addresses, load=12.3456789, max_load=1000,
                           timestamp=1700000000.123456)
    assert data == {"uuid": "abc", "hostname": "squid.triumf.ca", "squid_port": 3128, "cache_port": 3128,
                    "load": 12.346,
                    "max_load": 1000.0, "timestamp": 1700000000.123, "upstream": "both", "cache_type": "squid",
                    "agent_version": data["agent_version"], "public_ip": "142.90.1.1"}
    assert b'"private_ip"' not in encode(data)
    with pytest.raises(ValueError):
        encode({**data, "load": float("nan")})


def test_signal_handler_only_sets_a_flag_and_the_daemon_returns_promptly():
    flag = SignalFlag()
    stopped = threading.Event()

    class SlowAgent:
        def run(self, stop):
            stop.wait()
            stopped.set()

    timer = threading.Timer(0.3, flag.handle, args=(15, None))
    timer.start()
    start = time.monotonic()
    assert run_daemon(SlowAgent(), flag) == 0
    assert time.monotonic() - start < 2.0
    assert stopped.is_set() and flag.signum == 15


def test_daemon_does_not_wait_for_a_blocked_broker_call():
    flag = SignalFlag()

    class StuckAgent:
        def run(self, stop):
            time.sleep(30)   # e.g. a TCP connect to a black-holed broker

    threading.Timer(0.2, flag.handle, args=(15, None)).start()
    start = time.monotonic()
    assert run_daemon(StuckAgent(), flag) == 0
    assert time.monotonic() - start < 2.0


def test_state_files_are_private_to_the_state_dir(tmp_path):
    load_or_create_uuid(str(tmp_path))
    assert oct(os.stat(tmp_path / "uuid").st_mode & 0o777) == "0o644"
