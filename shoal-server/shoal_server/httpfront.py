"""The built-in HTTP front: read whole requests under limits and deadlines, then run WSGI in threads.

cheroot (and wsgiref) hand a connection to a worker thread as soon as it is readable, and the
thread then reads the request line and headers with a per-``recv`` timeout: a client that sends
one header line every few seconds holds a thread for ever, and a few dozen of them take every
thread (docs/security.md, "HTTP front"). Here one asyncio loop owns every socket; it reads a
request's head (request line <= ``max_request_line`` bytes, headers <= ``max_header_bytes`` and
``max_headers`` lines) and its body (<= ``max_body``) within ``request_timeout`` seconds of the
first byte, idle keep-alive connections are closed after ``idle_timeout``, and only a complete
request reaches the pool of ``threads`` WSGI threads. A slow or idle client therefore costs one
socket and a few KiB, never a thread. At ``max_connections`` open sockets (fewer if the file
descriptor limit is lower) a new connection closes a waiting one of the client address holding
the most (its longest-silent, else its longest-waiting), so a host flooding idle sockets
pushes out its own, not other clients; only when every connection is busy in the application
is the newcomer answered 503. Apache + mod_wsgi stays the production front (docs/deployment.md); this one serves
``shoal-server`` run on its own, the demo and the tests.

Only what Shoal's routes need is implemented: HTTP/1.0 and 1.1, keep-alive, Content-Length
bodies (no chunked uploads: 501), whole-body responses with Content-Length. Stdlib only.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import io
import logging
import re
import resource
import socket
import sys
import threading
from email.utils import formatdate
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes, urlsplit

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VERSION_RE = re.compile(rb"HTTP/1\.[0-9]\Z")
_READ_CHUNK = 16384
_WRITE_CHUNK = 1024 * 1024   # bytes per write of a response (write_pieces)
_PROGRESS = 256 * 1024        # bytes a client must read per write_timeout (docs/security.md)


@dataclasses.dataclass(frozen=True)
class FrontSettings:
    """Limits of the built-in front; the Apache equivalents are in docs/deployment.md."""

    threads: int = 16                  # WSGI worker threads ([general] web_threads)
    max_request_line: int = 8190       # bytes, CRLF excluded (Apache LimitRequestLine) -> 414
    max_header_bytes: int = 16384      # all header lines together (cf. LimitRequestFieldSize) -> 431
    max_headers: int = 100             # header lines (Apache LimitRequestFields) -> 431
    max_body: int = 65536              # Content-Length accepted (no route takes a body) -> 413
    request_timeout: float = 10.0      # from a request's first byte to its last (RequestReadTimeout) -> 408
    idle_timeout: float = 5.0          # a kept-alive connection waiting for its next request
    write_timeout: float = 30.0        # for each 256 KiB of a response to drain to the client
    max_connections: int = 1000        # open client sockets; beyond: evict the longest waiting, else 503


class _Reject(Exception):
    """A request the front answers itself (status line text) and then closes."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclasses.dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: List[Tuple[str, str]]
    body: bytes
    keep_alive: bool


def parse_head(head: bytes, settings: FrontSettings) -> Tuple[str, str, str, List[Tuple[str, str]]]:
    """Split a request head (without the blank line) into method, target, version, headers. Pure.

    Raises _Reject with the status the client gets.
    """
    line, _, rest = head.partition(b"\r\n")
    if len(line) > settings.max_request_line:
        raise _Reject("414 URI Too Long")
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN_RE.match(parts[0]) or not parts[1]:
        raise _Reject("400 Bad Request")
    method, target, version = parts
    if not version.startswith(b"HTTP/"):
        raise _Reject("400 Bad Request")
    if not _VERSION_RE.match(version):
        raise _Reject("505 HTTP Version Not Supported")
    if any(c < 0x21 or c == 0x7F for c in target):
        raise _Reject("400 Bad Request")
    headers: List[Tuple[str, str]] = []
    if len(rest) > settings.max_header_bytes:
        raise _Reject("431 Request Header Fields Too Large")
    for raw in rest.split(b"\r\n") if rest else []:
        if len(headers) >= settings.max_headers:
            raise _Reject("431 Request Header Fields Too Large")
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN_RE.match(name):   # also refuses obsolete line folding
            raise _Reject("400 Bad Request")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise _Reject("400 Bad Request")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), headers


