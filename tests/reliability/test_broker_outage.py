"""A broker node stopped for 10 s under a running server and three agents: nothing exits, nothing is lost."""
import json
import socket
import threading
import time

from rel_support import Watcher, fresh, listed, wait_until
from support.procs import http_get

INTERVAL = 1.0
INACTIVE = 4.0        # far shorter than the outage: without the expiry pause every cache would be purged
OUTAGE = 10.0
MARGIN = 3.0          # loaded 2-core machine


def test_broker_restart_is_survived_without_dropping_caches(rabbit, servers, agents):
    server = servers(cache={"cache_inactive_time": INACTIVE})
    crew = [agents(name, interval=INTERVAL, site=site) for name, site in
            (("alpha", "cern"), ("beta", "fnal"), ("gamma", "triumf"))]
    hosts = [a.hostname for a in crew]
    wait_until(lambda: fresh(server, hosts, time.time() - INTERVAL), 20, what="three agents listed")
    # Connected for a full inactive time, so normal expiry is armed when the broker goes away.
    time.sleep(INACTIVE)
    watcher = Watcher(server)
    watcher.start()
    try:
        down_at = time.time()
        rabbit.stop()
        time.sleep(OUTAGE)
        code_during, _, body = http_get(server.url + "/healthz")
        health_during = json.loads(body)
        opened = PortOpened(rabbit.amqp_port)
        rabbit.start()
        up_at = opened.at()     # when the AMQP listener accepted connections again
        wait_until(lambda: fresh(server, hosts, up_at), 2 * INTERVAL + MARGIN + 30, step=0.05,
                   what="all three agents fresh after the broker restart")
        # From the server's own reception times, so slow polling on a loaded machine does not count.
        recovered = max(watcher.first_after(h, up_at) or time.time() for h in hosts) - up_at
        time.sleep(INACTIVE + 1)   # past the grace: expiry runs again and keeps the live caches
        records = listed(server)
    finally:
        watcher.stop()

    # The web side answered throughout, and never lost a cache because of the outage.
    assert watcher.samples, "the watcher never ran"
    assert all(s[1] == 200 for s in watcher.samples), [s for s in watcher.samples if s[1] != 200][:5]
    assert all(s[2] == 3 for s in watcher.samples), [s for s in watcher.samples if s[2] != 3][:5]
    assert "purged" not in server.log()
    assert set(records) == set(hosts)
    # /healthz said what happened -- the consumer was gone for longer than the inactive time -- and
    # what clients get: the kept table ("stale", 200, so a balancer keeps serving it; issue 16 (4.)).
    assert code_during == 200 and health_during["consumer_connected"] is False
    assert health_during["status"] == "stale" and health_during["caches"] == 3
    assert health_during["disconnected_seconds"] > INACTIVE
    assert server.health()["consumer_connected"] is True
    assert http_get(server.url + "/healthz")[0] == 200
    # Nobody exited: the server and every agent reconnected by themselves.
    assert server.proc.poll() is None
    assert all(a.alive for a in crew), [a.output()[-2000:] for a in crew if not a.alive]
    assert "Traceback" not in server.log() and not any("Traceback" in a.output() for a in crew)
    print(f"broker down {up_at - down_at:.1f} s; all agents fresh {recovered:.1f} s after it was back")
    assert recovered <= 2 * INTERVAL + MARGIN, f"fresh only {recovered:.1f} s after the broker restart"


class PortOpened(threading.Thread):
    """Note the moment a TCP port starts accepting connections."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.opened = port, None
        self.start()

    def run(self):
        deadline = time.monotonic() + 120
        while self.opened is None and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self.opened = time.time()
            except OSError:
                time.sleep(0.05)

    def at(self):
        self.join(5)
        assert self.opened is not None, "the broker port never opened"
        return self.opened
