"""shoal-client builds from its own directory into one wheel that installs and runs on 2.7 and 3.x."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from shoal_client import __version__
from support.tools import missing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY27 = os.path.join(os.environ.get("SHOAL_PYENV_VERSIONS", "/root/.pyenv/versions"), "2.7.18", "bin", "python")
MODULES = ["__init__", "__main__", "_compat", "config", "cvmfsconf", "deadline", "hostrule", "main", "minijson",
           "proxies", "shellscan"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of shoal-client/ (pip builds in-tree; the shared tree stays clean)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "shoal-client"
    shutil.copytree(os.path.join(ROOT, "shoal-client"), src,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "dist", "__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "wheels"), str(src)], check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "wheels").iterdir()
    return built


def test_one_universal_wheel_with_every_module_and_the_command(wheel):
    assert wheel.name == f"shoal_client-{__version__}-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(f"shoal_client-{__version__}.dist-info/entry_points.txt").decode()
        metadata = zf.read(f"shoal_client-{__version__}.dist-info/METADATA").decode()
    assert sorted(n for n in names if n.startswith("shoal_client/")) == sorted(
        f"shoal_client/{m}.py" for m in MODULES)
    assert "shoal-client = shoal_client.main:main" in entry_points
    assert "Requires-Dist" not in metadata  # standard library only


@pytest.mark.parametrize("python", [sys.executable, PY27], ids=["venv", "2.7"])
def test_wheel_installs_and_runs(wheel, tmp_path, python):
    if not os.access(python, os.X_OK):
        missing("pyenv Python", python)
    target = tmp_path / "prefix"
    # --ignore-installed: without it pip would uninstall the venv's editable shoal-client first.
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                    "--disable-pip-version-check", "--no-warn-script-location", "--prefix", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    if python == sys.executable:  # the venv's own install (used by test_e2e.py) must survive
        assert os.access(os.path.join(os.path.dirname(sys.executable), "shoal-client"), os.X_OK)
    (site,) = target.glob("lib/python*/site-packages")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([str(target / "bin" / "shoal-client"), "--version"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, f"shoal-client {__version__}\n"), proc.stderr
    with open(target / "bin" / "shoal-client") as fh:
        assert fh.readline().strip() == "#!" + python
