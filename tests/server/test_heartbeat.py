"""The heartbeat validator: what deployed agents send is accepted, anything hostile is refused."""
import json
import math
import time

import pytest

from shoal_server.heartbeat import InvalidHeartbeat, Limits, is_hostname, parse_heartbeat

NOW = 1_700_000_000.0


def body(**fields):
    data = {"uuid": "9f0c1d2e3a4b11eeb8c1525400123456", "hostname": "squid.example.org", "squid_port": 3128,
            "public_ip": "142.90.1.1", "private_ip": "10.0.0.5", "load": 12.5, "timestamp": NOW}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_upstream_agent_message_accepted_unchanged():
    # Exactly what the 2014 agent sent: uuid1().hex, squid_port as int, integer load, float timestamp.
    hb = parse_heartbeat(body(load=300), NOW + 1.0)
    assert (hb.hostname, hb.squid_port, hb.public_ip, hb.load) == ("squid.example.org", 3128, "142.90.1.1", 300.0)
    assert hb.max_load == Limits().default_max_load
    assert hb.upstream == "both" and hb.cache_type == "squid" and hb.verified is False


def test_newer_agents_cache_port_accepted():
    hb = parse_heartbeat(body(squid_port=..., cache_port=3129, upstream="cvmfs", cache_type="varnish",
                              agent_version="2.1.0", max_load=5000), NOW)
    assert (hb.squid_port, hb.upstream, hb.cache_type, hb.max_load) == (3129, "cvmfs", "varnish", 5000.0)


def test_external_ip_wins_as_address_and_hostname_defaults_to_it():
    hb = parse_heartbeat(body(public_ip=..., hostname=..., external_ip="2001:1458::1"), NOW)
    assert hb.address == "2001:1458::1" and hb.hostname == "2001:1458::1"


def test_hostname_is_normalised():
    assert parse_heartbeat(body(hostname="Squid.Example.ORG."), NOW).hostname == "squid.example.org"


HOSTILE = [
    (b"not json", "not_json"),
    (b"\xff\xfe", "not_utf8"),
    (b"[1, 2]", "not_object"),
    (b"x" * 20000, "too_large"),
    (body(uuid=...), "bad_uuid"),
    (body(uuid=12), "bad_uuid"),
    (body(uuid="a b"), "bad_uuid"),
    (body(uuid="<script>"), "bad_uuid"),
    (body(squid_port=0), "bad_port"),
    (body(squid_port=70000), "bad_port"),
    (body(squid_port="3128; DROP"), "bad_port"),
    (body(squid_port=True), "bad_port"),
    (body(squid_port=3128.5), "bad_port"),
    (body(squid_port=3128, cache_port=3129), "bad_port"),
    (body(squid_port=...), "bad_port"),
    (body(public_ip="999.1.1.1"), "bad_ip"),
    (body(public_ip=["1.2.3.4"]), "bad_ip"),
    (body(public_ip="0.0.0.0"), "bad_ip"),
    (body(private_ip="<b>"), "bad_ip"),
    (body(public_ip=...), "no_address"),
    (body(hostname="<script>alert(1)</script>"), "bad_hostname"),
    (body(hostname='a"b.example.org'), "bad_hostname"),
    (body(hostname="-bad.example.org"), "bad_hostname"),
    (body(hostname="a" * 64 + ".org"), "bad_hostname"),
    (body(hostname=5), "bad_hostname"),
    (body(load=-1), "bad_load"),
    (body(load="12 KB"), "bad_load"),
    (body(load="1e99999"), "bad_load"),
    (body(load=...), "bad_load"),
    (body(load=True), "bad_load"),
    (b'{"uuid": "a", "squid_port": 1, "public_ip": "1.2.3.4", "load": NaN, "timestamp": 1}', "not_json"),
    (b'{"uuid": "a", "squid_port": 1, "public_ip": "1.2.3.4", "load": Infinity, "timestamp": 1}', "not_json"),
    (b'{"uuid": "a", "squid_port": 1, "public_ip": "1.2.3.4", "load": 1e400, "timestamp": 1}', "bad_load"),
    (body(public_ip="127.0.0.1"), "bad_ip"),
    (body(public_ip="255.255.255.255"), "bad_ip"),
    (body(public_ip="240.0.0.1"), "bad_ip"),
    (body(public_ip=..., external_ip="::"), "bad_ip"),
    (body(public_ip="198.51.100.7"), "bad_ip"),
    (body(public_ip="169.254.1.1"), "bad_ip"),
    (body(public_ip="::ffff:127.0.0.1"), "bad_ip"),
    (body(public_ip="10.0.0.9"), "no_global_address"),
    (body(hostname="127.0.0.1"), "bad_hostname"),
    (body(hostname="::"), "bad_hostname"),
    (body(hostname="0.0.0.0"), "bad_hostname"),
    (body(hostname="squid.example.org.."), "bad_hostname"),
    (body(timestamp=...), "bad_timestamp"),
    (body(timestamp="now"), "bad_timestamp"),
    (body(timestamp=NOW + 10 * 365 * 86400), "future"),
    (body(timestamp=NOW - 3600), "stale"),
    (body(upstream="ftp"), "bad_upstream"),
    (body(cache_type="nginx"), "bad_cache_type"),
    (body(verified="yes"), "bad_verified"),
    (body(agent_version="1.0<script>"), "bad_agent_version"),
]


