#!/usr/bin/env python3
"""``make demo``: a whole Shoal on loopback — CA, TLS broker, server, six agents around the world, a client.

Everything lives under ``.demo/`` (or ``$SHOAL_DEMO_DIR``) and runs until Ctrl-C; then every
process it started is stopped by PID (agents, server, the RabbitMQ node's whole session) and the
folder is removed. Nothing listens anywhere but 127.0.0.1. The status page is on port 8080
(``$SHOAL_DEMO_PORT`` or ``--port`` to change it).

The caches are placed through ``external_ip`` in the address ranges of CERN, Fermilab, TRIUMF,
KEK and the Australian National University, so the bundled GeoLite2 database puts them on the
map. Each agent measures its load the way it does beside a real Squid (``load_source = squid``):
it reads ``client_http.kbytes_out`` from a cache-manager page, here served by this script with a
value that drifts over time, so the loads on the status page move.
"""
from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEFAULT_PORT = 8080
AGENT_INTERVAL = 5.0
STEPS = 6


@dataclasses.dataclass(frozen=True)
class Site:
    """One demo cache: where it claims to be, and how its load swings (fractions of max_load)."""

    hostname: str
    external_ip: str
    where: str
    max_load: float
    base: float
    swing: float
    period: float

    def load(self, now: float, noise: Callable[[], float] = random.random) -> float:
        """KB/s out at ``now``: a slow wave around ``base`` plus a little jitter."""
        phase = (zlib.crc32(self.hostname.encode()) % 628) / 100.0
        level = self.base + self.swing * math.sin(2 * math.pi * now / self.period + phase) + 0.04 * (noise() - 0.5)
        return round(self.max_load * min(1.05, max(0.005, level)), 1)


SITES = (
    Site("squid1.cern.demo.example", "188.184.21.108", "CERN, Geneva", 100000, 0.55, 0.35, 90),
    Site("squid2.cern.demo.example", "128.141.150.20", "CERN, Switzerland", 100000, 0.25, 0.2, 120),
    Site("squid.fnal.demo.example", "131.225.70.20", "Fermilab, Batavia", 122000, 0.4, 0.3, 75),
    Site("squid.triumf.demo.example", "142.90.100.10", "TRIUMF, Vancouver", 80000, 0.7, 0.3, 60),
    Site("squid.kek.demo.example", "130.87.104.1", "KEK, Japan", 60000, 0.3, 0.25, 100),
    Site("squid.anu.demo.example", "150.203.2.2", "ANU, Canberra", 50000, 0.15, 0.12, 80),
)


class DemoError(Exception):
    """Stops the demo with a message for the person at the terminal; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Progress:
    """One line per step: ``[3/8] what is happening ... done (2.1 s)``."""

    def __init__(self, total: int, out=sys.stdout) -> None:
        self.total, self.out, self.step, self.started = total, out, 0, time.monotonic()

    def begin(self, text: str) -> float:
        self.step += 1
        self.out.write(f"[{self.step}/{self.total}] {text} ... ")
        self.out.flush()
        return time.monotonic()

    def done(self, since: float, text: str = "done") -> None:
        self.out.write(f"{text} ({time.monotonic() - since:.1f} s)\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(f"      {text}\n")
        self.out.flush()


# ----------------------------------------------------------------------------------------------
# Checks before anything starts.

def rabbitmq_missing(bin_dir: str = "") -> Optional[str]:
    """None when rabbitmq-server is installed, else how to install it."""
    from support.rabbitnode import RABBIT_BIN

    if os.access(os.path.join(bin_dir or RABBIT_BIN, "rabbitmq-server"), os.X_OK):
        return None
    return ("rabbitmq-server is not installed; the demo starts its own private RabbitMQ node.\n"
            "  Debian/Ubuntu:  sudo apt-get install rabbitmq-server\n"
            "  EL/Fedora:      sudo dnf install rabbitmq-server   (EPEL or the RabbitMQ repository)\n"
            "The machine's own RabbitMQ service need not run: the demo never touches it.")


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tool(name: str) -> str:
    """A console script of the venv running this file (make demo installs all three packages)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if found:
        return found
    raise DemoError(f"{name} is not installed; run `make demo` (it creates .venv and installs the packages)", 2)


