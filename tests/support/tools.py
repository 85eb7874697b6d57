"""External tools the integration tests need: skipped when absent locally, a failure in CI.

A developer without Puppet or Chromium still gets a useful local run; CI (``CI=true``, set by
.ci/run) must not pass by skipping what it was meant to test. Every test that depends on a
program outside the venv asks through ``requires`` (a mark, for a module or a test) or
``require`` (inside a test or fixture), never through a bare ``skipif``.
"""
from __future__ import annotations

import os
import shutil
from typing import Optional

import pytest

# Where Debian and EL put daemons that are not on an unprivileged PATH.
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")

# tool -> the Debian package(s) that provide it (.ci/install-deps installs them).
PACKAGES = {
    "node": "nodejs", "puppet": "puppet", "puppet-lint": "puppet-lint", "dnf": "dnf", "rpm": "rpm",
    "rpmbuild": "rpm", "createrepo_c": "createrepo-c", "squid": "squid", "apache2": "apache2",
    "mod_wsgi": "libapache2-mod-wsgi-py3", "mod_ssl": "apache2", "chromium": "chromium",
    "chromedriver": "chromium-driver", "wrk": "wrk", "pacparser": "python3-pacparser",
    "haproxy": "haproxy", "logrotate": "logrotate", "systemd-analyze": "systemd",
    "geoip-database": "geoip-database",
}

MARK = "needs_tool"


def in_ci() -> bool:
    """True on CI, where a missing tool is a broken machine rather than a choice."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def find_tool(name: str) -> Optional[str]:
    """The executable ``name`` on PATH or in the sbin directories, else None."""
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN_DIRS:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    return None


def message(tool: str, detail: str = "") -> str:
    """The one wording for a missing tool: what is missing and how to get it."""
    package = PACKAGES.get(tool)
    how = f"apt-get install {package}, or `make deps`" if package else "see .ci/install-deps"
    return f"missing tool: {tool}{' (' + detail + ')' if detail else ''}; {how}"


def missing(tool: str, detail: str = "") -> None:
    """Skip the running test (locally) or fail it (CI) because ``tool`` is absent."""
    text = message(tool, detail)
    if in_ci():
        pytest.fail(f"{text} [CI=true: a missing tool fails the run]", pytrace=False)
    pytest.skip(text)


def require(tool: str, path: Optional[str] = None, detail: str = "") -> str:
    """Return ``path`` (or the tool found by name) if present; otherwise skip locally, fail in CI.

    ``path`` may be a file that is not an executable (an Apache module, a database): it must exist.
    """
    if path is not None:
        if os.path.exists(path):
            return path
        missing(tool, detail or path)
    found = find_tool(tool)
    if found is None:
        missing(tool, detail)
    return found  # type: ignore[return-value]  # missing() never returns


def requires(tool: str, available: Optional[bool] = None, detail: str = "") -> pytest.MarkDecorator:
    """A mark for a test or module (``pytestmark = requires("puppet")``) checked at setup.

    ``available`` overrides the default check (the tool on PATH) for things like Apache modules.
    tests/conftest.py evaluates the mark: skip locally, fail under CI=true.
    """
    if available is None:
        available = find_tool(tool) is not None
    return getattr(pytest.mark, MARK)(tool=tool, available=bool(available), detail=detail)


def check_marks(item: pytest.Item) -> None:
    """Apply every ``needs_tool`` mark of ``item`` (called from ``pytest_runtest_setup``)."""
    for mark in item.iter_markers(MARK):
        if not mark.kwargs.get("available", False):
            missing(mark.kwargs.get("tool", "?"), mark.kwargs.get("detail", ""))
