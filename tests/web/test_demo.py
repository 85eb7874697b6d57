"""The demo end to end (what `make demo` runs once the venv exists): >= 5 caches on the status page,
then Ctrl-C leaves no process, no broker node and no files behind."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from support.rabbitnode import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 100.0   # seconds from start to >= 5 caches on the page (20-65 s on this machine)


def processes_mentioning(text: str):
    """(pid, command line) of every process whose command line contains ``text``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(name), cmdline))
    return found


def cache_count(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/", timeout=5) as response:
        match = re.search(r'id="cache-count">(\d+)<', response.read().decode())
    return int(match.group(1)) if match else 0


def test_demo_then_ctrl_c(tmp_path):
    port = free_port()
    state = str(tmp_path / "demo-state")
    log_path = tmp_path / "demo.out"
    env = dict(os.environ, SHOAL_DEMO_PORT=str(port), SHOAL_DEMO_DIR=state)
    with open(log_path, "wb") as log:
        # Its own session and process group: the SIGINT below goes to the whole group, as Ctrl-C in a
        # terminal does. (Not `make demo` itself: make would reinstall the shared venv if it looks stale.)
        demo = subprocess.Popen([sys.executable, os.path.join(REPO, "demo", "run.py")], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    started = time.monotonic()
    try:
        count = 0
        while time.monotonic() - started < DEADLINE:
            assert demo.poll() is None, log_path.read_text()
            try:
                count = cache_count(port)
            except OSError:
                count = 0
            if count >= 5 and "Press Ctrl-C" in log_path.read_text():
                break
            time.sleep(0.5)
        up_after = time.monotonic() - started
        output = log_path.read_text()
        assert count >= 5, output
        print(f"demo: {count} caches on the status page after {up_after:.1f} s")
        assert "CVMFS_HTTP_PROXY=http://" in output      # shoal-client --dump ran
        assert f"curl 'http://127.0.0.1:{port}/nearest?ip=" in output
        assert f"curl 'http://127.0.0.1:{port}/wpad.dat?ip=" in output
        assert processes_mentioning(state + "/"), "the demo's processes should run from its state folder"

        os.killpg(demo.pid, signal.SIGINT)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        leftovers = processes_mentioning(state + "/")
        for pid, _ in leftovers:   # only if the demo failed to clean up: never leave them to others
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    output = log_path.read_text()
    assert "Nothing is left running." in output, output
    assert leftovers == [], leftovers
    assert not os.path.exists(state)
    try:
        cache_count(port)
        raise AssertionError("something still answers on the demo port")
    except OSError:
        pass


def test_demo_says_when_its_port_is_taken(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        state = str(tmp_path / "state")
        out = subprocess.run([sys.executable, os.path.join(REPO, "demo", "run.py"), "--port", str(port),
                              "--dir", state], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert f"SHOAL_DEMO_PORT={port + 1} make demo" in out.stderr
    assert not os.path.exists(state) and processes_mentioning(state + "/") == []


def test_missing_rabbitmq_server_says_how_to_install_it(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("shoal_demo_run", os.path.join(REPO, "demo", "run.py"))
    demo_run = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = demo_run   # dataclasses look their module up there
    spec.loader.exec_module(demo_run)
    assert demo_run.rabbitmq_missing() is None                     # installed here
    message = demo_run.rabbitmq_missing(str(tmp_path))             # a machine without it
    assert "apt-get install rabbitmq-server" in message and "dnf install rabbitmq-server" in message
