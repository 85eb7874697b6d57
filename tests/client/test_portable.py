"""Run the stdlib-only client suite (tests/client/portable) under every Python in the pyenv versions
directory and under the venv's Python; the terminal summary lists which ones ran.

The runs are started together (at most PARALLEL at a time) by a session fixture; each parametrized
test then reports one interpreter's result, so a failure names the interpreter.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.tools import missing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORTABLE = os.path.join(ROOT, "tests", "client", "portable")
CLIENT_SRC = os.path.join(ROOT, "shoal-client")
VERSIONS_DIR = os.environ.get("SHOAL_PYENV_VERSIONS", "/root/.pyenv/versions")
MIN_INTERPRETERS = 3
MIN_TESTS = 80
PARALLEL = 3


def _version_key(path: str):
    name = os.path.basename(os.path.dirname(os.path.dirname(path)))
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def pyenv_pythons() -> list:
    return sorted(glob.glob(os.path.join(VERSIONS_DIR, "*", "bin", "python")), key=_version_key)


INTERPRETERS = pyenv_pythons() + [sys.executable]


def _label(path: str) -> str:
    return "venv" if path == sys.executable else os.path.basename(os.path.dirname(os.path.dirname(path)))


def run_suite(python: str) -> dict:
    """Run the portable suite under ``python``; return its version, exit status, output and timing."""
    if not os.access(python, os.X_OK):
        return {"absent": True}
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = CLIENT_SRC
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no .pyc files in the source tree (Python 2 writes them beside the .py)
    start = time.monotonic()
    proc = subprocess.run([python, "-m", "unittest", "discover", "-s", PORTABLE, "-t", PORTABLE, "-p", "test_*.py"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    ran = re.search(r"Ran (\d+) tests?", proc.stderr)
    return {"absent": False, "version": version, "returncode": proc.returncode, "stderr": proc.stderr,
            "tests": int(ran.group(1)) if ran else 0, "elapsed": time.monotonic() - start}


@pytest.fixture(scope="session")
def suite_results(portable_runs) -> dict:
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = dict(zip(INTERPRETERS, pool.map(run_suite, INTERPRETERS)))
    for python, res in results.items():
        if res["absent"]:
            portable_runs.append((python, "ABSENT", "skipped"))
        else:
            portable_runs.append((f"Python {res['version']} ({python})", "PASSED" if res["returncode"] == 0
                                  else "FAILED", f"{res['tests']} tests in {res['elapsed']:.1f} s"))
    return results


def test_enough_interpreters_found():
    found = pyenv_pythons()
    assert len(found) >= MIN_INTERPRETERS, (
        f"only {len(found)} Python(s) under {VERSIONS_DIR}: the client must be tested on at least "
        f"{MIN_INTERPRETERS} (2.7 and 3.x)")


@pytest.mark.parametrize("python", INTERPRETERS, ids=[_label(p) for p in INTERPRETERS])
def test_portable_suite(python, suite_results):
    res = suite_results[python]
    if res["absent"]:
        missing("pyenv Python", python)
    assert res["returncode"] == 0, f"portable suite failed under {python} ({res['version']}):\n{res['stderr'][-6000:]}"
    assert res["tests"] >= MIN_TESTS, res["stderr"][-2000:]
