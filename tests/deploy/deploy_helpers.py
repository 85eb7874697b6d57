"""Helpers shared by the deployment tests (imported by conftest.py and the test modules)."""
from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "agent", "client")
# What EL 9 lacks and `make rpms` builds from PyPI sdists (repo/specs/python3-*.spec): name -> version.
THIRD_PARTY = {"python3-webpy": "0.62", "python3-pika": "1.2.1"}
DIST_TAG = ".el9"  # repo/build-rpms.sh's default %{dist}


def package_version(short: str) -> str:
    """``__version__`` of shoal_<short>, read the way repo/build-rpms.sh reads it."""
    tree = ast.parse((ROOT / f"shoal-{short}" / f"shoal_{short}" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"shoal_{short} has no __version__")


def run(cmd: List[str], timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure the assertion shows its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)
    if check:
        assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} -> {proc.returncode}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def make_env(**extra: str) -> Dict[str, str]:
    """This environment without any SHOAL_* setting of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(extra)
    return env


def make(target: str, env: Dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`make TARGET` with this interpreter's venv, without letting make reinstall the venv."""
    venv = sys.prefix
    return run(["make", "-C", str(ROOT), f"VENV={venv}", "-o", f"{venv}/.installed", target], env=env,
               timeout=timeout)


@dataclasses.dataclass(frozen=True)
class Built:
    dist: Path      # what `make rpms` wrote (SHOAL_DIST_DIR)
    repo: Path      # what `make repo` wrote (SHOAL_REPO_DIR), served at url
    url: str        # SHOAL_REPO_URL
    versions: Dict[str, str]
    output: str

    def rpm(self, short: str, kind: str = "noarch") -> Path:
        """shoal-SHORT's RPM (SHORT may be "server-httpd"); kind "src" for its SRPM."""
        version = self.versions[short.split("-")[0]]
        return self.dist / f"shoal-{short}-{version}-1{DIST_TAG}.{kind}.rpm"

    def third_party(self, name: str, kind: str = "noarch") -> Path:
        """One of THIRD_PARTY's RPMs (its Release is the spec's)."""
        (path,) = self.dist.glob(f"{name}-{THIRD_PARTY[name]}-*{DIST_TAG}.{kind}.rpm")
        return path

    def binary_rpms(self) -> List[Path]:
        return sorted(p for p in self.dist.glob("*.noarch.rpm"))


def dnf(work: Path, *args: str, reposdir: Optional[Path] = None, check: bool = True) -> subprocess.CompletedProcess:
    """dnf confined to ``work``: its own root, cache and config, no system repositories or plugins."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "dnf.conf"
    conf.write_text("[main]\ngpgcheck=1\nskip_if_unavailable=False\n")
    empty = work / "no-repos"
    empty.mkdir(exist_ok=True)
    cmd = ["dnf", "-y", "--noplugins", f"--installroot={work / 'root'}", f"--config={conf}",
           f"--setopt=reposdir={reposdir or empty}", f"--setopt=cachedir={work / 'cache'}",
           "--releasever=9", "--setopt=metadata_expire=0", *args]
    return run(cmd, check=check, timeout=120)
