"""Load arithmetic: counter deltas, resets, averaging over the interval, and the readers' formats."""
import os

import pytest

from shoal_agent.load import (KIB, InterfaceLoad, LoadError, LoadMeter, Sample, counter_delta, info_url,
                              parse_kbytes_out, parse_uptime, rate, read_tx_bytes, since_start)

DATA = os.path.join(os.path.dirname(__file__), "data")


def page(name):
    with open(os.path.join(DATA, name)) as handle:
        return handle.read()


@pytest.mark.parametrize("previous, current, expected", [
    (1000, 1000, 0),             # idle
    (1000, 5096, 4096),          # normal growth
    (2**32 - 10, 2**32 + 90, 100),  # 64-bit counters simply keep growing
    (5_000_000, 300, 300),       # reset (driver reload, interface re-created): count from zero
    (2**32 - 100, 50, 50),       # a 32-bit wrap looks like a reset: never a negative or huge load
])
def test_counter_delta(previous, current, expected):
    assert counter_delta(previous, current) == expected


def test_rate_is_the_average_over_the_whole_interval():
    # 30 MB sent in a burst somewhere inside a 30 s interval: the average is 1 MB/s, whatever
    # second a sampling agent would have looked at.
    assert rate(Sample(100.0, 0), Sample(130.0, 30 * 1024 * 1024)) == pytest.approx(1024 * 1024)


@pytest.mark.parametrize("elapsed", [0.0, -5.0, 7200.0])
def test_rate_refuses_pairs_that_cannot_give_a_fair_average(elapsed):
    # A clock stepping back, or a reading older than max_gap, says nothing about the current load.
    assert rate(Sample(1000.0, 0), Sample(1000.0 + elapsed, 10_000), max_gap=3600) is None


def test_since_start():
    assert since_start(10 * KIB, 10.0) == KIB
    assert since_start(100, 0.0) is None


def test_meter_first_reading_has_no_rate_then_averages_each_interval():
    meter = LoadMeter(scale=1 / KIB)
    assert meter.update({"eth0": 1_000_000}, now=0.0) is None
    assert meter.update({"eth0": 1_000_000 + 30 * 512 * KIB}, now=30.0) == pytest.approx(512.0)
    assert meter.update({"eth0": 1_000_000 + 30 * 512 * KIB}, now=60.0) == 0.0


def test_meter_counter_reset_counts_from_zero():
    meter = LoadMeter(scale=1 / KIB)
    meter.update({"eth0": 900 * KIB * 1000}, now=0.0)
    assert meter.update({"eth0": 20 * KIB * 10}, now=10.0) == pytest.approx(20.0)


def test_meter_reports_the_busiest_interface():
    meter = LoadMeter(scale=1 / KIB)
    meter.update({"eth0": 0, "eth1": 0}, now=0.0)
    assert meter.update({"eth0": 10 * KIB * 10, "eth1": 300 * KIB * 10}, now=10.0) == pytest.approx(300.0)


def test_meter_state_round_trip_and_malformed_state_ignored():
    meter = LoadMeter(scale=1 / KIB)
    meter.update({"eth0": 1000}, now=50.0)
    again = LoadMeter(scale=1 / KIB)
    again.restore(meter.state())
    assert again.update({"eth0": 1000 + 10 * KIB}, now=60.0) == pytest.approx(1.0)
    broken = LoadMeter()
    for junk in (None, [], {"eth0": "x"}, {"eth0": [1]}, {"eth0": [True, 3]}, {5: [1, 2]}):
        broken.restore(junk)
    assert broken.state() == {}


def fake_sysfs(root, counters):
    for iface, value in counters.items():
        folder = root / iface / "statistics"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tx_bytes").write_text(f"{int(value)}\n")
    return str(root)


def test_read_tx_bytes_from_a_sysfs_tree(tmp_path):
    sysfs = fake_sysfs(tmp_path / "net", {"eth0": 123456789})
    assert read_tx_bytes("eth0", sysfs) == 123456789
    with pytest.raises(LoadError, match=r"\[general\] interface"):
        read_tx_bytes("eth9", sysfs)


def test_read_tx_bytes_real_loopback():
    assert read_tx_bytes("lo") >= 0


def test_interface_load_over_fake_trees(tmp_path):
    sysfs = tmp_path / "net"
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "uptime").write_text("1000.00 3000.00\n")
    fake_sysfs(sysfs, {"eth0": 2_048_000})
    source = InterfaceLoad(("eth0",), sysfs=str(sysfs), proc=str(proc))
    # First reading: the average since boot (2,048,000 B / 1000 s = 2 KB/s), not a made-up zero.
    assert source.measure(now=500.0) == pytest.approx(2.0)
    fake_sysfs(sysfs, {"eth0": 2_048_000 + 100 * KIB * 30})
    assert source.measure(now=530.0) == pytest.approx(100.0)
    fake_sysfs(sysfs, {"eth0": 7 * KIB * 10})   # counter reset
    assert source.measure(now=540.0) == pytest.approx(7.0)


def test_interface_load_skips_a_vanished_interface_and_fails_when_none_is_left(tmp_path):
    sysfs = tmp_path / "net"
    fake_sysfs(sysfs, {"eth0": 0})
    source = InterfaceLoad(("eth0", "gone0"), sysfs=str(sysfs), proc=str(tmp_path))
    source.meter.update({"eth0": 0}, now=0.0)
    fake_sysfs(sysfs, {"eth0": 10 * KIB})
    assert source.measure(now=10.0) == pytest.approx(1.0)
    with pytest.raises(LoadError):
        InterfaceLoad(("gone0",), sysfs=str(sysfs)).measure(now=1.0)


def test_parse_real_squid5_counters_page():
    parsed = parse_kbytes_out(page("squid5-counters.txt"))
    assert parsed.value == 2930 and not parsed.is_rate


def test_parse_real_squid5_5min_page_as_a_rate():
    text = page("squid5-5min.txt")
    assert parse_kbytes_out(text).is_rate
    busy = text.replace("client_http.kbytes_out = 0.000000/sec", "client_http.kbytes_out = 5321.250000/sec")
    assert parse_kbytes_out(busy).value == pytest.approx(5321.25)
    # server.all.kbytes_out (Squid to origins) must not be mistaken for what clients receive
    assert "server.all.kbytes_out" in text


def test_parse_squid_info_uptime_and_errors():
    assert parse_uptime(page("squid5-info.txt")) == pytest.approx(0.105)
    assert parse_uptime("nothing here") is None
    with pytest.raises(LoadError, match="manager_url"):
        parse_kbytes_out("<html>access denied</html>")


def test_info_url():
    assert info_url("http://127.0.0.1:3128/squid-internal-mgr/counters") == \
        "http://127.0.0.1:3128/squid-internal-mgr/info"
