"""A certificate speaks only for its own place (issue 14 item 1) and legacy senders for nobody (issue 12 item 2).

In-process: the real ShoalService wiring (config -> policy -> sink -> table -> web app) with a
fake GeoIP, fed through ``HeartbeatSink.handle`` exactly as the AMQP callback feeds it. The
broker side (who may log in and stamp which ``user_id``) is tested on a real node in
tests/compat/test_legacy_tls.py.
"""
from __future__ import annotations

import json
import time

import pytest

from shoal_server.amqp import RabbitSettings
from shoal_server.config import CacheSettings, GeneralSettings, SecuritySettings, ServerConfig
from shoal_server.geo import Location
from shoal_server.service import ShoalService

NOW = time.time()
GENEVA, LONDON, VICTORIA = Location(46.23, 6.05, city="Meyrin"), Location(51.5, -0.12), Location(48.43, -123.37)
PLACES = {"188.184.": GENEVA, "188.185.": GENEVA, "81.2.69.": LONDON, "142.104.": VICTORIA}
GRANTS = ("squid.cern.ch          188.184.0.0/15\n"
          "squid.evil.example     81.2.69.0/24\n"
          "gw.uvic.ca             squid-a.uvic.ca squid-b.uvic.ca 142.104.0.0/16 uuids=8\n")


class FakeGeo:
    def locate(self, address):
        for prefix, place in PLACES.items():
            if address and address.startswith(prefix):
                return place
        return None

    def close(self):
        pass


def make_service(tmp_path, grants=GRANTS, use_ssl=True, state_dir="", **security):
    path = ""
    if grants is not None:
        path = str(tmp_path / "grants")
        with open(path, "w") as fh:
            fh.write(grants)
    config = ServerConfig(general=GeneralSettings(state_dir=state_dir), rabbitmq=RabbitSettings(use_ssl=use_ssl),
                          cache=CacheSettings(cache_inactive_time=600),
                          security=SecuritySettings(grants=path, **security), path=str(tmp_path / "shoal_server.conf"))
    return ShoalService(config, locator=FakeGeo(), clock=lambda: NOW)


def hb(uuid, hostname, public_ip, load=1000.0, **extra):
    body = {"uuid": uuid, "hostname": hostname, "squid_port": 3128, "public_ip": public_ip, "load": load,
            "timestamp": NOW}
    body.update(extra)
    return json.dumps(body).encode()


def dropped(service):
    return service.status.counters()["dropped"]


def nearest(service, ip, n=5):
    response = service.app.request(f"/nearest/{n}?ip={ip}")
    assert response.status.startswith("200"), response.status
    return [rec["hostname"] for rec in json.loads(response.data).values()]


def listed(service):
    return {rec["uuid"]: rec for rec in json.loads(service.app.request("/all").data).values()}


# ---- issue 14, item 1: bind identity to place -------------------------------------------------------

def test_one_agent_cert_with_cern_range_addresses_is_never_served_to_cern(tmp_path):
    """Table row: 10 uuids with CERN-range addresses, load 0, max_load 1e300 — default TLS config."""
    service = make_service(tmp_path)
    assert service.sink.handle(hb("cern-1", "squid.cern.ch", "188.184.10.20", load=1000), "squid.cern.ch")
    for i in range(10):
        body = hb(f"evil-{i}", "squid.evil.example", f"188.184.77.{i + 1}", load=0, max_load=1e300)
        assert service.sink.handle(body, "squid.evil.example") is None
    # external_ip wins for placement: granted public_ip plus a CERN external_ip is still refused
    assert service.sink.handle(hb("evil-x", "squid.evil.example", "81.2.69.5", load=0,
                                  external_ip="188.185.1.1"), "squid.evil.example") is None
    # ... and claiming CERN's own name fails on the name
    assert service.sink.handle(hb("evil-n", "squid.cern.ch", "81.2.69.5", load=0), "squid.evil.example") is None
    assert dropped(service) == {"address_not_granted": 11, "hostname_mismatch": 1}
    assert nearest(service, "188.184.1.1") == ["squid.cern.ch"]
    # The attacker's own, granted place works: the gate is per identity, not a blanket refusal.
    assert service.sink.handle(hb("evil-ok", "squid.evil.example", "81.2.69.5", load=0), "squid.evil.example")
    assert nearest(service, "188.184.1.1") == ["squid.cern.ch", "squid.evil.example"]
    assert nearest(service, "81.2.69.200")[0] == "squid.evil.example"


