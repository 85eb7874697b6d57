"""A real shoal-server keeps answering /healthz and /nearest while hostile clients attack its port.

Issue 14, item 4: 17-20 slow senders (one header line every 5 s) or 200 idle sockets took the
built-in (cheroot) server offline; a 64 MiB header line and 8 x 128 MiB headers were accepted,
peaking at 2.5 GiB RSS with 749 MiB held afterwards. Bounded: a few hundred loopback sockets,
each attack stops itself after ~15 s.
"""
import concurrent.futures
import signal
import socket
import time

import pytest

from support.heartbeats import upstream_heartbeat
from support.hostile import Attack, header_bomb, peak_rss_kib, probe_for, rss_kib, summary

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture
def live(server_factory, publisher):
    srv = server_factory()
    publisher.send(upstream_heartbeat("142.90.1.1", uuid="uuid-triumf", hostname="squid.triumf.example.org"))
    srv.wait_for(lambda d: len(d) == 1, path="/all")
    return srv


def urls(srv):
    return [srv.url + "/healthz", srv.url + "/nearest?ip=142.104.1.1"]


def assert_all_answered_fast(results, limit=1.0):
    for url, samples in results.items():
        s = summary(samples)
        assert s["n"] >= 10 and s["ok"] == s["n"], (url, samples)
        assert s["max_s"] < limit, (url, s)


def test_healthz_and_nearest_answer_during_200_slow_and_200_idle_connections(live):
    attack = Attack("127.0.0.1", live.port, idle=200, slow=200, interval=5.0, duration=16.0)
    attack.start()
    try:
        assert attack.ready.wait(20)
        assert attack.opened >= 400 and attack.connect_errors == 0
        results = probe_for(urls(live), 12.0, pause=0.2, timeout=3.0)
    finally:
        attack.stop()
        attack.join(10)
    assert_all_answered_fast(results)
    print("under 200 slow + 200 idle:", {u.rsplit("/", 1)[1]: summary(r) for u, r in results.items()})
    # The request deadline (http_request_timeout = 10 s) ended every slow and idle connection once.
    assert attack.closed >= 400
    # And the server still stops promptly on SIGTERM.
    assert live.stop(signal.SIGTERM) < 2.0


def test_sigterm_during_an_attack_stops_the_server_within_two_seconds(live):
    attack = Attack("127.0.0.1", live.port, idle=100, slow=100, interval=1.0, duration=10.0)
    attack.start()
    try:
        assert attack.ready.wait(20)
        time.sleep(1.0)
        assert live.stop(signal.SIGTERM) < 2.0
    finally:
        attack.stop()
        attack.join(10)


def test_header_bombs_are_refused_and_memory_stays_bounded(live):
    pid = live.proc.pid
    before = rss_kib(pid)
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        probes = pool.submit(probe_for, urls(live), 6.0, 0.2, 3.0)
        bombs = [pool.submit(header_bomb, "127.0.0.1", live.port, 64 * MIB, True, 20.0)]
        bombs += [pool.submit(header_bomb, "127.0.0.1", live.port, 128 * MIB, False, 20.0) for _ in range(8)]
        outcomes = [b.result() for b in bombs]
        results = probes.result()
    assert_all_answered_fast(results)
    print("during header bombs:", {u.rsplit("/", 1)[1]: summary(r) for u, r in results.items()}, outcomes)
    for answered, sent in outcomes:
        assert answered in (414, 431, None), outcomes       # None: the server hung up first
        assert sent < 16 * MIB, outcomes                    # it stopped reading long before the end
    assert any(a in (414, 431) for a, _ in outcomes)
    peak, after = peak_rss_kib(pid), rss_kib(pid)
    print(f"RSS before {before} KiB, peak {peak} KiB, after {after} KiB")
    assert peak - before < 64 * 1024, (before, peak)
    assert after - before < 32 * 1024, (before, after)


def front_counters(srv):
    """The front's own counters from /metrics (name without shoal_http_front_ -> value)."""
    import urllib.request
    with urllib.request.urlopen(srv.url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {line.split()[0][len("shoal_http_front_"):]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("shoal_http_front_") and "_created" not in line.split()[0]}


def test_request_line_and_headers_have_limits(live):
    before = front_counters(live)
    status, _ = header_bomb("127.0.0.1", live.port, 20000, line=True, timeout=5)
    assert status == 431
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 414 ")
    # What the front refused by itself shows on /metrics, since the app never saw it.
    after = front_counters(live)
    assert after["rejected_total"] - before["rejected_total"] == 2, (before, after)


def test_more_idle_sockets_than_the_connection_cap_do_not_lock_clients_out(server_factory):
    """300 idle sockets (reconnecting whenever closed) from 127.0.0.2 against a cap of 100: the
    newcomers evict the flooder's own idlers, and clients on 127.0.0.1 keep being served."""
    srv = server_factory(general={"http_max_connections": 100})
    attack = Attack("127.0.0.1", srv.port, idle=300, duration=12.0, source="127.0.0.2")
    attack.start()
    try:
        assert attack.ready.wait(20)
        results = probe_for(urls(srv), 6.0, pause=0.2, timeout=3.0)
    finally:
        attack.stop()
        attack.join(10)
    # Every probe answered; a locked-out client would time out (3 s). While 200 evicted idlers
    # reconnect at once, one probe's SYN may wait for the kernel's one retransmission (1 s,
    # seen once in CI at 1.03 s): slower than the 1 s of the other attacks, still served.
    assert_all_answered_fast(results, limit=2.5)
    assert all(summary(samples)["median_s"] < 0.1 for samples in results.values()), results
    assert attack.closed >= 200          # the longest-waiting idlers made room
    assert front_counters(srv)["evicted_total"] >= 200
