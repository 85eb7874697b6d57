"""The agent's identity: a uuid created once and kept in the state directory.

A stable uuid makes a restart or reboot refresh the server's existing entry instead of adding a
duplicate that lingers until it expires.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid as uuidlib
from typing import Optional, Sequence

logger = logging.getLogger(__name__)

UUID_FILE = "uuid"
SYSTEM_STATE_DIR = "/var/lib/shoal-agent"
_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


class StateDirError(OSError):
    """No usable state directory; ``main`` reports it as a problem with ``[general] state_dir``."""


def default_state_dirs(home: Optional[str] = None) -> Sequence[str]:
    """Where the state lives when ``state_dir`` is empty: the system directory, else ``~/.shoal``."""
    return (SYSTEM_STATE_DIR, os.path.join(home or os.path.expanduser("~"), ".shoal"))


def resolve_state_dir(configured: str, candidates: Sequence[str] = ()) -> str:
    """Return a writable state directory, creating it if needed.

    A configured directory must work; otherwise the first usable candidate wins, so an agent run
    by hand as an ordinary user falls back to ``~/.shoal`` instead of failing.
    """
    choices = [configured] if configured else list(candidates or default_state_dirs())
    problems = []
    for folder in choices:
        try:
            os.makedirs(folder, mode=0o755, exist_ok=True)
        except OSError as err:
            problems.append(f"{folder}: {err.strerror}")
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
        problems.append(f"{folder}: not writable")
    raise StateDirError("no writable state directory (" + "; ".join(problems) + ")")


def read_uuid(state_dir: str) -> Optional[str]:
    """Return the saved uuid, or None when there is none (or it is unreadable or malformed)."""
    path = os.path.join(state_dir, UUID_FILE)
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        logger.warning("ignoring unreadable %s (%s); a new uuid will be created", path, err)
        return None
    if not _UUID_RE.match(text):
        logger.warning("ignoring malformed uuid in %s; a new uuid will be created", path)
        return None
    return text


def new_uuid() -> str:
    return uuidlib.uuid4().hex


def load_or_create_uuid(state_dir: str) -> str:
    """Return the uuid kept in ``state_dir``, writing a new one atomically on first start."""
    existing = read_uuid(state_dir)
    if existing:
        return existing
    value = new_uuid()
    atomic_write(os.path.join(state_dir, UUID_FILE), value + "\n")
    logger.info("created agent uuid %s in %s", value, state_dir)
    return value


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to a temporary file and rename it over ``path``, so readers never see half."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