def find_head_end(buf: bytearray, settings: FrontSettings) -> int:
    """Index just past the head's blank line in ``buf``, or -1 if it has not arrived; enforce limits.

    Checked on every chunk, so an oversized line or header block is refused as soon as it is
    seen, without waiting for (or buffering) the rest of it.
    """
    first = buf.find(b"\r\n")
    if first < 0:
        if len(buf) > settings.max_request_line:
            raise _Reject("414 URI Too Long")
        return -1
    if first > settings.max_request_line:
        raise _Reject("414 URI Too Long")
    end = buf.find(b"\r\n\r\n", first)
    headers_len = (end if end >= 0 else len(buf)) - (first + 2)
    if headers_len > settings.max_header_bytes:
        raise _Reject("431 Request Header Fields Too Large")
    return end + 4 if end >= 0 else -1


def _header(headers: List[Tuple[str, str]], name: str) -> Optional[str]:
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def wsgi_environ(req: _Request, server: Tuple[str, int], peer: Tuple[str, int]) -> dict:
    """The PEP 3333 environ for one parsed request. Pure."""
    target = req.target
    if "://" in target:                       # absolute-form (a proxy-style request)
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    else:
        path, _, query = target.partition("?")
    environ: Dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": req.version,
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(req.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in req.headers:
        key = name.upper().replace("-", "_")
        if "_" in name:
            continue   # X_Forwarded_For must not pass for X-Forwarded-For (as Apache and nginx do)
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


def run_app(app: WSGIApp, environ: dict) -> Tuple[str, List[Tuple[str, str]], bytes]:
    """Call the WSGI app and collect its whole answer (runs in a worker thread)."""
    started: List[Any] = []

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, list(headers)]
        return lambda data: chunks.append(data)

    chunks: List[bytes] = []
    try:
        result = app(environ, start_response)
        try:
            for chunk in result:
                if chunk:
                    chunks.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not started:
            raise RuntimeError("the WSGI application did not call start_response")
    except Exception:  # noqa: BLE001 - one broken request must not take the connection's loop down
        logger.exception("WSGI application failed")
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal server error\n"
    return started[0], started[1], b"".join(chunks)


def _response_head(status: str, headers: List[Tuple[str, str]], length: int, keep_alive: bool) -> bytes:
    """The status line and headers of a response whose body is ``length`` bytes. Pure."""
    out = [f"HTTP/1.1 {status}\r\n"]
    for name, value in headers:
        if name.lower() in ("content-length", "connection", "transfer-encoding", "date", "server"):
            continue
        out.append(f"{name}: {value}\r\n")
    out.append(f"Content-Length: {length}\r\n")
    out.append(f"Date: {formatdate(usegmt=True)}\r\nServer: shoal-server\r\n")
    out.append("Connection: keep-alive\r\n\r\n" if keep_alive else "Connection: close\r\n\r\n")
    return "".join(out).encode("latin-1")


def _error_response(status: str) -> Tuple[bytes, bytes]:
    body = (status + "\n").encode("ascii")
    return _response_head(status, [("Content-Type", "text/plain")], len(body), False), body


