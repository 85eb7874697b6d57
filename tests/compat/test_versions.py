"""Our packages upgrade upstream's: same RPM names, versions above every upstream release.

A site with upstream's RPMs installed moves to ours with ``dnf upgrade``; that works only while
our versions sort above upstream's last ones (by rpm's own comparison, asked of the rpm tool).
"""
from __future__ import annotations

import subprocess

import pytest

import shoal_agent
import shoal_client
import shoal_server
from support.tools import requires

# The highest version each upstream package reached (hep-gc/shoal: __version__.py at HEAD, 2025;
# the RPM names are the same as ours: shoal-server, shoal-agent, shoal-client).
UPSTREAM_LAST = {"shoal-server": "1.1.0", "shoal-agent": "1.0.2", "shoal-client": "1.0.4"}
OURS = {"shoal-server": shoal_server.__version__, "shoal-agent": shoal_agent.__version__,
        "shoal-client": shoal_client.__version__}


def rpm_vercmp(a: str, b: str) -> int:
    out = subprocess.run(["rpm", "--eval", f"%{{lua: print(rpm.vercmp('{a}', '{b}'))}}"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int(out.strip())


@requires("rpm")
@pytest.mark.parametrize("name", sorted(UPSTREAM_LAST))
def test_our_version_upgrades_upstreams_last_release(name):
    assert rpm_vercmp(OURS[name], UPSTREAM_LAST[name]) == 1, (name, OURS[name], UPSTREAM_LAST[name])
