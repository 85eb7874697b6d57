"""An agent killed with SIGKILL: its cache leaves the table after the inactive time, not before."""
import signal
import time

from rel_support import fresh, listed, wait_until

INTERVAL = 1.0
INACTIVE = 4.0
CLEANSE = 0.25
MARGIN = 2.0


def test_killed_agent_disappears_after_the_inactive_time_and_not_before(servers, agents):
    server = servers(cache={"cache_inactive_time": INACTIVE, "cache_cleanse_interval": CLEANSE})
    victim = agents("victim", interval=INTERVAL, site="cern")
    survivor = agents("survivor", interval=INTERVAL, site="fnal")
    hosts = [victim.hostname, survivor.hostname]
    wait_until(lambda: fresh(server, hosts, 0), 20, what="both agents listed")
    # Expiry starts once the consumer has been connected for one inactive time (the reconnection grace).
    wait_until(lambda: "cache expiry resumed" in server.log(), INACTIVE + 10, what="expiry armed")
    time.sleep(1.5 * INTERVAL)
    killed_at = time.time()
    victim.stop(signal.SIGKILL)
    last_seen = None
    gone_at = None
    while time.time() < killed_at + INACTIVE + CLEANSE + MARGIN + 5:
        records = listed(server)
        now = time.time()
        if victim.hostname in records:
            last_seen = (now, records[victim.hostname]["last_active"])
        else:
            gone_at = now
            break
        time.sleep(0.05)
    assert gone_at is not None, "the killed agent's cache was never purged"
    seen_at, last_active = last_seen
    # Not before: watched continuously, it was still listed close to the deadline and gone only after it.
    assert seen_at - last_active >= INACTIVE - 1.0, (seen_at - last_active)
    assert gone_at - last_active > INACTIVE, (gone_at - last_active)
    # After: gone soon after the inactive time since its last heartbeat.
    assert gone_at - last_active <= INACTIVE + CLEANSE + MARGIN, (gone_at - last_active)
    assert last_active <= killed_at
    assert survivor.hostname in listed(server)
    print(f"killed {killed_at - last_active:.2f} s after its last heartbeat; purged "
          f"{gone_at - last_active:.2f} s after it (inactive {INACTIVE} s)")
