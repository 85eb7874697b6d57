"""The built-in HTTP front on real loopback sockets: limits (414/431/413), deadlines (408), keep-alive."""
import socket
import threading
import time
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal_server.httpfront import FrontSettings, HTTPFront, serve_forever, write_pieces


def echo_app(environ, start_response):
    body = repr((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"],
                 environ.get("HTTP_X_FORWARDED_FOR"), environ["wsgi.input"].read())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "999")])
    return [body]


@pytest.fixture
def front():
    started = []

    def start(app=echo_app, **settings):
        f = HTTPFront(("127.0.0.1", 0), app, FrontSettings(**settings))
        f.prepare()
        started.append((f, serve_forever(f)))
        return f

    yield start
    for f, thread in started:
        f.stop()
        thread.join(5)
        assert not thread.is_alive()


def exchange(port, data, wait=2.0):
    """Send ``data``, return everything the server sends until it closes or ``wait`` passes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        s.sendall(data)
        out = b""
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def test_a_plain_request_reaches_the_app(front):
    f = front()
    with urllib.request.urlopen(f"http://127.0.0.1:{f.port}/nearest%2Fx?ip=1.2.3.4", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(resp.read()))   # ours, not the app's wrong one


def test_keep_alive_and_pipelining(front):
    f = front()
    answer = exchange(f.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b?q HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert b"'/a'" in answer and b"'/b', 'q'" in answer


def test_request_line_too_long_is_414(front):
    f = front(max_request_line=1024)
    assert status(exchange(f.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n")) == 414
    assert status(exchange(f.port, b"GET /" + b"a" * 5000)) == 414     # before the line even ends


def test_headers_too_large_or_too_many_are_431(front):
    f = front(max_header_bytes=4096, max_headers=20)
    assert status(exchange(f.port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000)) == 431
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(21))
    assert status(exchange(f.port, b"GET / HTTP/1.1\r\n" + many + b"\r\n")) == 431
    twenty = b"".join(b"X-%d: 1\r\n" % i for i in range(19)) + b"Connection: close\r\n"
    assert status(exchange(f.port, b"GET / HTTP/1.1\r\n" + twenty + b"\r\n")) == 200


def test_a_64_mib_header_line_is_refused_after_a_few_kib(front):
    """The server answers 431 and hangs up long before the attacker has sent its header."""
    f = front()
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nX-Big: ")
    sent, answer = 0, b""
    try:
        while sent < 64 * 1024 * 1024:
            sent += s.send(b"a" * 65536)
    except OSError:
        pass
    try:
        answer = s.recv(4096)
    except OSError:
        pass
    s.close()
    assert sent < 8 * 1024 * 1024       # what loopback socket buffers hold, not 64 MiB
    assert answer == b"" or status(answer) == 431


def test_a_dripping_client_gets_408_at_the_deadline(front):
    """One header line every 0.3 s (each well within any per-recv timeout) is cut at request_timeout."""
    f = front(request_timeout=1.0)
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    start = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\n")
    answer = b""
    try:
        for i in range(20):
            time.sleep(0.3)
            s.sendall(b"X-Drip-%d: 1\r\n" % i)
    except OSError:
        pass
    try:
        answer = s.recv(4096)
    except OSError:
        pass
    s.close()
    elapsed = time.monotonic() - start
    assert elapsed < 3.0
    assert answer == b"" or status(answer) == 408


def test_idle_connections_are_closed(front):
    f = front(request_timeout=0.5, idle_timeout=0.5)
    start = time.monotonic()
    assert exchange(f.port, b"", wait=5) == b""
    assert time.monotonic() - start < 2.0
    answer = exchange(f.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait=5)   # kept alive, then idled out
    assert status(answer) == 200 and time.monotonic() - start < 4.0


def test_idle_and_slow_clients_do_not_take_the_threads(front):
    """60 silent sockets and 60 slow senders with 2 WSGI threads: a real request still answers fast."""
    f = front(threads=2)
    socks = []
    try:
        for i in range(120):
            s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
            if i % 2:
                s.sendall(b"GET / HTTP/1.1\r\nX-Slow: 1\r\n")
            socks.append(s)
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{f.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        assert time.monotonic() - start < 1.0
    finally:
        for s in socks:
            s.close()


def connect_from(source, port):
    s = socket.socket()
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_at_the_connection_limit_the_flooding_address_makes_room(front):
    """A flood of idle sockets cannot lock others out: each newcomer evicts the flooder's oldest idler,
    never the older idle connection of another address."""
    f = front(max_connections=10)
    other = connect_from("127.0.0.1", f.port)           # the oldest of all, but not the flooder
    flood = [connect_from("127.0.0.2", f.port) for _ in range(30)]
    try:
        time.sleep(0.3)
        assert f.open_connections <= 11
        assert status(exchange(f.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == 200
        assert f.evicted >= 20 and f.refused == 0
        assert flood[0].recv(10) == b""                 # the flooder's first idler was closed
        other.settimeout(0.2)
        with pytest.raises(socket.timeout):
            other.recv(10)                              # still open
    finally:
        other.close()
        for s in flood:
            s.close()


def test_when_every_connection_is_busy_a_newcomer_gets_503(front):
    release = threading.Event()

    def blocking(environ, start_response):
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    f = front(app=blocking, max_connections=10, threads=10)
    socks = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            socks.append(s)
        time.sleep(0.3)
        assert status(exchange(f.port, b"GET / HTTP/1.1\r\n\r\n")) == 503
        assert f.refused == 1
    finally:
        release.set()
        for s in socks:
            s.close()


def test_the_connection_cap_respects_the_file_descriptor_limit(monkeypatch):
    import resource

    from shoal_server import httpfront

    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 4096))
    assert httpfront.connection_cap(1000) == 960
    assert httpfront.connection_cap(500) == 500


@pytest.mark.parametrize("request_bytes, expected", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
])
def test_malformed_requests_get_their_status(front, request_bytes, expected):
    f = front()
    assert status(exchange(f.port, request_bytes)) == expected


def test_body_and_underscore_headers(front):
    f = front()
    answer = exchange(f.port, b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nX_Forwarded_For: 6.6.6.6\r\n"
                              b"Connection: close\r\n\r\nhello")
    assert status(answer) == 200 and b"None, b'hello'" in answer   # the underscore spoof is dropped


def test_a_failing_app_is_a_500_and_the_front_keeps_serving(front):
    def broken(environ, start_response):
        raise RuntimeError("boom")

    f = front(app=broken)
    assert status(exchange(f.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == 500
    assert status(exchange(f.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == 500


def test_head_has_no_body(front):
    f = front()
    answer = exchange(f.port, b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status(head) == 200 and body == b"" and b"Content-Length: " in head


def test_stop_returns_quickly_with_open_connections(front):
    f = HTTPFront(("127.0.0.1", 0), echo_app)
    f.prepare()
    thread = serve_forever(f)
    socks = [socket.create_connection(("127.0.0.1", f.port)) for _ in range(50)]
    start = time.monotonic()
    f.stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < 1.0
    for s in socks:
        s.close()


def test_the_port_in_use_fails_in_prepare():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        f = HTTPFront(("127.0.0.1", taken.getsockname()[1]), echo_app)
        with pytest.raises(OSError):
            f.prepare()


def test_a_client_that_stops_reading_is_dropped_and_a_slow_reader_is_not(front):
    big = b"x" * (8 * 1024 * 1024)

    def large(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [big]

    f = front(app=large, write_timeout=1.0)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", f.port))
    stalled.sendall(b"GET / HTTP/1.1\r\n\r\n")
    deadline = time.monotonic() + 5
    while f.open_connections and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f.open_connections == 0          # aborted: its 8 MiB answer is no longer held
    stalled.close()
    # A reader that takes ~1.6 s overall (past write_timeout in total) but keeps reading gets it all.
    s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    got = 0
    while True:
        chunk = s.recv(1024 * 1024)
        if not chunk:
            break
        got += len(chunk)
        time.sleep(0.2 * len(chunk) / (1024 * 1024))
    s.close()
    assert got > len(big)


def test_a_long_request_line_is_judged_by_the_line_limit_only(front):
    f = front(max_request_line=60000, max_header_bytes=1024)
    answer = exchange(f.port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status(answer) == 200


@given(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=4096),
       st.integers(min_value=1, max_value=4096))
def test_a_response_is_written_in_whole_pieces_without_a_short_tail(chunks, extra, chunk):
    """The pieces cover the body exactly, in order; none but a lone one is shorter than a chunk,
    and none is as long as two chunks (a short write behind a full one stalled responses ~40 ms)."""
    length = chunks * chunk + extra
    pieces = write_pieces(length, chunk)
    assert pieces[0][0] == 0 and pieces[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    if len(pieces) > 1:
        assert all(chunk <= end - start < 2 * chunk for start, end in pieces)
    assert (len(pieces) == 1) == (length < 2 * chunk)
