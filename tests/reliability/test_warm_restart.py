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


def test_a_downtime_longer_than_the_inactive_time_is_still_a_warm_start(tmp_path, servers, agents):
    """Issue 16 (5.): the snapshot answers at once, marked stale, until fresh heartbeats arrive."""
    inactive = 4.0
    state = tmp_path / "state"
    general = {"state_dir": str(state), "snapshot_interval": 3600}   # only the stop writes it
    server = servers(general=general, cache={"cache_inactive_time": inactive})
    crew = [agents(n, interval=INTERVAL, site=s) for n, s in (("cern3", "cern"), ("triumf3", "triumf"))]
    hosts = {a.hostname for a in crew}
    wait_until(lambda: fresh(server, hosts, 0), 20, what="agents listed")
    server.stop()
    for agent in crew:
        agent.stop()
    with open(state / "table.json") as handle:
        saved = {r["heartbeat"]["hostname"]: r["last_active"] for r in json.load(handle)["entries"]}
    assert set(saved) == hosts
    time.sleep(max(0.0, max(saved.values()) + 2 * inactive - time.time()))   # down twice the inactive time
    server.start(wait_connected=False)
    assert set(listed(server)) == hosts                    # the first answer lists both caches
    status, headers, body = http_get(server.url + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "stale", body
    assert "served as stale until fresh heartbeats arrive" in server.log()
    # Only cern3 comes back: it is refreshed and kept; triumf3 leaves a full inactive time after
    # heartbeats flow again, and /healthz is "ok" once the table is current.
    back = crew[0].start()
    wait_until(lambda: fresh(server, {back.hostname}, time.time() - INTERVAL), 20, what="cern3 fresh")
    assert crew[1].hostname in listed(server)
    wait_until(lambda: set(listed(server)) == {back.hostname}, inactive + 10, what="triumf3 purged")
    wait_until(lambda: server.health()["status"] == "ok", 10, what="/healthz ok")
    assert not [n for n in os.listdir(state) if n != "table.json"]   # no temporary files left behind