def write_pieces(length: int, chunk: int = _WRITE_CHUNK) -> List[Tuple[int, int]]:
    """(start, end) of the writes that send ``length`` bytes: whole chunks, the last one taking
    the remainder, so no write is a short tail behind a full one (at least one, even for 0). Pure.

    A short write after a full one cost ~40 ms per response on loopback (p99 of a 282 KB status
    page sent as 256 KiB + 26 KiB); a response under 2 chunks goes in one write.
    """
    count = max(1, length // chunk)
    return [(i * chunk, (i + 1) * chunk if i + 1 < count else length) for i in range(count)]


class HTTPFront:
    """``prepare()`` binds (errors surface there), ``serve()`` runs until ``stop()`` from any thread."""

    def __init__(self, bind: Tuple[str, int], app: WSGIApp, settings: FrontSettings = FrontSettings()) -> None:
        self.bind, self.app, self.settings = bind, app, settings
        self._sock: Optional[socket.socket] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopping: Optional[asyncio.Event] = None
        self._stop_requested = threading.Event()
        self._open = 0
        # Per client address, its connections waiting for (or reading) a request, oldest first, with
        # what each has sent of it: the ones a newcomer may evict (see _victim).
        self._waiting: Dict[str, "collections.OrderedDict[asyncio.StreamWriter, bytearray]"] = {}
        self.max_connections = settings.max_connections
        self.refused = 0      # connections answered 503: max_connections open, all busy in the app
        self.evicted = 0      # waiting connections closed to make room for a new one
        self.rejected = 0     # requests answered 4xx/5xx by the front itself (limits, deadlines)
        self.started = threading.Event()

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return self._open

    def stats(self) -> Dict[str, int]:
        """The counters for /metrics (read without a lock: each is one int an event-loop thread bumps)."""
        return {"open": self._open, "rejected": self.rejected, "evicted": self.evicted, "refused": self.refused}

    def prepare(self) -> None:
        """Create the listening socket; raise OSError if the address is unusable."""
        host, port = self.bind
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self.max_connections = connection_cap(self.settings.max_connections)

    def serve(self) -> None:
        """Serve until ``stop()``; closes every connection and the worker pool on the way out."""
        if self._sock is None:
            self.prepare()
        asyncio.run(self._main())

    def stop(self) -> None:
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:   # the loop is already closed
                pass

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.settings.threads,
                                                     thread_name_prefix="shoal-web")
        tasks: "set[asyncio.Task]" = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                tasks.add(task)
            self._open += 1
            try:
                await self._connection(reader, writer, pool)
            except Exception:  # noqa: BLE001 - a bug with one connection must not reach the loop
                logger.exception("HTTP connection failed")
            finally:
                self._open -= 1
                if task is not None:
                    tasks.discard(task)
                writer.close()   # after what was sent drains; _send aborts a reader that stalls

        server = await asyncio.start_server(on_client, sock=self._sock, limit=_READ_CHUNK)
        self.started.set()
        if self._stop_requested.is_set():
            self._stopping.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            pool.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          pool: concurrent.futures.Executor) -> None:
        s = self.settings
        if self._open > self.max_connections:
            await asyncio.sleep(0)   # let bytes that have arrived reach their connections' buffers
            victim = self._victim()
            if victim is None:
                self.refused += 1
                await self._send(writer, _error_response("503 Service Unavailable"))
                return
            victim.transport.abort()   # its reader sees EOF and the connection ends
            self.evicted += 1
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or (self.bind[0], self.bind[1])
        buf = bytearray()
        first = True
        loop = asyncio.get_running_loop()
        while True:
            waiting = self._waiting.setdefault(peer[0], collections.OrderedDict())
            waiting[writer] = buf
            try:
                req = await self._read_request(reader, buf, s.request_timeout if first else s.idle_timeout)
            except _Reject as err:
                self.rejected += 1
                await self._send(writer, _error_response(err.status))
                return
            finally:
                waiting.pop(writer, None)
                if not waiting and self._waiting.get(peer[0]) is waiting:
                    del self._waiting[peer[0]]
            if req is None or writer.is_closing():
                return
            first = False
            environ = wsgi_environ(req, (local[0], local[1]), (peer[0], peer[1]))
            status, headers, body = await loop.run_in_executor(pool, run_app, self.app, environ)
            head = _response_head(status, headers, len(body), req.keep_alive)
            if not await self._send(writer, (head, b"" if req.method == "HEAD" else body)) or not req.keep_alive:
                return

    def _victim(self) -> Optional[asyncio.StreamWriter]:
        """The connection a newcomer replaces: of the address with the most waiting connections
        (one flooding host cannot push out the others), its longest-waiting silent one, else its
        longest-waiting one. None when no connection is waiting (all are busy in the app)."""
        if not self._waiting:
            return None
        address = max(self._waiting, key=lambda a: len(self._waiting[a]))
        waiting = self._waiting[address]
        victim = next((w for w, pending in waiting.items() if not pending), None)
        if victim is None:
            victim = next(iter(waiting))
        del waiting[victim]
        if not waiting:
            del self._waiting[address]
        return victim

    async def _send(self, writer: asyncio.StreamWriter, response: Tuple[bytes, bytes]) -> bool:
        """Write a response's head and body in pieces (``write_pieces``), the head with the first:
        only that piece is copied (a /all of 10,000 caches is 6.5 MB); False, with the connection
        aborted, when the client stops reading (``_drain``)."""
        head, body = response
        view = memoryview(body)
        (start, end), *rest = write_pieces(len(body))
        try:
            writer.write(head + view[start:end])
            for start, end in rest:
                await self._drain(writer)
                writer.write(view[start:end])
            await self._drain(writer)
            return True
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()   # a reader that does not read loses its connection and buffer
            return False

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """Wait for the written bytes to leave; TimeoutError when fewer than ``_PROGRESS`` bytes
        left in a ``write_timeout`` (a rate, not a total: a 30 MB /all to a slow but reading
        client is fine, a client that stops reading is dropped)."""
        transport = writer.transport
        while True:
            before = transport.get_write_buffer_size()
            try:
                await asyncio.wait_for(writer.drain(), self.settings.write_timeout)
                return
            except asyncio.TimeoutError:
                if before - transport.get_write_buffer_size() < _PROGRESS:
                    raise

    async def _read_request(self, reader: asyncio.StreamReader, buf: bytearray,
                            wait_first: float) -> Optional[_Request]:
        """The next request on this connection, None when the client is gone or idled out.

        The deadline starts with the request's first byte (or now, for the first request of a
        connection, when the idle wait and the request deadline are the same clock).
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline: Optional[float] = None
        idle_until = loop.time() + wait_first
        while True:
            while buf[:2] == b"\r\n":   # RFC 9112 2.2: ignore empty lines before a request
                del buf[:2]
            end = find_head_end(buf, s) if buf else -1
            if end >= 0:
                break
            if buf and deadline is None:
                deadline = loop.time() + s.request_timeout
            limit = deadline if deadline is not None else idle_until
            chunk = await self._read_some(reader, limit - loop.time())
            if chunk is None:
                if buf:
                    raise _Reject("408 Request Timeout")
                return None
            if not chunk:
                return None
            buf += chunk
        method, target, version, headers = parse_head(bytes(buf[:end - 4]), s)
        del buf[:end]
        if _header(headers, "transfer-encoding") is not None:
            raise _Reject("501 Not Implemented")
        length_text = _header(headers, "content-length")
        length = 0
        if length_text is not None:
            if not length_text.isdigit() or len(length_text) > 12:
                raise _Reject("400 Bad Request")
            length = int(length_text)
            if length > s.max_body:
                raise _Reject("413 Content Too Large")
        if deadline is None:
            deadline = loop.time() + s.request_timeout
        while len(buf) < length:
            chunk = await self._read_some(reader, deadline - loop.time())
            if chunk is None:
                raise _Reject("408 Request Timeout")
            if not chunk:
                return None
            buf += chunk
        body = bytes(buf[:length])
        del buf[:length]
        connection = (_header(headers, "connection") or "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        return _Request(method, target, version, headers, body, keep_alive)

    @staticmethod
    async def _read_some(reader: asyncio.StreamReader, remaining: float) -> Optional[bytes]:
        """Up to one chunk; b"" at EOF, None when ``remaining`` seconds pass first."""
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)
        except asyncio.TimeoutError:
            return None
        except OSError:
            return b""


def connection_cap(wanted: int, reserve: int = 64) -> int:
    """``wanted``, lowered to what the file descriptor limit leaves after ``reserve`` for the rest
    of the process (broker, GeoIP, logs): running out of descriptors would stop ``accept``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - reserve >= wanted:
        return wanted
    cap = max(10, soft - reserve)
    logger.warning("http_max_connections %d lowered to %d: the open-file limit is %d", wanted, cap, soft)
    return cap


def serve_forever(front: HTTPFront) -> threading.Thread:
    """Run ``front.serve`` in a daemon thread (prepared already) and wait until it accepts."""
    thread = threading.Thread(target=front.serve, name="shoal-http", daemon=True)
    thread.start()
    front.started.wait(10)
    return thread


__all__ = ["FrontSettings", "HTTPFront", "connection_cap", "serve_forever", "parse_head", "wsgi_environ", "run_app"]
