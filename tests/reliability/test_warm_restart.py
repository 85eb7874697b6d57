"""Server restarts: with a table snapshot the first answer already lists the caches."""
import json
import os
import signal
import time

from rel_support import VICTORIA, fresh, listed, wait_until
from support.procs import http_get

INTERVAL = 1.0


def nearest(server):
    """The first /nearest answer, as early as the HTTP port accepts connections."""
    data = server.get_json(f"/nearest/4?ip={VICTORIA}")
    return [data[str(i)]["hostname"] for i in range(len(data))]


def snapshot_hosts(path):
    try:
        with open(path) as handle:
            return {r["heartbeat"]["hostname"] for r in json.load(handle)["entries"]}
    except (OSError, ValueError, KeyError):
        return set()


def test_sigkilled_server_answers_from_its_snapshot_at_once(tmp_path, servers, agents):
    state = tmp_path / "state"
    state.mkdir()
    (state / "table.json").write_bytes(b'{"format": "shoal-server-table", "version": 1, "entr')   # torn file
    general = {"state_dir": str(state), "snapshot_interval": 1}
    server = servers(general=general, cache={"cache_inactive_time": 30})
    assert "ignoring table snapshot" in server.log() and listed(server) == {}   # corrupt: warned, not fatal
    crew = [agents(n, interval=INTERVAL, site=s) for n, s in (("cern1", "cern"), ("fnal1", "fnal"),
                                                              ("kek1", "kek"))]
    hosts = {a.hostname for a in crew}
    wait_until(lambda: fresh(server, hosts, 0), 20, what="agents listed")
    before = nearest(server)
    wait_until(lambda: snapshot_hosts(state / "table.json") == hosts, 10, what="periodic snapshot written")
    server.stop(signal.SIGKILL)
    for agent in crew:   # silence the agents: only the snapshot can fill the new server's table
        agent.stop()
    server.start(wait_connected=False)
    assert nearest(server) == before
    assert "restored 3 cache(s)" in server.log()


def test_sigkilled_server_without_snapshot_is_full_again_within_one_interval(servers, agents):
    interval = 2.0
    server = servers()
    crew = [agents(n, interval=interval, site=s) for n, s in (("cern2", "cern"), ("fnal2", "fnal"))]
    hosts = {a.hostname for a in crew}
    wait_until(lambda: fresh(server, hosts, 0), 20, what="agents listed")
    server.stop(signal.SIGKILL)
    server.start(wait_connected=False)
    started = time.monotonic()
    wait_until(lambda: set(listed(server)) == hosts, interval + 3.0, step=0.05,
               what="all caches back within one interval (+ margin)")
    print(f"table full again {time.monotonic() - started:.2f} s after the restart")


def test_sigterm_writes_the_snapshot_and_drops_what_expired_while_down(tmp_path, servers, agents):
    inactive = 8.0
    state = tmp_path / "state"
    general = {"state_dir": str(state), "snapshot_interval": 3600}   # only the stop writes it
    server = servers(general=general, cache={"cache_inactive_time": inactive})
    crew = [agents(n, interval=INTERVAL, site=s) for n, s in (("cern3", "cern"), ("triumf3", "triumf"))]
    hosts = {a.hostname for a in crew}
    wait_until(lambda: fresh(server, hosts, 0), 20, what="agents listed")
    crew[1].stop(signal.SIGKILL)
    time.sleep(4)                       # triumf3 silent for ~4 s, cern3 fresh
    server.stop()
    for agent in crew:
        agent.stop()
    with open(state / "table.json") as handle:
        saved = {r["heartbeat"]["hostname"]: r["last_active"] for r in json.load(handle)["entries"]}
    assert set(saved) == hosts
    # Restart just after triumf3 passed the inactive time; cern3 (~4 s younger) has not.
    time.sleep(max(0.0, saved[crew[1].hostname] + inactive + 0.5 - time.time()))
    server.start(wait_connected=False)
    assert set(listed(server)) == {crew[0].hostname}
    assert "restored 1 cache(s)" in server.log()
    status, _, body = http_get(server.url + "/healthz")
    assert json.loads(body)["caches"] == 1
    assert not [n for n in os.listdir(state) if n != "table.json"]   # no temporary files left behind
