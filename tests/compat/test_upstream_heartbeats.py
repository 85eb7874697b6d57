"""Every upstream agent release's heartbeat, as its code builds it, is accepted and served as upstream served it."""
from __future__ import annotations

import json
import re

import pytest

from shoal_server.heartbeat import Limits, parse_heartbeat
from shoal_server.render import cache_record, to_json
from shoal_server.table import CacheEntry
from support.upstream import RELEASES, agent_body, encode, fixture_names, load_fixture

NOW = 1_766_171_549.0
LIMITS = Limits(default_max_load=122000.0, max_age=180.0)
NAMES = fixture_names()


def test_every_release_has_a_fixture_citing_its_code():
    releases = {load_fixture(name)["release"] for name in NAMES}
    assert releases == set(RELEASES)
    for name in NAMES:
        fx = load_fixture(name)
        assert fx["sources"] and all(re.match(r"[\w.-]+:[\w./-]+[: ]", s) for s in fx["sources"]), name
        assert fx["amqp"]["routing_key"] == "info" and fx["amqp"]["properties"] == {"content_type": "application/json"}


@pytest.mark.parametrize("name", NAMES)
def test_upstream_heartbeat_accepted_with_the_named_repairs(name):
    expect = load_fixture(name)["expect"]
    hb = parse_heartbeat(encode(agent_body(name, NOW)), NOW, LIMITS)
    assert hb.hostname == expect["hostname"]
    assert hb.squid_port == expect["squid_port"]
    assert hb.max_load == (LIMITS.default_max_load if expect["max_load"] == "default" else expect["max_load"])
    assert sorted(hb.repairs) == sorted(expect["repairs"])
    record = cache_record(CacheEntry(hb=hb, created=NOW, last_active=NOW, location=None))
    assert record["public_ip"] == expect["public_ip"]          # external_ip copied when none was sent
    assert record["squid_port"] == expect["squid_port"] and isinstance(record["squid_port"], int)


def test_string_typed_values_of_0_9_x_are_served_as_numbers():
    hb = parse_heartbeat(encode(agent_body("0.9.5-sample", NOW)), NOW, LIMITS)
    text = to_json([cache_record(CacheEntry(hb=hb, created=NOW, last_active=NOW, location=None))])
    assert '"max_load": 122000.0' in text and '"122000"' not in text


def test_virtio_max_load_is_never_served_negative():
    hb = parse_heartbeat(encode(agent_body("HEAD-virtio", NOW)), NOW, LIMITS)
    record = json.loads(to_json([cache_record(CacheEntry(hb=hb, created=NOW, last_active=NOW, location=None))]))["0"]
    assert record["max_load"] == 122000.0 and record["load"] == 12.5
