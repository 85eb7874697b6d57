"""Churn: many distinct uuids over time (scaled down from the benchmark's 100,000); purge keeps the table bounded."""
import random
import threading
import time
import uuid

from rel_support import fresh, listed, wait_until
from support.heartbeats import Publisher, upstream_heartbeat

INACTIVE = 3.0
WAVES = 16
PER_WAVE = 500          # 8,000 distinct one-shot uuids in all
WAVE_PERIOD = 0.5
LIVE_SIMULATED = 20


def public_ip(rng):
    # 128.0.0.0/4 minus nothing special: globally routable, GeoIP-locatable for the most part.
    return f"{rng.randint(128, 143)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def test_entries_after_purge_equal_the_live_agents(rabbit, exchange, servers, agents):
    server = servers(cache={"cache_inactive_time": INACTIVE, "cache_cleanse_interval": 0.25})
    crew = [agents(n, interval=1.0, site=s) for n, s in (("churn-cern", "cern"), ("churn-fnal", "fnal"))]
    rng = random.Random(7)
    live = [upstream_heartbeat(public_ip(rng), uuid=f"live-{i}") for i in range(LIVE_SIMULATED)]
    stop = threading.Event()

    def keep_alive():
        pub = Publisher(exchange, port=rabbit.amqp_port)
        try:
            while not stop.wait(0.5):
                for hb in live:
                    pub.send({**hb, "timestamp": time.time()})
        finally:
            pub.close()

    keeper = threading.Thread(target=keep_alive, daemon=True)
    keeper.start()
    wait_until(lambda: fresh(server, [a.hostname for a in crew], 0), 20, what="real agents listed")
    wait_until(lambda: "cache expiry resumed" in server.log(), INACTIVE + 10, what="expiry armed")
    churn = Publisher(exchange, port=rabbit.amqp_port)
    peak = 0
    try:
        for _ in range(WAVES):
            started = time.monotonic()
            for _ in range(PER_WAVE):
                churn.send(upstream_heartbeat(public_ip(rng), uuid=uuid.uuid4().hex))
            peak = max(peak, server.health()["caches"])
            time.sleep(max(0.0, WAVE_PERIOD - (time.monotonic() - started)))
    finally:
        churn.close()
    expected = LIVE_SIMULATED + len(crew)
    # The purge ran during the churn: the table never held more than a few inactive times' worth.
    assert peak < expected + WAVES * PER_WAVE * 0.75, peak
    # After the inactive time, only the live ones remain; counted twice to see it is stable.
    wait_until(lambda: server.health()["caches"] == expected, INACTIVE + 10, what="table back to the live agents")
    time.sleep(INACTIVE / 2)
    records = listed(server)
    stop.set()
    keeper.join(5)
    assert len(records) == expected == server.health()["caches"]
    assert {r["uuid"] for r in records.values() if r["uuid"].startswith("live-")} == {hb["uuid"] for hb in live}
    assert {a.hostname for a in crew} <= set(records)
    print(f"{WAVES * PER_WAVE} one-shot uuids; peak table {peak}; after purge {len(records)} == live {expected}")
