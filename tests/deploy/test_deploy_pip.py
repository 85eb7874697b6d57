"""pip: each package builds an sdist and a wheel; `pip install ./shoal-client` alone gives a working client."""
from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Optional

import pytest

from deploy_helpers import PACKAGES, ROOT, make_env, package_version, run


def copy_package(short: str, dest: Path) -> Path:
    """The package's source tree with symlinks resolved (as a release tarball has it), outside the work tree."""
    tree = dest / f"shoal-{short}"
    shutil.copytree(ROOT / f"shoal-{short}", tree, symlinks=False,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__", "*.pyc"))
    return tree


@pytest.mark.parametrize("short", PACKAGES)
def test_build_makes_sdist_and_wheel(short, tmp_path):
    tree = copy_package(short, tmp_path)
    out = tmp_path / "out"
    # --no-isolation: build with the venv's setuptools and wheel, nothing fetched from an index.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)], timeout=240)
    version = package_version(short)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    assert re.fullmatch(rf"shoal[_-]{short}-{re.escape(version)}\.tar\.gz", sdist.name)
    assert re.fullmatch(rf"shoal_{short}-{re.escape(version)}-(py2\.)?py3-none-any\.whl", wheel.name), wheel.name

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"shoal_{short}-{version}.dist-info/METADATA").decode()
        entry_points = zf.read(f"shoal_{short}-{version}.dist-info/entry_points.txt").decode()
    assert f"shoal_{short}/__init__.py" in names and f"shoal-{short} = shoal_{short}.main:main" in entry_points
    # Every module and data file of the work tree is in the wheel (the agent's symlinked ones as files).
    package = ROOT / f"shoal-{short}" / f"shoal_{short}"
    sources = {os.path.relpath(p, package.parent) for p in glob.glob(str(package / "**" / "*"), recursive=True)
               if os.path.isfile(p) and "__pycache__" not in p and not p.endswith((".pyc", ".pyo"))}
    assert sources <= set(names), sources - set(names)
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
        assert all(not m.issym() for m in tf.getmembers())
    assert "pyproject.toml" in members and "setup.cfg" in members and sources <= members
    # The licence travels with every wheel and sdist; the sdist carries the conf/ samples.
    assert any(re.fullmatch(rf"shoal_{short}-{re.escape(version)}\.dist-info/(licenses/)?LICENSE", n) for n in names), names
    assert "LICENSE" in members
    conf = {f"conf/{p.name}" for p in (ROOT / f"shoal-{short}" / "conf").iterdir() if p.is_file()}
    assert conf and conf <= members, conf - members
    if short == "client":
        assert "Requires-Dist" not in metadata  # standard library only
    # pip installs only what is imported: no geoip2 (and its aiohttp, requests); pygeoip is an extra.
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    assert not [r for r in requires if r.lower().startswith("geoip2")]
    assert all("extra ==" in r for r in requires if r.startswith(("pygeoip", "python-geoip-geolite2")))


def _wheelhouse(dest: Path) -> Optional[Path]:
    """A local directory with a setuptools wheel new enough to build wheels on its own (>= 70.1).

    `pip install ./shoal-client` builds in an isolated environment that needs setuptools; the test
    must not download it, so it comes from wheels already on this machine (pip's find-links
    directories and the machine's local package mirror).
    """
    candidates = [d for d in os.environ.get("PIP_FIND_LINKS", "").split() if os.path.isdir(d)]
    candidates += ["/opt/wheels", "/opt/pypi/files"]
    best = None
    for folder in candidates:
        for path in glob.glob(os.path.join(folder, "setuptools-*-py3-none-any.whl")):
            match = re.match(r"setuptools-(\d+)\.(\d+)", os.path.basename(path))
            if match and (int(match.group(1)), int(match.group(2))) >= (70, 1):
                key = (int(match.group(1)), int(match.group(2)))
                if best is None or key > best[0]:
                    best = (key, path)
    if best is None:
        return None
    dest.mkdir()
    shutil.copy(best[1], dest)
    return dest


def test_pip_install_client_alone_in_a_fresh_venv(tmp_path):
    wheelhouse = _wheelhouse(tmp_path / "wheelhouse")
    if wheelhouse is None:
        pytest.skip("no local setuptools>=70.1 wheel to build with offline")
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    # An empty venv (no pip, no setuptools); this venv's pip installs into it with --python.
    run([base_python, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    tree = copy_package("client", tmp_path)
    env = make_env(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_CONFIG_FILE=os.devnull)
    env.pop("PIP_FIND_LINKS", None)
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    run([*pip, "install", "--no-index", "--find-links", str(wheelhouse), str(tree)], env=env, timeout=240)
    installed = run([*pip, "list", "--format=freeze"], env=env).stdout.lower().replace("_", "-").split()
    assert installed == [f"shoal-client=={package_version('client')}"], installed
    out = run([str(venv / "bin" / "shoal-client"), "--version"], env=env)
    assert package_version("client") in out.stdout + out.stderr
    # Not the work tree's code: the venv's own copy.
    where = run([str(python), "-c", "import shoal_client; print(shoal_client.__file__)"], env=env).stdout
    assert where.startswith(str(venv))
