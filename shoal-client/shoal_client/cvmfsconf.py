"""Rewrite CVMFS_HTTP_PROXY in a CVMFS config file: pure text edit plus a crash-safe file swap.

The file is sourced by a shell and read by every CVMFS mount on the node, so it is only ever
replaced by an atomic rename of a complete, fsync'ed temp file in the same directory, and only
when its bytes would change. Overlapping runs serialise on an flock of a private lock file.
"""
import errno
import fcntl
import os
import re
import stat
import tempfile
import time

from ._compat import monotonic

KEY = b"CVMFS_HTTP_PROXY"
TEMP_SUFFIX = ".shoal-tmp"
_ASSIGNMENT = re.compile(br"^([ \t]*(?:export[ \t]+)?CVMFS_HTTP_PROXY=)(.*)$", re.S)
_UNSAFE_VALUE_CHARS = set(" \t\r\n\"'\\$`#")


class ConfigFileError(ValueError):
    """The existing file has a CVMFS_HTTP_PROXY line this tool will not edit safely."""


class LockTimeout(OSError):
    """Another shoal-client run held the lock for longer than the allowed wait."""


def rewrite(content, value):
    """Return ``content`` (bytes) with every CVMFS_HTTP_PROXY assignment set to ``value``.

    Every other byte is kept. Without an assignment, one is appended. The existing quote style is
    kept when it is single quotes; otherwise the value is double-quoted (it contains ``;``).
    """
    encoded = _encode_value(value)
    lines = content.splitlines(True)
    out = []
    found = False
    for number, line in enumerate(lines, 1):
        body, eol = _split_eol(line)
        match = _ASSIGNMENT.match(body)
        if match is None:
            out.append(line)
            continue
        found = True
        prefix, rest = match.group(1), match.group(2)
        quote, tail = _split_value(rest, number)
        out.append(prefix + quote + encoded + quote + tail + eol)
    if not found:
        eol = b"\r\n" if b"\r\n" in content else b"\n"
        if content and not content.endswith((b"\n", b"\r")):
            out.append(eol)
        out.append(KEY + b'="' + encoded + b'"' + eol)
    return b"".join(out)


def current_values(content):
    """The values (quotes removed) of the CVMFS_HTTP_PROXY assignments in ``content``."""
    values = []
    for number, line in enumerate(content.splitlines(), 1):
        match = _ASSIGNMENT.match(line)
        if match:
            rest = match.group(2)
            value = rest[:len(rest) - len(_split_value(rest, number)[1])]
            values.append(value[1:-1] if value[:1] in (b'"', b"'") else value)
    return values


def _encode_value(value):
    if not value or any(c in _UNSAFE_VALUE_CHARS for c in value):
        raise ValueError("refusing to write proxy value %r" % (value,))
    return value.encode("ascii")


def _split_eol(line):
    for eol in (b"\r\n", b"\n", b"\r"):
        if line.endswith(eol):
            return line[:-len(eol)], eol
    return line, b""


def _split_value(rest, number):
    """Return (quote to use, bytes after the old value) for the text after ``CVMFS_HTTP_PROXY=``."""
    first = rest[:1]
    if first == b"'":
        end = rest.find(b"'", 1)
        if end < 0:
            raise ConfigFileError("line %d: unterminated ' quote in CVMFS_HTTP_PROXY" % number)
        quote, end = b"'", end + 1
    elif first == b'"':
        end = 1
        while end < len(rest) and rest[end:end + 1] != b'"':
            end += 2 if rest[end:end + 1] == b"\\" else 1
        if end >= len(rest):
            raise ConfigFileError('line %d: unterminated " quote in CVMFS_HTTP_PROXY' % number)
        quote, end = b'"', end + 1
    else:
        end = 0
        while end < len(rest) and rest[end:end + 1] not in (b" ", b"\t"):
            if rest[end:end + 1] in (b'"', b"'", b"\\", b"`", b"$"):
                raise ConfigFileError("line %d: CVMFS_HTTP_PROXY value uses shell syntax this tool "
                                      "does not rewrite" % number)
            end += 1
        quote = b'"'
    tail = rest[end:]
    if tail and tail[:1] not in (b" ", b"\t"):
        raise ConfigFileError("line %d: unexpected text after the CVMFS_HTTP_PROXY value" % number)
    return quote, tail


class UnsafePath(ConfigFileError):
    """A path this tool refuses to follow or use (a planted link, a lock file that is not ours)."""


