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
import subprocess
import tempfile
import time

from . import shellscan
from ._compat import monotonic

KEY = b"CVMFS_HTTP_PROXY"
TEMP_SUFFIX = ".shoal-tmp"
_TAIL = re.compile(br"[ \t]*(?:#[^\n]*)?\Z")
_UNQUOTED_PROXY_TAIL = re.compile(br"(?:[;|][A-Za-z0-9_.:/\[\]@%+=,-]+)+")
_UNSAFE_VALUE_CHARS = set(" \t\r\n\"'\\$`#")


class ConfigFileError(ValueError):
    """The existing file has a CVMFS_HTTP_PROXY line this tool will not edit safely."""


class LockTimeout(OSError):
    """Another shoal-client run held the lock for longer than the allowed wait."""


def rewrite(content, value):
    """Return ``content`` (bytes) with every top-level CVMFS_HTTP_PROXY assignment set to ``value``.

    The file is read as /bin/sh reads it (``shellscan``), because CVMFS sources it: only
    assignments that start a line at the top level are edited, their ``export``/``readonly``/
    ``eval`` prefix kept; text inside quotes, here-documents and other variables' multi-line
    strings is data and stays. Every other byte is kept. Without an assignment, one is appended.
    A single-quoted value stays single-quoted; otherwise the value is double-quoted (it contains
    ``;``). The old value is replaced whatever parameter expansions (``$VAR``, ``${VAR}``,
    quoted or not) it used. ConfigFileError when no edit can be safe: an assignment inside a
    compound command (if/case/loop/function/braces/subshell) or after another command on its
    line, a value with command substitution or continued on the next line, an ``eval`` that
    builds the assignment, a ``readonly`` before an assignment, or a file /bin/sh cannot read.
    """
    encoded = _encode_value(value)
    try:
        found, opaque = shellscan.assignments(content, KEY)
    except shellscan.ShellSyntaxError as err:
        raise ConfigFileError("not a file /bin/sh reads to its end (%s); fix it first" % err)
    if opaque:
        raise ConfigFileError("line %d: export/readonly/eval builds the CVMFS_HTTP_PROXY assignment from "
                              "quoted or expanded text; shoal-client cannot edit it safely (write it as a plain "
                              "CVMFS_HTTP_PROXY=... line)" % opaque[0])
    edits, readonly_line = [], None
    for assignment in found:
        if assignment.nested:
            raise ConfigFileError(
                "line %d: CVMFS_HTTP_PROXY is set inside a compound command (if/case/loop/function/{ }/( )); "
                "shoal-client edits only top-level assignments and will not guess which branch applies: "
                "move it out of the compound command" % assignment.line)
        if assignment.bare:
            if assignment.prefix == b"readonly":
                readonly_line = readonly_line or assignment.line
            continue
        if readonly_line is not None:
            raise ConfigFileError("line %d: CVMFS_HTTP_PROXY is assigned after `readonly` on line %d; /bin/sh "
                                  "aborts there and CVMFS reads every setting of the file as empty: fix the file"
                                  % (assignment.line, readonly_line))
        if assignment.prefixes_command:
            raise ConfigFileError("line %d: CVMFS_HTTP_PROXY=... is followed by a command on the same line, so it "
                                  "only sets that command's environment; put the assignment on a line of its own"
                                  % assignment.line)
        if not assignment.first_on_line:
            raise ConfigFileError("line %d: CVMFS_HTTP_PROXY is assigned after another command on the same line; "
                                  "put it on a line of its own" % assignment.line)
        if assignment.has_substitution:
            raise ConfigFileError("line %d: the CVMFS_HTTP_PROXY value runs a command ($(...) or `...`); "
                                  "shoal-client does not rewrite it" % assignment.line)
        if assignment.spans_lines:
            raise ConfigFileError("line %d: the CVMFS_HTTP_PROXY value is continued on the next line; "
                                  "shoal-client does not rewrite it" % assignment.line)
        if assignment.prefix == b"readonly":
            readonly_line = assignment.line
        edits.append(_edit(content, assignment, encoded))
    if not edits:
        if readonly_line is not None:
            raise ConfigFileError("line %d: CVMFS_HTTP_PROXY is readonly without a value; an added assignment "
                                  "would abort /bin/sh" % readonly_line)
        if content.endswith(b"\\") and not content.endswith(b"\\\\"):
            raise ConfigFileError("the file ends with a backslash and no newline; anything added after it would "
                                  "change the last line: end the file with a newline")
        return content + _appended(content, encoded)
    out, pos = [], 0
    for start, end, replacement in edits:
        out.append(content[pos:start])
        out.append(replacement)
        pos = end
    out.append(content[pos:])
    return b"".join(out)


