"""Cache verification through a real Squid in front of a local origin, and the verifier's pure parts."""
from __future__ import annotations

import http.server
import threading

import pytest

from shoal_server.config import ServerConfig, load_config
from shoal_server.inifile import ConfigError
from shoal_server.table import CacheTable
from shoal_server.verifier import build_verifier, looks_right, verification_targets
from support.heartbeats import upstream_heartbeat
from support.procs import write_ini
from support.rabbitnode import free_port
from support.squid import Origin, Squid, squid_binary

REPO_PATH = "/cvmfs/test.example.org/.cvmfspublished"
MANIFEST = (b"C600230b0ba7620426f2e898f1e1f43c5466efe59\nB1442336\nRd41d8cd98f00b204e9800998ecf8427e\n"
            b"D900\nS4\nNtest.example.org\nX1d2b0d2b1a9f6b1d1d8c9a1cf1d8a1e3b0b3c1f2\nT1700000000\n--\n"
            b"0123456789abcdef0123456789abcdef01234567\n\x8a\x01binary-signature")


def test_targets_join_origin_and_paths():
    targets = verification_targets("/cvmfs/a.org/.cvmfspublished, cvmfs/b.org/.cvmfspublished",
                                   "http://s1.example.org:8000/")
    assert [t.url for t in targets] == ["http://s1.example.org:8000/cvmfs/a.org/.cvmfspublished",
                                        "http://s1.example.org:8000/cvmfs/b.org/.cvmfspublished"]
    assert targets[0].host_header == "s1.example.org:8000"
    assert verification_targets("http://other.example.org/x", "http://ignored")[0].url == "http://other.example.org/x"
    assert verification_targets("/x")[0].url.startswith("http://cvmfs-stratum-one.cern.ch:8000/")
    for bad in ("", "https://secure.example.org/x", "ftp://x/y"):
        with pytest.raises(ValueError):
            verification_targets(bad, "http://o.example.org")


def test_answers_are_judged_by_status_and_shape():
    assert looks_right(REPO_PATH, 200, MANIFEST).ok
    assert not looks_right(REPO_PATH, 200, b"<html>Squid error page</html>").ok
    assert not looks_right(REPO_PATH, 503, MANIFEST).ok
    assert not looks_right("/anything", 200, b"").ok
    assert looks_right("/anything", 200, b"x").ok


def test_bad_verification_url_is_a_config_error(tmp_path):
    path = write_ini(str(tmp_path / "s.conf"), {"cache": {"cache_verification": "true",
                                                          "verification_url": "https://x.example.org/y"}})
    with pytest.raises(ConfigError) as err:
        build_verifier(load_config(path), CacheTable(), threading.Event())
    assert "[cache] verification_url" in str(err.value)
    assert build_verifier(ServerConfig(), CacheTable(), threading.Event()) is None


class Garbage(http.server.BaseHTTPRequestHandler):
    """Something listening on a 'cache' port that is not a working proxy: 200 with the wrong body."""

    def do_GET(self):  # noqa: N802
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    server = Origin({REPO_PATH: MANIFEST}).start()
    yield server
    server.stop()


@pytest.fixture
def squid(tmp_path, origin):
    if squid_binary() is None:
        pytest.fail("squid is not installed (apt-get install squid)")
    proxy = Squid(str(tmp_path / "squid"))
    proxy.start(origin.port)
    yield proxy
    proxy.close()


@pytest.fixture
def garbage_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def states(server):
    return {c["uuid"]: c["verified"] for c in server.get_json("/all").values()}


def test_verified_through_squid_and_unverified_when_squid_stops(server_factory, publisher, origin, squid,
                                                               garbage_port):
    server = server_factory(cache={
        "cache_cleanse_interval": 5, "cache_inactive_time": 300, "cache_verification": "true",
        "cache_verify_interval": 1, "verification_timeout": 2, "verification_concurrency": 4,
        "verification_origin": f"http://127.0.0.1:{origin.port}", "verification_url": REPO_PATH},
        extra={"security": {"lab_addresses": "true"}})   # the Squids of this test listen on loopback only
    dead_port = free_port()   # nothing listens there
    # Every agent claims verified=true; the server believes only what it checked itself.
    publisher.send(upstream_heartbeat("127.0.0.1", hostname="127.0.0.1", port=squid.port, uuid="real-squid",
                                      verified=True))
    publisher.send(upstream_heartbeat("127.0.0.1", hostname="localhost", port=dead_port, uuid="no-squid",
                                      verified=True))
    publisher.send(upstream_heartbeat("127.0.0.1", hostname="127.0.0.1", port=garbage_port, uuid="not-a-proxy",
                                      verified=True))
    server.wait_for(lambda d: len(d) == 3, path="/all")
    expected = {"real-squid": True, "no-squid": False, "not-a-proxy": False}
    server.wait_for(lambda d: {c["uuid"]: c["verified"] for c in d.values()} == expected, timeout=20, path="/all")
    assert [c["uuid"] for c in server.get_json("/nearestverified").values()] == ["real-squid"]
    assert REPO_PATH in squid.access_log()          # the fetch really went through Squid
    assert any(REPO_PATH in r for r in origin.requests)

    squid.stop()
    server.wait_for(lambda d: not any(c["verified"] for c in d.values()), timeout=20, path="/all")
    assert server.get_json("/nearestverified") == {}
    assert len(server.get_json("/nearest")) == 3     # still listed, just not verified
    log = server.log()
    assert "failed verification" in log and "Traceback" not in log

    squid.start(origin.port)
    server.wait_for(lambda d: d.get("0", {}).get("uuid") == "real-squid", timeout=20, path="/nearestverified")