def test_one_certificate_sending_50000_uuids_keeps_only_its_allowance(tmp_path):
    """Table row: one certificate sends 50,000 uuids — at most max_uuids_per_identity (4) are kept."""
    # The rate bound alone would drop most of them (next test); lift it to see the uuid limit work.
    service = make_service(tmp_path, max_heartbeat_rate=1e5, max_heartbeat_burst=1e6)
    started = time.perf_counter()
    for i in range(50000):
        service.sink.handle(hb(f"flood-{i}", "squid.evil.example", "81.2.69.5", load=0), "squid.evil.example")
    elapsed = time.perf_counter() - started
    assert sorted(listed(service)) == ["flood-0", "flood-1", "flood-2", "flood-3"]
    assert dropped(service) == {"too_many_uuids": 49996}
    assert service.table.owned("squid.evil.example") == 4
    metrics = service.app.request("/metrics").data.decode()
    assert 'shoal_heartbeats_dropped_total{reason="too_many_uuids"} 49996.0' in metrics
    assert len(service.app.request("/all").data) < 5000
    assert elapsed < 30, elapsed   # rejected cheaply (about 20 us each on the dev machine)
    # A uuid it already holds keeps refreshing; a grant line can raise the limit (uuids=8).
    assert service.sink.handle(hb("flood-2", "squid.evil.example", "81.2.69.5", load=7), "squid.evil.example")
    for i in range(10):
        service.sink.handle(hb(f"uvic-{i}", "squid-a.uvic.ca", "142.104.5.5"), "gw.uvic.ca")
    assert service.table.owned("gw.uvic.ca") == 8


def test_one_identity_flooding_is_bounded_by_the_publish_rate(tmp_path):
    """Table row: one agent identity at 7,700 msg/s — the server takes at most burst + rate x time."""
    service = make_service(tmp_path, legacy_agents="accept")
    started = time.monotonic()
    accepted = sum(1 for i in range(7700)
                   if service.sink.handle(hb("flood-0", "squid.evil.example", "81.2.69.5", load=i),
                                          "squid.evil.example"))
    elapsed = time.monotonic() - started
    assert accepted <= 60 + 2.0 * elapsed + 1, (accepted, elapsed)
    assert accepted >= 60
    assert dropped(service)["rate_limited"] == 7700 - accepted
    # another identity is not affected by the first one's flood
    assert service.sink.handle(hb("cern-1", "squid.cern.ch", "188.184.10.20"), "squid.cern.ch")
    # senders without identity share one pool (200/s, burst 2000)
    legacy = sum(1 for i in range(3000) if service.sink.handle(hb(f"old-{i % 50}", f"old{i % 50}.example.org",
                                                                  "81.2.70.5"), None))
    assert 2000 <= legacy <= 2000 + 200 * (time.monotonic() - started) + 1


def test_another_sites_hostname_is_refused_with_the_default_config(tmp_path):
    """Table row: another site's host name (default config): with use_ssl the host name policy is on."""
    service = make_service(tmp_path)
    assert service.config.security.require_hostname_match is None     # nothing configured: "auto"
    assert service.sink.handle(hb("u1", "squid.cern.ch", "81.2.69.5"), "squid.evil.example") is None
    assert service.sink.handle(hb("u2", "squid-b.uvic.ca", "142.104.1.1"), "gw.uvic.ca")   # granted alias
    assert dropped(service) == {"hostname_mismatch": 1}


def test_tls_without_a_grants_file_serves_nothing_until_networks_are_granted(tmp_path, caplog):
    caplog.set_level("WARNING")
    service = make_service(tmp_path, grants=None)
    assert any("[security] grants is not set" in r.getMessage() for r in caplog.records)
    assert service.sink.handle(hb("u1", "squid.cern.ch", "188.184.10.20"), "squid.cern.ch") is None
    assert dropped(service) == {"address_not_granted": 1}


def test_plain_deployment_keeps_the_permissive_defaults(tmp_path):
    service = make_service(tmp_path, grants=None, use_ssl=False)
    assert service.policy is None
    assert service.sink.handle(hb("u1", "any.example.org", "188.184.10.20"), "guest")
    assert listed(service)["u1"]["authenticated"] is False      # guest is a legacy login


def test_a_cache_outside_a_changed_grant_is_removed_at_once(tmp_path):
    service = make_service(tmp_path)
    assert service.sink.handle(hb("e1", "squid.evil.example", "81.2.69.5"), "squid.evil.example")
    assert service.recheck_grants() == []
    path = tmp_path / "grants"
    path.write_text(GRANTS.replace("81.2.69.0/24", "81.2.70.0/24"))
    import os
    os.utime(path, (NOW + 5, NOW + 5))
    service.policy._checked -= 60            # skip the 10 s re-read interval
    assert service.recheck_grants() == ["e1"]
    assert "e1" not in listed(service)


# ---- issue 12, item 2: legacy agents on a TLS deployment -------------------------------------------

def test_refuse_mode_drops_heartbeats_without_user_id_with_a_reason(tmp_path):
    service = make_service(tmp_path)
    assert service.sink.handle(hb("old", "squid.old.example", "81.2.69.9"), None) is None
    assert service.sink.handle(hb("old2", "squid.old.example", "81.2.69.9"), "guest") is None  # legacy login
    assert dropped(service) == {"no_user_id": 2}


