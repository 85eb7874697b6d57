"""Fixtures for the deployment tests: `make repo` once per session, served over HTTP on loopback."""
from __future__ import annotations

import functools
import http.server
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from deploy_helpers import PACKAGES, Built, make, make_env, package_version, run


def installed_shoal() -> str:
    """The shoal distributions this interpreter sees, and where (asked in a fresh process)."""
    code = ("import importlib.metadata as m; print(sorted((d.metadata['Name'], str(getattr(d, '_path', '')))"
            " for d in m.distributions() if (d.metadata['Name'] or '').startswith('shoal')))")
    return run([sys.executable, "-c", code]).stdout


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def www(tmp_path_factory) -> Iterator[Tuple[Path, str]]:
    """A stdlib HTTP server on a free loopback port serving a temp directory: (directory, base URL)."""
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="deploy-www", daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(scope="session")
def built(tmp_path_factory, www) -> Built:
    """`make repo` (which runs `make rpms` first) into temp dirs, the repository under the HTTP root."""
    root, base = www
    dist = tmp_path_factory.mktemp("dist")
    repo = root / "repo"
    url = f"{base}/repo"
    before = installed_shoal()
    proc = make("repo", make_env(SHOAL_DIST_DIR=str(dist), SHOAL_REPO_DIR=str(repo), SHOAL_REPO_URL=url))
    # rpmbuild runs pip with the venv's python: it must install into the buildroot only, never
    # uninstall the venv's own (editable) shoal packages. (A short wait covers a developer
    # reinstalling one of them at the same moment in a shared work tree.)
    deadline = time.monotonic() + 20
    while installed_shoal() != before and time.monotonic() < deadline:
        time.sleep(1)
    assert installed_shoal() == before
    return Built(dist, repo, url, {short: package_version(short) for short in PACKAGES}, proc.stdout + proc.stderr)
