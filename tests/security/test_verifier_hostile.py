"""The verifier against hostile "caches" on real loopback sockets (issue 14, item 5).

Before: a cache that drips its status line took 15 s past a 1 s timeout (http.client's timeout is
per recv); two of them (eight at the default concurrency) stalled verification for everyone; the
peer's text went raw into the log, so escape codes and CR/LF forged log lines.
"""
import concurrent.futures
import logging
import socket
import threading
import time

import pytest

from shoal_server.config import CacheSettings
from shoal_server.heartbeat import Heartbeat
from shoal_server.table import CacheEntry, CacheTable
from shoal_server import verifier
from shoal_server.verifier import Verifier, fetch_through, log_text, verification_targets

PATH = "/cvmfs/test.example.org/.cvmfspublished"
MANIFEST = b"C600230b0ba7620426f2e898f1e1f43c5466efe59\nB1442336\nNtest.example.org\n--\n0123456789abcdef\n"


class FakeCache(threading.Thread):
    """A loopback listener that answers every connection with ``mode``: good, drip, forge or headers."""

    def __init__(self, mode: str, drip_every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.mode, self.drip_every = mode, drip_every
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        try:
            conn.settimeout(5)
            conn.recv(65536)
            if self.mode == "good":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(MANIFEST) + MANIFEST)
            elif self.mode == "drip":
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(MANIFEST) + MANIFEST
                for i in range(len(answer)):
                    if self.done.wait(self.drip_every):
                        break
                    conn.sendall(answer[i:i + 1])
            elif self.mode == "forge":
                conn.sendall(b"\x1b[2J\x1b[31mHTTP/1.1\rcache 10.0.0.1:3128 verified: ok\n"
                             b"2026-01-01 root login\r\n\r\n")
            elif self.mode == "headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 10000)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.done.set()
        self.sock.close()
        self.join(5)


@pytest.fixture
def caches():
    made = []

    def make(mode, **kw):
        c = FakeCache(mode, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def target():
    return verification_targets(PATH, "http://origin.example.org:8000")[0]


def entry(uuid, port):
    hb = Heartbeat(uuid=uuid, hostname="127.0.0.1", squid_port=port, public_ip="142.90.1.1", private_ip=None,
                   external_ip=None, load=1.0, max_load=100.0, timestamp=0.0, drift=0.0, verified=False,
                   upstream="both", cache_type="squid", agent_version=None, user_id=None)
    return CacheEntry(hb=hb, created=0.0, last_active=time.time(), location=None)


def test_a_good_cache_is_verified(caches):
    good = caches("good")
    assert fetch_through("127.0.0.1", good.port, target(), 2.0).ok


def test_a_dripping_status_line_is_cut_off_at_the_timeout(caches):
    drip = caches("drip", drip_every=0.1)   # each byte arrives well within any per-recv timeout
    start = time.monotonic()
    outcome = fetch_through("127.0.0.1", drip.port, target(), 1.0)
    elapsed = time.monotonic() - start
    assert not outcome.ok and "timed out" in outcome.reason
    assert elapsed < 1.5, elapsed


def test_endless_headers_are_refused(caches):
    outcome = fetch_through("127.0.0.1", caches("headers").port, target(), 3.0)
    assert not outcome.ok and "64 KiB" in outcome.reason


def settings(**kw):
    base = dict(cache_verification=True, cache_verify_interval=0.1, verification_timeout=1.0,
                verification_concurrency=2, verification_url=PATH,
                verification_origin="http://origin.example.org:8000")
    base.update(kw)
    return CacheSettings(**base)


@pytest.mark.integration
def test_two_drip_caches_do_not_stall_a_round(caches):
    drips = [caches("drip", drip_every=0.3) for _ in range(2)]
    goods = [caches("good") for _ in range(4)]
    table = CacheTable()
    entries = [entry(f"drip{i}", c.port) for i, c in enumerate(drips)] + \
              [entry(f"good{i}", c.port) for i, c in enumerate(goods)]
    table.load(entries)
    verifier = Verifier(table, settings(), threading.Event())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        start = time.monotonic()
        results = verifier.verify(table.snapshot(), pool)
        elapsed = time.monotonic() - start
    assert elapsed < 3.0, elapsed        # 2 drips x 1 s on 2 threads, then the good ones
    assert results == {"drip0": False, "drip1": False, **{f"good{i}": True for i in range(4)}}
    assert all(table.get(f"good{i}").verified for i in range(4))


@pytest.mark.integration
def test_a_round_has_a_budget_and_the_rest_goes_first_next_round(caches):
    """Ten drip caches on two threads would take 5 s; the round stops at its budget (2 s)."""
    drips = [caches("drip", drip_every=0.3) for _ in range(10)]
    good = caches("good")
    table = CacheTable()
    table.load([entry(f"drip{i}", c.port) for i, c in enumerate(drips)] + [entry("good", good.port)])
    verifier = Verifier(table, settings(), threading.Event())
    assert verifier.round_budget() == 2.0
    durations = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(4):
            start = time.monotonic()
            verifier.verify(table.snapshot(), pool)
            durations.append(time.monotonic() - start)
            if table.get("good").verified:
                break
    assert max(durations) < 2.6, durations
    assert verifier.unfinished > 0
    assert table.get("good").verified is True      # reached in a later round, not starved


def test_remote_text_cannot_forge_log_lines(caches, caplog):
    forge = caches("forge")
    table = CacheTable()
    table.load([entry("forger", forge.port)])
    verifier = Verifier(table, settings(), threading.Event())
    with caplog.at_level(logging.INFO, logger="shoal_server.verifier"):
        verifier.verify(table.snapshot())
    messages = [r.getMessage() for r in caplog.records if "forger" in r.getMessage() or "127.0.0.1" in r.getMessage()]
    assert messages, caplog.text
    for message in messages:
        assert "\r" not in message and "\n" not in message and "\x1b" not in message
        assert "failed verification" in message and "\\x1b" in message


def test_log_text_escapes_controls():
    assert log_text("a\r\nb\x1b[31m\u202e") == "a\\r\\nb\\x1b[31m\\u202e"
    assert len(log_text("x" * 1000, limit=50)) == 50


@pytest.fixture
def stalled_dns():
    """A resolver that never answers until the test ends (a name whose DNS server drops queries)."""
    release = threading.Event()

    def resolve(host, port):
        release.wait(60)
        raise OSError("resolver gave up")

    yield resolve
    release.set()


def test_a_host_name_whose_dns_never_answers_costs_one_deadline_not_a_stalled_thread(caches, stalled_dns):
    start = time.monotonic()
    outcome = fetch_through("stalled-dns.example.org", caches("good").port, target(), 1.0, resolve=stalled_dns)
    elapsed = time.monotonic() - start
    assert not outcome.ok and "timed out" in outcome.reason
    assert elapsed < 10, elapsed      # the resolver would have held it for 60 s


def test_a_host_name_is_resolved_and_the_cache_reached(caches):
    assert fetch_through("localhost", caches("good").port, target(), 2.0).ok


def test_abandoned_lookups_are_capped(caches, stalled_dns):
    port = caches("good").port
    for i in range(verifier.MAX_PENDING_LOOKUPS):
        assert "timed out" in fetch_through(f"s{i}.example.org", port, target(), 0.05, resolve=stalled_dns).reason
    outcome = fetch_through("one-more.example.org", port, target(), 1.0, resolve=stalled_dns)
    assert not outcome.ok and "name lookups already pending" in outcome.reason