def test_accept_mode_lists_legacy_caches_as_unauthenticated_everywhere(tmp_path):
    service = make_service(tmp_path, legacy_agents="accept")
    assert service.sink.handle(hb("cern-1", "squid.cern.ch", "188.184.10.20"), "squid.cern.ch")
    assert service.sink.handle(hb("old", "squid.old.example", "81.2.69.9"), None)
    assert service.sink.handle(hb("old-guest", "squid2.old.example", "81.2.69.10"), "guest")
    records = listed(service)
    assert {u: r["authenticated"] for u, r in records.items()} == {"cern-1": True, "old": False,
                                                                     "old-guest": False}
    page = service.app.request("/").data.decode()
    assert 'id="unauthenticated-count">2<' in page
    assert page.count('data-authenticated="false"') == 2 and page.count(">unauthenticated</span>") == 2
    metrics = service.app.request("/metrics").data.decode()
    assert "shoal_caches_unauthenticated 2.0" in metrics


def test_legacy_heartbeats_cannot_take_over_an_authenticated_uuid_or_host_name(tmp_path):
    service = make_service(tmp_path, legacy_agents="accept")
    assert service.sink.handle(hb("cern-1", "squid.cern.ch", "188.184.10.20"), "squid.cern.ch")
    assert service.sink.handle(hb("cern-1", "squid.old.example", "81.2.69.9", load=0), None) is None
    assert service.sink.handle(hb("new", "squid.cern.ch", "81.2.69.9", load=0), None) is None
    # a name the grants give to an identity is reserved even while that identity is silent
    assert service.sink.handle(hb("new2", "squid-a.uvic.ca", "81.2.69.9", load=0), None) is None
    assert service.sink.handle(hb("new3", "gw.uvic.ca", "81.2.69.9", load=0), None) is None
    assert dropped(service) == {"owner_mismatch": 1, "hostname_reserved": 3}
    assert listed(service)["cern-1"]["hostname"] == "squid.cern.ch"


def test_an_upgraded_agent_takes_over_its_legacy_uuid_and_host_name(tmp_path):
    service = make_service(tmp_path, grants=GRANTS + "squid.upgraded.example 81.2.69.0/24\n",
                           legacy_agents="accept")
    # Squatters under an unreserved name before the site is granted are evicted by its first heartbeat.
    service.policy._reserved = frozenset()
    assert service.sink.handle(hb("legacy-uuid", "squid.upgraded.example", "81.2.69.9"), None)
    assert service.sink.handle(hb("squatter", "squid.upgraded.example", "81.2.69.66", load=0), None)
    assert service.sink.handle(hb("legacy-uuid", "squid.upgraded.example", "81.2.69.9"), "squid.upgraded.example")
    records = listed(service)
    assert list(records) == ["legacy-uuid"] and records["legacy-uuid"]["authenticated"] is True
    assert service.table.get("legacy-uuid").owner == "squid.upgraded.example"
    # now a legacy heartbeat for that uuid or name is refused
    assert service.sink.handle(hb("legacy-uuid", "squid.upgraded.example", "81.2.69.9"), None) is None
    assert service.sink.handle(hb("again", "squid.upgraded.example", "81.2.69.66"), None) is None


def test_authenticated_cache_ranks_before_an_unauthenticated_one_of_equal_cost(tmp_path):
    service = make_service(tmp_path, grants=GRANTS + "squid.a.example 81.2.69.0/24\n", legacy_agents="accept")
    # Same place, same load: equal cost. The uuids would order the legacy one first.
    assert service.sink.handle(hb("b-auth", "squid.a.example", "81.2.69.20", load=100), "squid.a.example")
    assert service.sink.handle(hb("a-legacy", "squid.legacy.example", "81.2.69.21", load=100), None)
    assert nearest(service, "81.2.69.200") == ["squid.a.example", "squid.legacy.example"]
    assert nearest(service, "10.1.1.1") == ["squid.a.example", "squid.legacy.example"]   # unplaced client
    # cost still decides first: a less loaded legacy cache wins
    assert service.sink.handle(hb("a-legacy", "squid.legacy.example", "81.2.69.21", load=10), None)
    assert nearest(service, "81.2.69.200") == ["squid.legacy.example", "squid.a.example"]


@pytest.mark.parametrize("value", ["maybe", "ACCEPTS"])
def test_legacy_agents_takes_refuse_or_accept(tmp_path, value):
    from shoal_server.config import load_config
    from shoal_server.inifile import ConfigError
    conf = tmp_path / "s.conf"
    conf.write_text(f"[security]\nlegacy_agents = {value}\n")
    with pytest.raises(ConfigError, match=r"\[security\] legacy_agents"):
        load_config(str(conf))