@pytest.mark.parametrize("raw,reason", HOSTILE)
def test_hostile_message_refused_with_reason(raw, reason):
    with pytest.raises(InvalidHeartbeat) as err:
        parse_heartbeat(raw, NOW)
    assert err.value.reason == reason


def test_drift_is_measured_and_flagged_beyond_tolerance():
    limits = Limits(drift_tolerance=60, max_age=180)
    assert not parse_heartbeat(body(timestamp=NOW - 5), NOW, limits).drifting(60)
    hb = parse_heartbeat(body(timestamp=NOW + 120), NOW, limits)
    assert hb.drift == pytest.approx(120) and hb.drifting(60)


def test_user_id_required_when_tls_is_on():
    with pytest.raises(InvalidHeartbeat) as err:
        parse_heartbeat(body(), NOW, Limits(require_user_id=True))
    assert err.value.reason == "no_user_id"
    assert parse_heartbeat(body(), NOW, Limits(require_user_id=True), user_id="squid.example.org").user_id


@pytest.mark.parametrize("name,ok", [
    ("squid.example.org", True), ("localhost", True), ("a-b.c", True), ("142.90.1.1", True), ("::1", False),
    ("2001:1458::1", True), ("2001:db8::1", False), ("", False), ("a..b", False), ("a_b.org", True),
    ("squid_05.example.org", True), ("_a_.org", True), ("1.2.3", False), ("a.org.", False),
    ("127.0.0.1", False), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("255.255.255.255", False),
    ("a-.org", False), ("exa mple.org", False), ("x" * 300, False), ("é.org", False), ("a.org/evil", False),
    ("a.org:80", False), ("a@b.org", False), ("a;b.org", False), ("a$b.org", False), ("a\\b.org", False),
])
def test_is_hostname(name, ok):
    assert is_hostname(name) is ok


def test_real_clock_message_is_fresh():
    hb = parse_heartbeat(body(timestamp=time.time()), time.time())
    assert abs(hb.drift) < 5 and math.isfinite(hb.load)


def test_agent_claim_of_verified_ignored_when_server_verifies():
    assert parse_heartbeat(body(verified=True), NOW).verified is True
    assert parse_heartbeat(body(verified=True), NOW, Limits(trust_verified_claim=False)).verified is False