def _edit(content, assignment, encoded):
    """(start, end, new bytes) replacing the value word and, on a CRLF line, keeping the CR out of it."""
    start, end = assignment.value_start, assignment.value_end
    line_end = content.find(b"\n", end)
    line_end = len(content) if line_end < 0 else line_end
    if end == line_end and content[end - 1:end] == b"\r" and end > start:
        end -= 1  # the shell glued the CR of a CRLF line to the word
    glued = _UNQUOTED_PROXY_TAIL.match(content, end, line_end)
    if glued and glued.end() > end and content[start:end].strip(b"\r") and b'"' not in content[start:end] \
            and b"'" not in content[start:end] and content[glued.end():glued.end() + 1] in (b"", b" ", b"\t", b"\r", b"\n"):
        # an unquoted proxy string: /bin/sh ran "DIRECT" (or a pipe) as a command; the site meant one value
        end = glued.end()
    tail = content[end:line_end]
    crlf = tail.endswith(b"\r")
    core = tail[:-1] if crlf else tail
    if not _TAIL.match(core):
        raise ConfigFileError("line %d: unexpected text after the CVMFS_HTTP_PROXY value" % assignment.line)
    old = content[start:end]
    if assignment.prefix == b"eval":  # eval parses the value again: quote it twice
        word = b"\"'" + encoded + b"'\""
    elif len(old) >= 2 and old[:1] == b"'" and old[-1:] == b"'" and old.count(b"'") == 2:
        word = b"'" + encoded + b"'"
    else:
        word = b'"' + encoded + b'"'
    if crlf and b"#" not in core:
        # /bin/sh would read the CR as part of the value (CVMFS then sees "DIRECT\r"); a comment
        # swallows it and keeps the line's CRLF for the editors that wrote it.
        return start, line_end, word + core + b" #\r"
    return start, end, word


def _appended(content, encoded):
    eol = b"\r\n" if b"\r\n" in content else b"\n"
    line = KEY + b'="' + encoded + b'"' + (b" #" if eol == b"\r\n" else b"") + eol
    sep = b""
    if content and not content.endswith(b"\n"):
        sep = b"\n"  # no CR: it would become part of the last line's value
    if content.endswith((b"\\", b"\\\n")):
        sep += b"\n"  # a backslash-newline would continue the last line into ours
    return sep + line


def shell_syntax_error(data, sh="/bin/sh"):
    """What ``sh -n`` (parse, run nothing) says about ``data``, or None if it parses (or there is no sh)."""
    if not os.access(sh, os.X_OK):
        return None
    proc = subprocess.Popen([sh, "-n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(data)
    if proc.returncode == 0:
        return None
    return err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["exit status %d" % proc.returncode]


def current_values(content):
    """The values /bin/sh gives the top-level CVMFS_HTTP_PROXY assignments (quotes removed)."""
    values = []
    found, _ = shellscan.assignments(content, KEY)
    for assignment in found:
        if assignment.bare or assignment.nested:
            continue
        word = content[assignment.value_start:assignment.value_end].rstrip(b"\r")
        for _ in range(2 if assignment.prefix == b"eval" else 1):
            if len(word) >= 2 and word[:1] in (b'"', b"'") and word[-1:] == word[:1]:
                word = word[1:-1]
        values.append(word)
    return values


def _encode_value(value):
    if not value or any(c in _UNSAFE_VALUE_CHARS for c in value):
        raise ValueError("refusing to write proxy value %r" % (value,))
    return value.encode("ascii")


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
            raise ConfigFileError("cannot open the lock file %s: %s (see lock_file)" % (self.path, err.strerror))
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
        _check_syntax(old, new)
        _replace(target, new, st, new_file_mode, before_rename)
    return True


LATER_DIRS = ("domain.d", "config.d")  # read after default.local, in this order (cvmfs options.cc ParseDefault)
LATER_SUFFIXES = (".conf", ".local")


def overriding_files(path, listdir=os.listdir):
    """[(file, line)] of later CVMFS files that set CVMFS_HTTP_PROXY again, when ``path`` is a default.local.

    CVMFS reads default.conf, default.d/*.conf, default.local, then for each repository
    domain.d/DOMAIN.{conf,local} and config.d/REPO.{conf,local}; the last assignment wins, so a value
    there hides the one written here for those repositories. Unreadable or unparsable files are skipped.
    """
    if os.path.basename(path) != "default.local":
        return []
    base, found = os.path.dirname(path), []
    for sub in LATER_DIRS:
        try:
            names = sorted(listdir(os.path.join(base, sub)))
        except (IOError, OSError):
            continue
        for name in names:
            if not name.endswith(LATER_SUFFIXES):
                continue
            later = os.path.join(base, sub, name)
            try:
                with open(later, "rb") as fh:
                    assignments, _ = shellscan.assignments(fh.read(1024 * 1024), KEY)
            except (IOError, OSError, shellscan.ShellSyntaxError):
                continue
            lines = [a.line for a in assignments if not a.bare]
            if lines:
                found.append((later, lines[0]))
    return found


def _check_syntax(old, new):
    """Refuse to write a file /bin/sh cannot parse (CVMFS would then read none of its settings)."""
    problem = shell_syntax_error(new)
    if problem is None:
        return
    if shell_syntax_error(old) is not None:
        raise ConfigFileError("/bin/sh cannot parse this file (%s), so CVMFS reads none of its settings; "
                              "fix it first" % problem[0])
    raise ConfigFileError("the edited file would not parse in /bin/sh (%s); not writing it" % problem[0])


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
