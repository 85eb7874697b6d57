"""The ``shoal-client`` command: fetch the nearest caches and point CVMFS (or Frontier) at them."""
import argparse
import errno
import logging
import os
import signal
import socket
import subprocess
import sys

from . import __version__
from ._compat import (TLS_ERRORS, HTTPError, HTTPSHandler, ProxyHandler, Request, URLError, build_opener,
                      http_client, is_timeout, is_tls_error, json_loads, ssl_context, which)
from .config import (SEARCH_PATHS, ConfigError, clamp_caches, find_config, load_config, to_caches,
                     to_lock_file, to_positive_float)
from .cvmfsconf import (ConfigFileError, LockTimeout, current_values, overriding_files, read_bytes,
                        resolve_path, update_file)
from .deadline import Deadline, DeadlineExceeded
from .hostrule import is_proxy_host
from .proxies import (DEFAULT_CACHES, InvalidResponse, NoCaches, cache_groups, check_server_url,
                      cvmfs_proxy_value, frontier_string, nearest_url, site_fallback)

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
READ_CHUNK = 64 * 1024
TEST_HOOK_VAR = "SHOAL_CLIENT_TEST_HOOK"

class Exit(object):
    """Named exit statuses; EXIT_CODES says what each means."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    UNREACHABLE = 3
    TIMEOUT = 4
    HTTP_ERROR = 5
    BAD_RESPONSE = 6
    NO_CACHES = 7
    FILE_ERROR = 8
    LOCKED = 9
    RELOAD_FAILED = 10


# (code, name, meaning): --help prints this table, docs/client.md shows it (a test compares them).
EXIT_CODES = (
    (Exit.OK, "OK", "success: the file was updated or already right, or --dump/--frontier printed"),
    (Exit.INTERNAL, "INTERNAL", "unexpected error (a Python traceback follows); nothing was written"),
    (Exit.USAGE, "USAGE", "bad command line or configuration file"),
    (Exit.UNREACHABLE, "UNREACHABLE", "cannot connect to the server (refused, DNS, TLS verification, reset)"),
    (Exit.TIMEOUT, "TIMEOUT", "the server's whole answer did not arrive within the timeout"),
    (Exit.HTTP_ERROR, "HTTP_ERROR", "the server answered with an HTTP error status"),
    (Exit.BAD_RESPONSE, "BAD_RESPONSE", "the answer is not UTF-8 JSON in the /nearest shape"),
    (Exit.NO_CACHES, "NO_CACHES", "the answer holds no usable cache"),
    (Exit.FILE_ERROR, "FILE_ERROR", "the CVMFS config cannot be read, parsed or replaced"),
    (Exit.LOCKED, "LOCKED", "another shoal-client run held the lock file for longer than lock_timeout"),
    (Exit.RELOAD_FAILED, "RELOAD_FAILED", "the file was updated but `cvmfs_config reload` or `cvmfs_talk` failed"),
)


class ClientError(Exception):
    """A failure with its exit status; ``main`` prints the one-line message and returns the code."""

    def __init__(self, exit_code, message):
        Exception.__init__(self, _one_line(message))
        self.exit_code = exit_code


def _one_line(message):
    try:
        text = "%s" % (message,)
    except UnicodeError:  # Python 2: bytes that are not ASCII
        text = repr(message)
    return " ".join(text.split())


class Environment(object):
    """What the command touches outside its arguments; tests replace any of it."""

    def __init__(self, stdout=None, stderr=None, environ=None, search_paths=SEARCH_PATHS, loads=None,
                 which=which, run=None, geteuid=os.geteuid):
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.environ = environ if environ is not None else os.environ
        self.search_paths = search_paths
        self.loads = loads if loads is not None else json_loads
        self.which = which
        self.run = run if run is not None else run_command
        self.geteuid = geteuid


def run_command(argv):
    """Run ``argv`` with its output captured; return (exit status, output text)."""
    devnull = open(os.devnull, "rb")
    try:
        proc = subprocess.Popen(argv, stdin=devnull, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.communicate()[0]
    finally:
        devnull.close()
    return proc.returncode, out.decode("utf-8", "replace")


def _run(env, argv):
    """(status, output) of ``env.run(argv)``; a replacement that returns only a status is fine too."""
    result = env.run(argv)
    status, output = result if isinstance(result, tuple) else (result, "")
    for line in output.splitlines():
        logger.info("%s: %s", os.path.basename(argv[0]), line)  # -q: not shown, cron mails nothing
    return status, output


def _last_lines(output, n=3):
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    return (" (%s)" % " / ".join(lines[-n:])) if lines else ""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise ClientError(Exit.USAGE, "%s (see --help)" % message)


def _arg_type(convert, name):
    def parse(text):
        try:
            return convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError("invalid %s %r: %s" % (name, text, err))
    parse.__name__ = name
    return parse


def _check_url(text):
    """An http(s) URL; a bare ``host[:port]`` (upstream's README says ``-s hostname``) means its /nearest."""
    text = text.strip()
    if "://" not in text and "/" not in text:
        host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
        if is_proxy_host(host.strip("[]")):
            return check_server_url("http://%s/nearest" % text)
    return check_server_url(text)


def build_parser():
    """The command-line parser (help and version are handled by ``main``)."""
    epilog = "exit status:\n" + "\n".join("  %2d  %s" % (code, meaning) for code, _, meaning in EXIT_CODES)
    parser = _ArgumentParser(
        prog="shoal-client", add_help=False, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ask a Shoal server for the nearest Squid caches and write them to CVMFS_HTTP_PROXY.")
    parser.add_argument("-s", "--server", metavar="URL", type=_arg_type(_check_url, "URL"),
                        help="the server's /nearest URL (config shoal_server_url; "
                             "default http://localhost:8080/nearest); a bare HOST[:PORT] means its /nearest")
    parser.add_argument("-n", "--caches", "--squids", metavar="N", type=_arg_type(to_caches, "number"),
                        help="write at most N caches (1-32; more is lowered to 32): fetches URL/N "
                             "(default: the server's choice, at most %d written)" % DEFAULT_CACHES)
    parser.add_argument("--cvmfs-config", metavar="PATH",
                        help="CVMFS file to rewrite (config cvmfs_config; default /etc/cvmfs/default.local)")
    parser.add_argument("--lock-file", metavar="PATH", type=_arg_type(to_lock_file, "path"),
                        help="private lock file (config lock_file; default /run/shoal-client.lock as root)")
    parser.add_argument("-c", "--config", metavar="PATH",
                        help="INI file (default: /etc/shoal/shoal_client.conf, else ~/.shoal/shoal_client.conf)")
    parser.add_argument("--timeout", metavar="SECONDS", type=_arg_type(to_positive_float, "timeout"),
                        help="overall deadline for the fetch (config timeout; default 10)")
    parser.add_argument("-d", "--dump", action="store_true",
                        help="print the CVMFS_HTTP_PROXY value it would write; write nothing")
    parser.add_argument("-f", "--frontier", action="store_true",
                        help="print a Frontier proxy string (proxyurl=...)... (merged into $FRONTIER_SERVER "
                             "when that is set, unless -d); ask conditions_url if set; write nothing")
    parser.add_argument("-k", "--skip-broadcast", action="store_true",
                        help="accepted for upstream compatibility; no effect (this client never waits for a "
                             "local agent's UDP broadcast)")
    parser.add_argument("-o", "--force-server", action="store_true",
                        help="accepted for upstream compatibility; no effect (the server is always asked)")
    parser.add_argument("--reload", action="store_true", default=None,
                        help="after a change (or a reload still owed), run `cvmfs_config reload` if that command exists")
    parser.add_argument("--talk", action="store_true", default=None,
                        help="also run `cvmfs_talk proxy set VALUE` on every run: the mounted repositories use "
                             "the caches at once (what upstream's client did, runtime only)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def fetch(url, timeout, ca_file=""):
    """GET ``url`` (no proxy; HTTPS verified) and return the body bytes; raise ClientError."""
    handlers = [ProxyHandler({})]
    if url.lower().startswith("https:"):
        try:
            handlers.append(HTTPSHandler(context=ssl_context(ca_file)))
        except (RuntimeError, IOError, OSError) as err:
            raise ClientError(Exit.USAGE, "cannot set up TLS with ca_file %r: %s" % (ca_file, err))
    request = Request(url, headers={"Accept": "application/json",
                                    "User-Agent": "shoal-client/%s" % __version__})
    try:
        with Deadline(timeout) as deadline:  # the whole fetch, however slowly the bytes drip
            response = build_opener(*handlers).open(request, timeout=timeout)
            try:
                body = read_body(response, deadline)
            finally:
                response.close()
    except DeadlineExceeded as err:
        raise ClientError(Exit.TIMEOUT, "%s did not answer in time (%s)" % (url, err))
    except HTTPError as err:
        err.close()
        raise ClientError(Exit.HTTP_ERROR, "%s answered HTTP %d %s" % (url, err.code, getattr(err, "msg", "")))
    except URLError as err:
        raise _network_error(url, err, err.reason)
    except TLS_ERRORS as err:  # 2.7/3.6: a host-name mismatch is a bare ssl.CertificateError
        raise ClientError(Exit.UNREACHABLE, "TLS error talking to %s: %s" % (url, err))
    except (socket.error, IOError, OSError, http_client.HTTPException) as err:
        raise _network_error(url, err, err)
    if len(body) > MAX_RESPONSE_BYTES:
        raise ClientError(Exit.BAD_RESPONSE, "%s sent more than %d bytes" % (url, MAX_RESPONSE_BYTES))
    return body


def read_body(response, deadline):
    """Read at most MAX_RESPONSE_BYTES + 1 bytes, checking the deadline between chunks."""
    chunks, size = [], 0
    while size <= MAX_RESPONSE_BYTES:
        deadline.check()
        chunk = response.read(min(READ_CHUNK, MAX_RESPONSE_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _network_error(url, err, reason):
    if is_timeout(err):
        return ClientError(Exit.TIMEOUT, "%s did not answer in time (%s)" % (url, reason))
    if is_tls_error(err):
        return ClientError(Exit.UNREACHABLE, "TLS error talking to %s: %s" % (url, reason))
    return ClientError(Exit.UNREACHABLE, "cannot reach %s: %s" % (url, reason))


def parse_response(body, loads, url, limit=DEFAULT_CACHES):
    """Decode the body and return (groups of at most ``limit`` cache URLs in rank order, warnings);
    raise ClientError."""
    try:
        document = loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ClientError(Exit.BAD_RESPONSE, "%s sent a body that is not UTF-8" % url)
    except (ValueError, RuntimeError) as err:  # RuntimeError: RecursionError from json on absurd nesting
        raise ClientError(Exit.BAD_RESPONSE, "%s sent invalid JSON: %s" % (url, err))
    try:
        return cache_groups(document, limit)
    except InvalidResponse as err:
        raise ClientError(Exit.BAD_RESPONSE, "unexpected answer from %s: %s" % (url, err))
    except NoCaches as err:
        raise ClientError(Exit.NO_CACHES, "%s: %s" % (url, err))


def before_rename_hook(environ):
    """The ``before_rename`` callable selected by SHOAL_CLIENT_TEST_HOOK (tests only), or None."""
    hook = environ.get(TEST_HOOK_VAR, "")
    if hook == "kill-before-rename":
        return lambda temp: os.kill(os.getpid(), signal.SIGKILL)
    if hook:
        raise ClientError(Exit.USAGE, "unknown %s=%r" % (TEST_HOOK_VAR, hook))
    return None


def lock_path(config, env):
    """The lock file to use; the default one under ~/.shoal for a non-root user is created 0700."""
    euid, home = env.geteuid(), env.environ.get("HOME")
    path = config.lock_path(euid, home)
    if not config.lock_file and euid != 0 and home:
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
    return path


def write_cvmfs(config, value, env):
    """Update the CVMFS file and reload CVMFS if asked; return True if the file changed."""
    path = config.cvmfs_config
    try:
        lock = lock_path(config, env)
        changed = update_file(path, value, config.lock_timeout, before_rename=before_rename_hook(env.environ),
                              lock_path=lock)
    except LockTimeout as err:
        raise ClientError(Exit.LOCKED, err.strerror)
    except ConfigFileError as err:
        raise ClientError(Exit.FILE_ERROR, "%s: %s" % (path, err))
    except (IOError, OSError) as err:
        raise ClientError(Exit.FILE_ERROR, "cannot update %s: %s" % (path, err.strerror or err))
    pending = pending_reload_path(lock)
    for later, line in overriding_files(path):
        logger.warning("warning: %s line %d sets CVMFS_HTTP_PROXY too; CVMFS reads it after %s, so the "
                       "repositories it applies to do not use the caches written here", later, line, path)
    if not changed:
        logger.info("%s unchanged: CVMFS_HTTP_PROXY=%s", path, value)
    else:
        logger.info("updated %s: CVMFS_HTTP_PROXY=%s", path, value)
    if config.reload and (changed or os.path.lexists(pending)):
        if not changed:
            logger.info("the last reload failed; reloading again")
        mark_pending(pending)  # until a reload succeeds, every run retries it
        reload_cvmfs(env)
        try:
            os.unlink(pending)
        except OSError:
            pass
    return changed


def site_proxies_path(lock):
    """Where the CVMFS_HTTP_PROXY value found before Shoal's first edit is kept (beside the lock)."""
    return lock + ".site-proxies"


def remembered_proxy(config, env, store=True):
    """The site's CVMFS_HTTP_PROXY from before Shoal's first edit of ``config.cvmfs_config``.

    The first run (no record yet) reads the file's value (the last top-level assignment, as
    /bin/sh takes it; "" when there is none) and, with ``store``, records it; every later run
    reads the record, so the value Shoal writes is never taken for the site's own.
    """
    record = site_proxies_path(lock_path(config, env))
    try:
        with open(record, "rb") as handle:
            return handle.read().decode("ascii", "replace").strip()
    except (IOError, OSError) as err:
        if getattr(err, "errno", None) != errno.ENOENT:
            raise ClientError(Exit.FILE_ERROR, "cannot read %s: %s" % (record, err.strerror or err))
    try:
        content, _ = read_bytes(resolve_path(config.cvmfs_config))
    except (IOError, OSError, ConfigFileError):
        content = None  # update_file reports what is wrong with the file
    values = current_values(content or b"")
    value = values[-1].decode("ascii", "replace") if values else ""
    # No directory for the record: the lock beside it cannot be taken either, and update_file says so.
    if store and os.path.isdir(os.path.dirname(record) or "."):
        _write_private(record, value + "\n")
        logger.info("remembered the site's CVMFS_HTTP_PROXY before Shoal: %r (in %s)", value, record)
    return value


def _write_private(path, text):
    """Write ``path`` (0600) atomically: a temp file beside it, then rename."""
    temp = "%s.%d.tmp" % (path, os.getpid())
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("ascii", "replace"))
        os.rename(temp, path)
    except (IOError, OSError) as err:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise ClientError(Exit.FILE_ERROR, "cannot write %s: %s" % (path, err.strerror or err))


def pending_reload_path(lock):
    """The marker of a reload still owed (beside the private lock file: same protection)."""
    return lock + ".reload-pending"


def mark_pending(path):
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
    except (IOError, OSError) as err:
        raise ClientError(Exit.FILE_ERROR, "cannot write %s: %s" % (path, err.strerror or err))


def talk_cvmfs(env, value):
    """Run ``cvmfs_talk proxy set VALUE`` (all mounted repositories); raise ClientError if it fails."""
    command = env.which("cvmfs_talk")
    if command is None:
        logger.warning("cvmfs_talk not found on PATH; the mounted repositories keep their proxies until reloaded")
        return
    try:
        status, output = _run(env, [command, "proxy", "set", value])
    except OSError as err:
        raise ClientError(Exit.RELOAD_FAILED, "cannot run %s proxy set: %s" % (command, err))
    if status != 0:
        raise ClientError(Exit.RELOAD_FAILED, "%s proxy set exited with status %s%s"
                          % (command, status, _last_lines(output)))


def reload_cvmfs(env):
    """Run ``cvmfs_config reload`` when the command exists; raise ClientError if it fails."""
    command = env.which("cvmfs_config")
    if command is None:
        logger.warning("cvmfs_config not found on PATH; not reloading CVMFS")
        return
    try:
        status, output = _run(env, [command, "reload"])
    except OSError as err:
        raise ClientError(Exit.RELOAD_FAILED, "cannot run %s reload: %s" % (command, err))
    if status != 0:
        raise ClientError(Exit.RELOAD_FAILED, "%s reload exited with status %s%s" % (command, status, _last_lines(output)))


def run(args, env):
    """Do the work for parsed ``args``; return an exit status or raise ClientError/ConfigError."""
    path = args.config or find_config(env.search_paths, env.environ.get("HOME"))
    caches, clamped = clamp_caches(args.caches)
    config = load_config(path).replace(caches=caches, cvmfs_config=args.cvmfs_config, timeout=args.timeout,
                                       reload=args.reload, cvmfs_talk=args.talk, lock_file=args.lock_file or None)
    for warning in config.warnings + ([clamped] if clamped else []):
        logger.warning("warning: %s", warning)
    default_groups = config.default_proxy_groups()
    url = nearest_url(args.server or config.server_url(args.frontier), config.caches)
    urls, warnings = parse_response(fetch(url, config.timeout, config.ca_file), env.loads, url,
                                    config.caches or DEFAULT_CACHES)
    for warning in warnings:
        logger.warning("%s", warning)
    if default_groups is None and args.frontier:
        default_groups = []  # the remembered value is CVMFS's; Frontier keeps its own FRONTIER_SERVER proxies
    elif default_groups is None:  # not configured: the site's own proxies from before Shoal, never DIRECT
        ours = [u for group in urls for u in group]
        default_groups, warnings = site_fallback(remembered_proxy(config, env, store=not args.dump), ours)
        for warning in warnings:
            logger.warning("warning: %s", warning)
    if args.frontier:
        merge_into = "" if args.dump else env.environ.get("FRONTIER_SERVER", "")
        env.stdout.write(frontier_string(urls, default_groups, merge_into) + "\n")
        return Exit.OK
    value = cvmfs_proxy_value(urls, default_groups)
    if args.dump:
        env.stdout.write(value + "\n")
        return Exit.OK
    write_cvmfs(config, value, env)
    if config.cvmfs_talk:
        talk_cvmfs(env, value)
    return Exit.OK


def main(argv=None, env=None):
    """Entry point of ``shoal-client``; returns the exit status."""
    env = env or Environment()
    argv = sys.argv[1:] if argv is None else argv
    handler = logging.StreamHandler(env.stderr)
    handler.setFormatter(logging.Formatter("shoal-client: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.quiet:
            logger.setLevel(logging.ERROR)
        if args.help:
            env.stdout.write(parser.format_help())
            return Exit.OK
        if args.version:
            env.stdout.write("shoal-client %s\n" % __version__)
            return Exit.OK
        return run(args, env)
    except ConfigError as err:
        logger.error("error: %s", err)
        return err.exit_code
    except ClientError as err:
        logger.error("error: %s", err)
        return err.exit_code
    finally:
        logger.removeHandler(handler)
