"""Scale-out on RabbitMQ: several servers each hold the full table; agents fail over across brokers."""
import time

from rel_support import fresh, listed, rabbit_settings, wait_until
from support.rabbitnode import free_port

INTERVAL = 1.0


def test_two_servers_on_one_broker_both_list_every_agent_and_survive_each_other(servers, agents):
    first = servers(name="first")
    second = servers(name="second")
    crew = [agents(n, interval=INTERVAL, site=s) for n, s in (("so-cern", "cern"), ("so-fnal", "fnal"),
                                                              ("so-kek", "kek"))]
    hosts = {a.hostname for a in crew}
    wait_until(lambda: fresh(first, hosts, 0) and fresh(second, hosts, 0), 20, what="both servers list all")
    # Each server binds its own queue, so each sees every heartbeat: same caches, same uuids.
    assert {r["uuid"] for r in listed(first).values()} == {r["uuid"] for r in listed(second).values()}
    first.stop()
    stopped_at = time.time()
    # The other server keeps receiving every agent's heartbeats, as if nothing happened.
    wait_until(lambda: fresh(second, hosts, stopped_at + INTERVAL), 4 * INTERVAL + 3,
               what="second server still fresh after the first stopped")
    time.sleep(5)   # beyond the 4 s inactive time: nothing expired on the survivor
    assert fresh(second, hosts, time.time() - 3 * INTERVAL)
    assert second.health()["status"] == "ok"
    # And the stopped one comes back with the full table within an interval or two.
    first.start()
    restarted = time.time()
    wait_until(lambda: fresh(first, hosts, restarted), 2 * INTERVAL + 3, what="first server full again")


def test_agent_announces_through_the_second_broker_when_the_first_is_down(rabbit, exchange, servers, agents):
    server = servers()
    down = free_port()   # nothing listens there: a broker that is down refuses connections like this
    brokers = f"127.0.0.1:{down}, 127.0.0.1:{rabbit.amqp_port}"
    agent = agents("failover", interval=INTERVAL, rabbitmq={**rabbit_settings(down, exchange), "amqp_servers": brokers})
    wait_until(lambda: fresh(server, [agent.hostname], 0), 15, what="heartbeats via the second broker")
    started = time.time()
    wait_until(lambda: fresh(server, [agent.hostname], started), 2 * INTERVAL + 3, what="heartbeats keep coming")
    assert agent.alive
    assert f"127.0.0.1:{rabbit.amqp_port}" in agent.output()