class FileLock(object):
    """An exclusive flock on a private lock file, polled until ``timeout`` seconds have passed.

    The file is opened without following a symbolic link and must be a regular file owned by us
    and writable by nobody else: a lock anyone can open is a lock anyone can hold (an unprivileged
    ``flock -x /etc/cvmfs`` used to stop root's client).
    """

    def __init__(self, path, timeout, sleep=time.sleep):
        self.path = path
        self.timeout = timeout
        self.sleep = sleep
        self.fd = None

    def _open(self):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags | getattr(os, "O_NONBLOCK", 0), 0o600)
        except (IOError, OSError) as err:
            if err.errno == errno.ELOOP:
                raise UnsafePath("lock file %s is a symbolic link; refusing it" % self.path)
            raise
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != os.geteuid():
            problem = "belongs to uid %d, not to us (uid %d)" % (st.st_uid, os.geteuid())
        elif st.st_mode & 0o022:
            problem = "is writable by others (mode %04o)" % stat.S_IMODE(st.st_mode)
        if problem:
            os.close(fd)
            raise UnsafePath("lock file %s %s; refusing it" % (self.path, problem))
        return fd

    def __enter__(self):
        fd = self._open()
        deadline = monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (IOError, OSError) as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(errno.EAGAIN, "another shoal-client holds the lock %s for more "
                                      "than %g s" % (self.path, self.timeout))
                self.sleep(0.1)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
        return False


MAX_LINKS = 40  # as the kernel's ELOOP limit


def _link_allowed(link_st, dir_st, euid):
    """The kernel's protected_symlinks rule: in a sticky world-writable directory, follow a link
    only if it belongs to the follower or to the directory's owner. We apply it to every
    world-writable directory, sticky or not (there anyone could have replaced the entry)."""
    if not dir_st.st_mode & stat.S_IWOTH:
        return True
    return link_st.st_uid in (euid, dir_st.st_uid)


def resolve_path(path, euid=None):
    """``os.path.realpath`` that refuses links planted in world-writable directories (UnsafePath).

    A missing final component is fine (the file is created); a missing directory raises OSError.
    """
    euid = os.geteuid() if euid is None else euid
    absolute = path if path.startswith(os.sep) else os.path.join(os.getcwd(), path)  # no lexical ".."
    pending = [p for p in absolute.split(os.sep) if p]
    resolved, links = os.sep, 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, name)
        try:
            st = os.lstat(candidate)
        except (IOError, OSError) as err:
            if err.errno == errno.ENOENT and not pending:
                return candidate
            raise
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > MAX_LINKS:
            raise UnsafePath("%s: too many levels of symbolic links" % path)
        if not _link_allowed(st, os.stat(resolved), euid):
            raise UnsafePath("%s is a symbolic link owned by uid %d in the world-writable directory %s; "
                             "refusing to follow it (as the kernel's protected_symlinks does)"
                             % (candidate, st.st_uid, resolved))
        target = os.readlink(candidate)
        if target.startswith(os.sep):
            resolved = os.sep
        pending = [p for p in target.split(os.sep) if p] + pending
    return resolved


def temp_prefix(target):
    return "." + os.path.basename(target) + "."


def remove_stale_temps(target):
    """Delete temp files an interrupted run left next to ``target`` (call with the lock held)."""
    directory, prefix = os.path.dirname(target), temp_prefix(target)
    removed = []
    for name in os.listdir(directory):
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    raise
    return removed


def read_bytes(path):
    """The file's bytes and stat result, or (b"", None) when it does not exist; never follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except (IOError, OSError) as err:
        if err.errno == errno.ENOENT:
            return b"", None
        if err.errno == errno.ELOOP:
            raise UnsafePath("%s became a symbolic link while we worked; not touching it" % path)
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath("%s is not a regular file" % path)
        return fh.read(), st


def update_file(path, value, lock_timeout=60.0, before_rename=None, new_file_mode=0o644, lock_path=None):
    """Set CVMFS_HTTP_PROXY to ``value`` in ``path``; return True if the file was replaced.

    ``before_rename(temp_path)`` runs after the temp file is complete and fsync'ed and before the
    rename (a test hook to simulate a crash there). A symlink is followed and its target replaced,
    unless it was planted in a world-writable directory (``resolve_path``). ``lock_path`` is the
    lock file (default: ``.shoal-client.lock`` beside the target, for tests and library use).
    """
    target = resolve_path(path)
    directory = os.path.dirname(target)
    if lock_path is None:
        lock_path = os.path.join(directory, ".shoal-client.lock")
    with FileLock(lock_path, lock_timeout):
        target = resolve_path(path)  # again, under the lock
        remove_stale_temps(target)
        old, st = read_bytes(target)
        new = rewrite(old, value)
        if st is not None and new == old:
            return False
        _replace(target, new, st, new_file_mode, before_rename)
    return True


def _replace(target, data, st, new_file_mode, before_rename):
    directory = os.path.dirname(target)
    fd, temp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=directory)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
        os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else new_file_mode)
        if st is not None:
            mine = os.fstat(fd)
            if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
                os.fchown(fd, st.st_uid, st.st_gid)
        os.close(fd)
        fd = None
        if before_rename is not None:
            before_rename(temp)
        os.rename(temp, target)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
