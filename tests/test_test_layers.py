"""The test layers: what `make test-fast` leaves out, and that CI cannot pass by skipping a missing tool."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

PROBE = """
import pytest
from support.tools import require, requires

@requires("no-such-tool-shoal", detail="probe")
def test_marked():
    pass


@requires("python3")
def test_present_tool_runs():
    pass
"""

INLINE = """
from support.tools import require


def test_inline():
    require("no-such-tool-shoal")
"""


def run_probe(tmp_path, source: str, ci: str) -> subprocess.CompletedProcess:
    """Run ``source`` as a test module under the real tests/conftest.py hooks."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util
        import sys
        sys.path.insert(0, {TESTS!r})
        spec = importlib.util.spec_from_file_location("shoal_root_conftest", {TESTS!r} + "/conftest.py")
        root = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(root)
        pytest_collection_modifyitems = root.pytest_collection_modifyitems
        pytest_runtest_setup = root.pytest_runtest_setup
    """))
    (tmp_path / "test_probe.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)


@pytest.mark.integration  # runs pytest itself (a few seconds); the harness, not the product
@pytest.mark.parametrize("source", [PROBE, INLINE], ids=["mark", "inline"])
def test_missing_tool_skips_locally_and_fails_in_ci(tmp_path, source):
    local = run_probe(tmp_path, source, ci="")
    assert local.returncode == 0, local.stdout
    assert "missing tool: no-such-tool-shoal" in local.stdout and "skipped" in local.stdout

    ci = run_probe(tmp_path, source, ci="true")
    assert ci.returncode == 1, ci.stdout
    # a failure in setup (mark) or in the test (inline): either way the run is red, with the reason
    assert ("1 error" in ci.stdout or "1 failed" in ci.stdout) and "a missing tool fails the run" in ci.stdout
    if source is PROBE:
        assert "1 passed" in ci.stdout  # a present tool is not affected


@pytest.mark.integration
def test_fast_layer_leaves_out_process_tests():
    """Tests that start processes are marked integration centrally; pure ones stay in `make test-fast`."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "integration",
                          "-p", "no:cacheprovider", "tests/"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    integration = set(line for line in out.stdout.splitlines() if "::" in line)
    files = {line.split("::")[0] for line in integration}
    # by directory, by fixture (agent_factory, server_factory, exchange), by explicit mark
    assert {"tests/deploy/test_deploy_puppet.py", "tests/reliability/test_churn.py",
            "tests/agent/test_agent_daemon.py", "tests/server/test_server_live.py",
            "tests/web/test_browser.py"} <= files, sorted(files)
    assert "tests/compat/test_agent_configs.py::" \
        "test_head_file_without_use_credentials_logs_in_as_guest_on_a_real_broker" in integration
    # pure tests are not
    for pure in ("tests/server/test_ranking.py", "tests/client/test_minijson_hypothesis.py",
                 "tests/compat/test_agent_configs.py::test_every_release_has_a_config_file"):
        assert not any(line.startswith(pure) for line in integration), pure


def fake_bin(tmp_path, uid: int, installed: set) -> dict:
    """A PATH where dpkg-query knows ``installed``, id says ``uid`` and apt-get logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": "for a; do p=$a; done\ncase \" %s \" in *\" $p \"*) printf installed;; esac\n"
                      % " ".join(sorted(installed)),
        "id": f"echo {uid}\n",
        "apt-get": f"echo \"$@\" >> {tmp_path}/apt.log\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return env


def apt_packages() -> list:
    out = subprocess.run(["bash", "-c", "eval \"$(sed -n '/^APT_PACKAGES=(/,/)/p; /^APT_PACKAGES+=(/p' .ci/run)\";"
                          " echo ${APT_PACKAGES[@]}"], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.split()


def test_install_deps_is_a_no_op_when_everything_is_there(tmp_path):
    packages = apt_packages()
    assert {"squid", "puppet", "dnf", "chromium", "nodejs"} <= set(packages)
    env = fake_bin(tmp_path, 0, set(packages))
    proc = subprocess.run([os.path.join(ROOT, ".ci", "install-deps")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "apt.log").exists()


def test_install_deps_installs_only_what_is_missing_as_root(tmp_path):
    packages = apt_packages()
    env = fake_bin(tmp_path, 0, set(packages) - {"wrk", "squid"})
    proc = subprocess.run([os.path.join(ROOT, ".ci", "install-deps")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].split()[-2:] == ["squid", "wrk"], calls
    assert "install" in calls[0] and "--no-install-recommends" in calls[0]


def test_install_deps_without_root_says_what_to_run(tmp_path):
    packages = apt_packages()
    env = fake_bin(tmp_path, 1000, set(packages) - {"puppet"})
    run = [os.path.join(ROOT, ".ci", "install-deps")]
    local = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert local.returncode == 0 and "apt-get install --no-install-recommends puppet" in local.stderr
    ci = subprocess.run(run, capture_output=True, text=True, env={**env, "CI": "true"}, timeout=60)
    assert ci.returncode == 1
    assert not (tmp_path / "apt.log").exists()