def processes_under(folder: str) -> List[int]:
    """PIDs whose command line mentions ``folder`` (left over from a demo that was killed)."""
    found = []
    marker = folder.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if marker in handle.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


# ----------------------------------------------------------------------------------------------
# The pieces.

def write_ini(path: str, sections: Dict[str, Dict[str, object]]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for section, values in sections.items():
            handle.write(f"[{section}]\n")
            for key, value in values.items():
                handle.write(f"{key} = {value}\n")
            handle.write("\n")
    return path


class LoadPages:
    """Cache-manager pages (``/HOSTNAME/squid-internal-mgr/5min``) whose kbytes_out follows each Site."""

    def __init__(self, sites: List[Site], clock: Callable[[], float] = time.time) -> None:
        by_name = {site.hostname: site for site in sites}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                parts = self.path.strip("/").split("/")
                site = by_name.get(parts[0]) if len(parts) == 3 and parts[1:] == ["squid-internal-mgr", "5min"] \
                    else None
                if site is None:
                    self.send_error(404)
                    return
                load = site.load(clock())
                body = (f"sample_start_time = {clock() - 300:.6f}\nsample_end_time = {clock():.6f}\n"
                        f"client_http.requests = {load / 40:.6f}/sec\n"
                        f"client_http.kbytes_out = {load:.6f}/sec\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="demo-load-pages", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, site: Site) -> str:
        return f"http://127.0.0.1:{self.port}/{site.hostname}/squid-internal-mgr/5min"

    def start(self) -> "LoadPages":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Child:
    """A process the demo started in its own session (so Ctrl-C reaches the demo, which stops it in order)."""

    def __init__(self, name: str, argv: List[str], log_path: str) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def http_json(url: str, timeout: float = 5.0) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until(check: Callable[[], bool], timeout: float, what: str, children: Sequence[Child] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                raise DemoError(f"{child.name} exited with status {child.proc.returncode} while waiting for "
                                f"{what}; its log ({child.log_path}) ends with:\n{child.tail()}")
        try:
            if check():
                return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    raise DemoError(f"gave up waiting for {what} after {timeout:.0f} s")


# ----------------------------------------------------------------------------------------------

class Demo:
    def __init__(self, state_dir: str, port: int, sites: List[Site], out=sys.stdout) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.port = port
        self.sites = sites
        self.out = out
        self.progress = Progress(STEPS, out)
        self.node: Any = None   # support.tlsbroker.TLSBroker, imported once the venv is known to work
        self.load_pages: Optional[LoadPages] = None
        self.server: Optional[Child] = None
        self.agents: List[Child] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        t = self.progress.begin("checking rabbitmq-server, port and leftovers")
        missing = rabbitmq_missing()
        if missing:
            raise DemoError(missing, 3)
        for name in ("shoal-server", "shoal-agent", "shoal-client", "shoal-ca"):
            tool(name)
        leftovers = processes_under(self.state_dir + os.sep) if os.path.isdir(self.state_dir) else []
        for pid in leftovers:   # a previous demo killed with SIGKILL: its processes carry our folder's path
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if port_taken(self.port):
            raise DemoError(f"port {self.port} on 127.0.0.1 is already in use, and the status page needs it.\n"
                            f"  See who has it:  ss -ltnp 'sport = :{self.port}'\n"
                            f"  Or use another:  SHOAL_DEMO_PORT={self.port + 1} make demo", 2)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        os.makedirs(self.state_dir)
        self.progress.done(t, f"ok{f' (stopped {len(leftovers)} leftover processes)' if leftovers else ''}")

    def broker(self):
        from support.tlsbroker import TLSBroker

        t = self.progress.begin("throwaway CA (shoal-ca) and a private RabbitMQ node with the shipped TLS config "
                                "(~20 s)")
        self.node = TLSBroker(os.path.join(self.state_dir, "broker"))
        self.node.start()
        self.progress.done(t, f"TLS only on {self.node.host}:{self.node.port}, node {self.node.node.name}")
        self.progress.note(f"CA in {self.rel('broker/ca')}; config: shoal-server/conf/rabbitmq.conf; "
                           "guest removed by rabbitmq-shoal-users setup")

    def identities(self):
        t = self.progress.begin(f"certificates and broker users for shoal-server and {len(self.sites)} agents")
        from support.tlsbroker import issue
        from shoal_agent.addresses import NoUsableAddress, choose, list_addresses

        server = self.node.add_server("shoal-server")
        agents = {}
        for site in self.sites:
            # Each site's grant, recorded by shoal-ca as it issues the certificate: the address it
            # announces, and the interface address its agent reports as public_ip (all demo sites
            # share this host's).
            networks = [f"{site.external_ip}/32"]
            try:
                local = choose(list_addresses(), site.external_ip).public_ip
            except NoUsableAddress:
                local = None
            if local:
                networks.append(local + ("/128" if ":" in local else "/32"))
            agents[site.hostname] = issue(self.node.ca_dir, "agent", site.hostname, networks=networks)
        self.node.users("add-agent", *agents)
        self.progress.done(t, "shoal-ca server/agent --network + rabbitmq-shoal-users add-server/add-agent")
        return server, agents

    def start_server(self, ident) -> None:
        t = self.progress.begin(f"shoal-server on {self.url}/ (certificate CN={ident.cn})")
        folder = os.path.join(self.state_dir, "server")
        config = write_ini(os.path.join(folder, "shoal_server.conf"), {
            "general": {"host": "127.0.0.1", "port": self.port},
            "rabbitmq": self.node.rabbitmq_section(ident),
            "cache": {"cache_inactive_time": 6 * AGENT_INTERVAL, "cache_cleanse_interval": AGENT_INTERVAL},
            "security": {"grants": self.node.grants_path},   # what shoal-ca granted each site
            "logging": {"log_file": os.path.join(folder, "server.log"), "logging_level": "info"},
        })
        self.server = Child("shoal-server", [tool("shoal-server"), "--config", config],
                            os.path.join(folder, "server.out"))
        wait_until(lambda: http_json(self.url + "/healthz")["consumer_connected"], 60,
                   "shoal-server to connect to the broker", [self.server])
        self.progress.done(t, "consuming heartbeats")

    def start_agents(self, agents) -> None:
        t = self.progress.begin(f"{len(self.sites)} shoal-agents, one certificate each, heartbeat every "
                                f"{AGENT_INTERVAL:.0f} s")
        self.load_pages = LoadPages(list(self.sites)).start()
        for site in self.sites:
            folder = os.path.join(self.state_dir, "agents", site.hostname)
            ident = agents[site.hostname]
            config = write_ini(os.path.join(folder, "shoal_agent.conf"), {
                "general": {"interval": AGENT_INTERVAL, "external_ip": site.external_ip, "dnsname": site.hostname,
                            "squid_port": 3128, "max_load": site.max_load, "load_source": "squid",
                            "state_dir": os.path.join(folder, "state")},
                "squid": {"manager_url": self.load_pages.url(site)},
                "rabbitmq": self.node.rabbitmq_section(ident),
                "logging": {"log_file": os.path.join(folder, "agent.log"), "logging_level": "info"},
            })
            self.agents.append(Child(f"shoal-agent {site.hostname}", [tool("shoal-agent"), "--config", config],
                                     os.path.join(folder, "agent.out")))
        wait_until(lambda: len(http_json(self.url + "/all")) >= len(self.sites), 60,
                   f"{len(self.sites)} caches on the server", [c for c in (self.server, *self.agents) if c])
        self.progress.done(t, f"{len(self.sites)} caches listed")
        for site in self.sites:
            self.progress.note(f"{site.hostname:28} {site.external_ip:15} {site.where}")

    def run_client(self) -> None:
        t = self.progress.begin(f"shoal-client --dump -s {self.url}/nearest")
        out = subprocess.run([tool("shoal-client"), "--dump", "-s", f"{self.url}/nearest"], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, HOME=self.state_dir))
        if out.returncode != 0:
            raise DemoError(f"shoal-client failed ({out.returncode}): {out.stderr.strip()}")
        self.progress.done(t)
        self.out.write(f"\n    CVMFS_HTTP_PROXY={out.stdout.strip()}\n")
        cern = subprocess.run([tool("shoal-client"), "--dump", "-s", f"{self.url}/nearest?ip=128.141.5.5"],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=self.state_dir))
        self.out.write(f"    (a worker at CERN, ?ip=128.141.5.5: {cern.stdout.strip()})\n")

    def banner(self) -> None:
        self.out.write(f"""
Shoal is running. Open the status page (it refreshes every 30 s; loads drift, heartbeats every {AGENT_INTERVAL:.0f} s):

    {self.url}/

Ask it as a worker node would:

    curl '{self.url}/nearest?ip=131.225.1.1'
    curl '{self.url}/wpad.dat?ip=150.203.1.1'

Also {self.url}/all, {self.url}/metrics, {self.url}/healthz. Logs: {self.rel('')}
Press Ctrl-C to stop everything.
""")
        self.out.flush()

    def rel(self, path: str) -> str:
        full = os.path.join(self.state_dir, path)
        try:
            rel = os.path.relpath(full)
        except ValueError:
            return full
        return full if rel.startswith("..") else rel

    def watch(self, should_exit: threading.Event) -> None:
        """Until a signal: stop if the server dies; say so when an agent does (its cache then expires)."""
        reported = set()
        while not should_exit.wait(1.0):
            if self.server is not None and not self.server.alive():
                raise DemoError(f"shoal-server exited with status {self.server.proc.returncode}; its log "
                                f"({self.server.log_path}) ends with:\n{self.server.tail()}")
            for child in self.agents:
                if not child.alive() and child.pid not in reported:
                    reported.add(child.pid)
                    self.out.write(f"{child.name} exited (status {child.proc.returncode}); its cache leaves the "
                                   f"table after {6 * AGENT_INTERVAL:.0f} s of silence\n")
                    self.out.flush()

    def stop(self, keep_files: bool) -> None:
        """Agents, then the server, then the broker node; by PID. Then remove the state folder."""
        for child in self.agents:
            child.terminate()
        for child in self.agents:
            child.wait(10)
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
        if self.load_pages is not None:
            self.load_pages.stop()
        if self.node is not None:
            self.node.stop()
        left = processes_under(self.state_dir + os.sep)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not keep_files:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run a whole Shoal on loopback until Ctrl-C.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SHOAL_DEMO_PORT", DEFAULT_PORT)),
                        help="status page / REST port (default $SHOAL_DEMO_PORT or 8080)")
    parser.add_argument("--dir", default=os.environ.get("SHOAL_DEMO_DIR", os.path.join(REPO, ".demo")),
                        help="state folder, removed at the end (default .demo/)")
    args = parser.parse_args(argv)

    should_exit = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if should_exit.is_set():
            return
        should_exit.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    demo = Demo(args.dir, args.port, list(SITES))
    started = time.monotonic()
    code, keep = 0, False
    try:
        demo.prepare()
        demo.broker()
        server, agents = demo.identities()
        demo.start_server(server)
        demo.start_agents(agents)
        demo.run_client()
        demo.out.write(f"\nUp in {time.monotonic() - started:.0f} s.\n")
        demo.banner()
        demo.watch(should_exit)
    except KeyboardInterrupt:
        sys.stdout.write("\nCtrl-C: stopping ...\n")
    except DemoError as err:
        sys.stdout.write("\n")
        sys.stderr.write(f"demo: {err}\n")
        code = err.code
        keep = code == 1 and os.path.isdir(demo.state_dir)
    finally:
        should_exit.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop(keep_files=keep)
    if keep:
        sys.stderr.write(f"demo: logs kept in {demo.state_dir} (every process is stopped)\n")
    elif code == 0:
        sys.stdout.write(f"Stopped {len(demo.agents)} agents, shoal-server and the RabbitMQ node; removed "
                         f"{demo.rel('')}. Nothing is left running.\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
