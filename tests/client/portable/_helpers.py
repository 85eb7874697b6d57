"""Helpers for the portable client tests: stdlib only, Python 2.7 and 3.6+."""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

try:
    from StringIO import StringIO  # Python 2: accepts both str and unicode
except ImportError:
    from io import StringIO

try:
    from BaseHTTPServer import BaseHTTPRequestHandler, HTTPServer
    from SocketServer import ThreadingMixIn
except ImportError:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from socketserver import ThreadingMixIn

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_SRC = os.environ.get("SHOAL_CLIENT_SRC") or os.path.normpath(os.path.join(HERE, "..", "..", "..",
                                                                                   "shoal-client"))
if CLIENT_SRC not in sys.path:
    sys.path.insert(0, CLIENT_SRC)

from shoal_client.main import Environment, main  # noqa: E402

# What the client appends when default_squid_proxy is not set: REALISTIC_LOCAL's own proxies
# from before Shoal's first edit, without its DIRECT (issue 15: no fleet stampeding to stratum-1).
SITE_PROXIES = "http://old-squid.example.org:3128|http://old-squid2.example.org:3128"
REALISTIC_LOCAL = (
    b"# /etc/cvmfs/default.local -- site settings; CVMFS_HTTP_PROXY is managed by shoal-client\n"
    b"CVMFS_REPOSITORIES=\"atlas.cern.ch,atlas-condb.cern.ch,grid.cern.ch,sft.cern.ch\"\n"
    b"CVMFS_QUOTA_LIMIT=20000\n"
    b"CVMFS_CACHE_BASE='/var/lib/cvmfs'\n"
    b"\n"
    b"# CVMFS_HTTP_PROXY=\"http://commented.example.org:3128;DIRECT\"\n"
    b"CVMFS_HTTP_PROXY=\"http://old-squid.example.org:3128|http://old-squid2.example.org:3128;DIRECT\"  # shoal\n"
    b"export CVMFS_KEYS_DIR=/etc/cvmfs/keys\n"
    b"   CVMFS_DEBUGLOG=/tmp/cvmfs.log\n"
    b"CVMFS_SERVER_URL=\"http://s1.example.org/cvmfs/@fqrn@;http://s2.example.org/cvmfs/@fqrn@\"\n"
    b"# Z\xc3\xbcrich site, tab\tand trailing spaces   \n"
    b"CVMFS_USE_GEOAPI=yes"
)


def record(hostname, port=3128, public_ip="142.104.60.10", load=100.0, **extra):
    """One cache shaped like shoal_server.render.cache_record."""
    rec = {"hostname": hostname, "squid_port": port, "public_ip": public_ip, "private_ip": "10.0.0.5",
           "external_ip": None, "load": load, "max_load": 122000.0, "distance": 12.5,
           "last_active": 1700000000.5, "created": 1699990000.25, "verified": False, "upstream": "both",
           "cache_type": "squid", "uuid": "u-" + str(hostname),
           "geo_data": {"city": "Victoria", "country_code": "CA", "latitude": 48.4, "longitude": -123.3}}
    rec.update(extra)
    return rec


def nearest_doc(*records):
    return dict((str(i), r) for i, r in enumerate(records))


class TempDir(object):
    """tempfile.TemporaryDirectory for Python 2 too."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="shoal-client-test-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def write_bytes(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def raises_with(test, exc_type, text, func, *args, **kw):
    """assertRaisesRegex without the 2.7/3.12 naming split; returns the exception."""
    try:
        func(*args, **kw)
    except exc_type as err:
        test.assertIn(text, str(err))
        return err
    test.fail("%s not raised by %r" % (exc_type.__name__, func))


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeServer(object):
    """A stdlib HTTP server on 127.0.0.1 answering each path from ``routes``: (status, body, delay)."""

    def __init__(self, routes=None, default=(404, b"not found", 0)):
        self.routes = dict(routes or {})
        self.default = default
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append((self.path, dict(self.headers.items())))
                status, body, delay = fake.routes.get(self.path, fake.default)
                if delay:
                    time.sleep(delay)
                if not isinstance(body, bytes):
                    body = body.encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (IOError, OSError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args):
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,))
        self.thread.daemon = True

    def url(self, path="/nearest"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        return False


def run_main(argv, **env_kw):
    """Run main() in-process; return (exit code, stdout text, stderr text)."""
    out, err = StringIO(), StringIO()
    env_kw.setdefault("search_paths", ())
    env_kw.setdefault("environ", {})
    code = main(list(argv), Environment(stdout=out, stderr=err, **env_kw))
    return code, out.getvalue(), err.getvalue()


def run_client(args, env=None, flags=(), timeout=60):
    """Run ``python [flags] -m shoal_client args`` with this interpreter; return (code, out, err)."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = CLIENT_SRC
    environ.update(env or {})
    proc = subprocess.Popen([sys.executable] + list(flags) + ["-m", "shoal_client"] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, cwd=CLIENT_SRC)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class DripServer(object):
    """A TCP server on 127.0.0.1 that sends ``response`` one byte every ``interval`` seconds.

    Every socket read the client makes gets a byte well within its timeout, so only an overall
    deadline can stop it. ``head`` bytes are sent at once first (e.g. the status line and headers,
    to drip only the body).
    """

    def __init__(self, response, interval=0.2, head=0):
        import socket
        self.response, self.interval, self.head = response, interval, head
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve)
        self.thread.daemon = True

    def url(self, path="/nearest"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (IOError, OSError):
                continue
            worker = threading.Thread(target=self._drip, args=(conn,))
            worker.daemon = True
            worker.start()

    def _drip(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(self.response[:self.head])
            for i in range(self.head, len(self.response)):
                if self.stopping:
                    break
                conn.sendall(self.response[i:i + 1])
                time.sleep(self.interval)
        except (IOError, OSError):
            pass
        finally:
            conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()
        return False


def forget_root_site_proxies():
    """Remove the site-proxies record beside root's default lock (/run/shoal-client.lock).

    Tests that run as root with the default lock make the client remember the site's proxies
    there; left behind, that record is every later run's (and test's) fallback.
    """
    if os.geteuid() == 0:
        from shoal_client.config import ROOT_LOCK_FILE
        for path in (ROOT_LOCK_FILE + ".site-proxies",):
            try:
                os.remove(path)
            except OSError:
                pass