# Repairs: what deployed agents send in a repairable form is accepted and the repair is named.
REPAIRABLE = [
    (dict(max_load="122000"), "max_load", 122000.0, ("max_load_string",)),          # 0.9.x ConfigParser.get
    (dict(max_load=-112), "max_load", Limits().default_max_load, ("max_load_not_positive",)),  # 1.0.2 virtio
    (dict(max_load=0), "max_load", Limits().default_max_load, ("max_load_not_positive",)),
    (dict(max_load="fast"), "max_load", Limits().default_max_load, ("max_load_unparsable",)),
    (dict(max_load=True), "max_load", Limits().default_max_load, ("max_load_unparsable",)),
    (dict(max_load=...), "max_load", Limits().default_max_load, ("max_load_missing",)),  # 0.7.1 never sends it
    (dict(load="12"), "load", 12.0, ("load_string",)),
    (dict(squid_port="3128"), "squid_port", 3128, ("port_string",)),
    (dict(timestamp=str(NOW)), "timestamp", NOW, ("timestamp_string",)),
    (dict(hostname="squid_05.example.org"), "hostname", "squid_05.example.org", ("hostname_underscore",)),
    (dict(hostname="localhost.localdomain"), "hostname", "142.90.1.1", ("hostname_loopback",)),
    (dict(public_ip=..., external_ip="10.9.9.9", private_ip=..., hostname="x.example.org"),
     "external_ip", None, None),  # refused below: no global address at all
]


@pytest.mark.parametrize("fields,attr,value,repairs", [r for r in REPAIRABLE if r[3] is not None])
def test_repairable_fields_repaired_and_named(fields, attr, value, repairs):
    fields.setdefault("max_load", 5000)
    hb = parse_heartbeat(body(**fields), NOW)
    assert getattr(hb, attr) == value
    assert hb.repairs == repairs


def test_clean_heartbeat_has_no_repairs():
    assert parse_heartbeat(body(max_load=5000), NOW).repairs == ()


def test_private_external_ip_beside_a_global_one_moves_to_private_ip():
    hb = parse_heartbeat(body(private_ip=..., external_ip="192.168.1.5", max_load=1), NOW)
    assert (hb.public_ip, hb.external_ip, hb.private_ip) == ("142.90.1.1", None, "192.168.1.5")
    assert hb.repairs == ("external_ip_private",)


def test_non_global_public_ip_beside_a_global_external_ip_is_dropped_not_served():
    # An agent's interface scan on a lab host (192.0.2.2 on eth0) beside its configured external_ip.
    hb = parse_heartbeat(body(public_ip="192.0.2.2", external_ip="142.90.1.1", max_load=1), NOW)
    assert (hb.public_ip, hb.external_ip, hb.address) == (None, "142.90.1.1", "142.90.1.1")
    assert hb.repairs == ("public_ip_not_global",)


def test_unusable_private_ip_is_dropped_not_served():
    hb = parse_heartbeat(body(private_ip="127.0.0.1", max_load=1), NOW)
    assert hb.private_ip is None and hb.repairs == ("private_ip_dropped",)


def test_refusal_names_the_address_kind():
    with pytest.raises(InvalidHeartbeat) as err:
        parse_heartbeat(body(public_ip="255.255.255.255"), NOW)
    assert "broadcast" in err.value.detail


def test_stale_and_future_carry_the_offset_and_windows_differ():
    limits = Limits(max_age=180, future_age=30)
    with pytest.raises(InvalidHeartbeat) as err:
        parse_heartbeat(body(timestamp=NOW + 40), NOW, limits)
    assert err.value.reason == "future" and err.value.offset == pytest.approx(40)
    with pytest.raises(InvalidHeartbeat) as err:
        parse_heartbeat(body(timestamp=NOW - 200), NOW, limits)
    assert err.value.reason == "stale" and err.value.offset == pytest.approx(-200)
    assert parse_heartbeat(body(timestamp=NOW - 170), NOW, limits).drift == pytest.approx(-170)


def test_lab_addresses_admit_loopback_but_never_unspecified_or_broadcast():
    lab = Limits(lab_addresses=True)
    hb = parse_heartbeat(body(public_ip="127.0.0.1", hostname="127.0.0.1", max_load=1), NOW, lab)
    assert (hb.hostname, hb.public_ip) == ("127.0.0.1", "127.0.0.1")
    for fields in (dict(public_ip="0.0.0.0"), dict(public_ip="255.255.255.255"), dict(hostname="::")):
        with pytest.raises(InvalidHeartbeat):
            parse_heartbeat(body(**fields), NOW, lab)
    with pytest.raises(InvalidHeartbeat):
        parse_heartbeat(body(public_ip="127.0.0.1"), NOW)   # off by default
