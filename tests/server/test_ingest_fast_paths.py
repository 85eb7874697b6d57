"""Ingestion's fast paths give exactly what the full path gives, for any input.

A repeated heartbeat is checked against its predecessor's RawShape instead of field by field;
a body that repeats a known one byte for byte but for load and timestamp is not decoded at all
(repeats.py); address classes come from integer ranges; GeoIP answers are remembered per
address. Each is held here against the path it short-cuts: same Heartbeat, same repairs in the
same order, same refusal (reason, detail, offset), same table and counters.
"""
import ipaddress
import json
import os

from hypothesis import given, settings, strategies as st

from shoal_server.consumer import ConsumerStatus, HeartbeatSink
from shoal_server.geo import is_locatable, open_locator
from shoal_server.heartbeat import InvalidHeartbeat, Limits, _ip_or_none, address_class, validate
from shoal_server.table import CacheTable

NOW = 1_700_000_000.0
MISSING = object()
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))   # make test-fast: 200

# Per field: what deployed agents send, mixed with every awkward type and value the validator
# distinguishes (int/float/bool/str of one number, None against absent, repairable and refused).
FIELDS = {
    "uuid": ["u1", "u1", "u1", "u2", "bad uuid", 7],
    "squid_port": [3128, 3128, 3129, "3128", 3128.0, True, 0, None, MISSING],
    "cache_port": [3128, 3128, MISSING, 3129, "3128", None],
    "public_ip": ["142.90.1.1", "142.90.1.1", "142.90.1.2", " 142.90.1.1", "10.0.0.5", "127.0.0.1", "", None,
                  MISSING, "2001:1458::1", "2001:1458:0:0::1", "100.64.0.1", 5],
    "private_ip": ["10.0.0.5", "10.0.0.5", "142.90.1.3", "127.0.0.1", "", None, MISSING, ["10.0.0.5"]],
    "external_ip": [None, None, MISSING, "2001:1458::1", "142.90.1.9", "192.0.2.1", "fd00::1"],
    "hostname": ["squid.example.org", "squid.example.org", "Squid.Example.ORG.", "squid_05.example.org",
                 "localhost", "", None, MISSING, "142.90.1.1", "10.0.0.5", "bad name", 7],
    "max_load": [122000, 122000, 122000.0, 5000, -112, "122000", 0, -0.0, 0.0, None, MISSING, [1],
                 float("inf"), 10 ** 400],
    "verified": [False, False, True, None, MISSING, 0, "true"],
    "agent_version": ["2.0.0", "2.0.0", None, MISSING, "bad version!", 2],
    "upstream": ["both", "both", "BOTH", "cvmfs", None, MISSING, "nope", 1],
    "cache_type": ["squid", "squid", "Varnish", None, MISSING, "x"],
    "load": [1.5, 300, 300.0, "12", -1, None, MISSING, float("inf"), True],
    "timestamp": [NOW, NOW - 10.5, NOW - 1000, NOW + 1000, "1700000000", None, MISSING, True],
}
LIMITS = [Limits(), Limits(lab_addresses=True), Limits(trust_verified_claim=False, default_max_load=5000.0),
          Limits(require_user_id=True, legacy_users=frozenset({"guest"}))]
USERS = [None, "alice", "guest"]


def message(values):
    return {k: v for k, v in values.items() if v is not MISSING}


AGENT = message({k: v[0] for k, v in FIELDS.items()})   # what a current agent sends


@st.composite
def changed(draw, base, always=()):
    """``base`` with a few fields (and always those in ``always``) drawn anew."""
    keys = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=3)) | set(always)
    values = dict(base)
    for key in keys:
        value = draw(st.sampled_from(FIELDS[key]))
        values.pop(key, None)
        if value is not MISSING:
            values[key] = value
    return values


messages = changed(AGENT)


def repeats(first):
    """``first`` again with new load and timestamp, and sometimes a few other fields changed."""
    return changed(first, always=("load", "timestamp"))


def outcome(data, limits, user, previous=None, now=NOW):
    """What validation says, in every detail a user could see."""
    try:
        hb = validate(data, now, limits, user, previous)
    except InvalidHeartbeat as err:
        return ("refused", err.reason, err.detail, err.offset)
    return ("ok", hb, hb.repairs, hb.authenticated, hb.user_id)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data(), messages, st.sampled_from(LIMITS), st.sampled_from(LIMITS), st.sampled_from(USERS),
       st.sampled_from(USERS))
def test_repeated_heartbeat_validates_as_from_scratch(data, first, limits, other_limits, user, next_user):
    try:
        hb = validate(first, NOW, limits, user)
    except InvalidHeartbeat:
        return
    # The second message from a uuid takes the full path and records its shape; later ones may use it.
    again = validate(json.loads(json.dumps(first)), NOW, limits, user, previous=hb)
    assert outcome(first, limits, user) == outcome(first, limits, user, previous=hb)
    later = data.draw(repeats(first))
    now = NOW + data.draw(st.sampled_from([0.0, 30.0, 170.0]))
    assert outcome(later, limits, next_user, again, now) == outcome(later, limits, next_user, None, now)
    # A shape taken under other limits is never trusted for these.
    assert outcome(later, other_limits, next_user, again, now) == outcome(later, other_limits, next_user, None, now)


class FullPathSink(HeartbeatSink):
    """The sink as it was: every message decoded and validated from scratch."""

    def _cut(self, body):
        return None

    def _previous(self, uuid):
        return None


class NoPlace:
    def locate(self, address):
        return None

    def close(self):
        pass


def table_state(table):
    return [(e.hb, e.hb.repairs, e.hb.authenticated, e.created, e.last_active, e.owner) for e in table.snapshot()]


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2"]), st.data()), min_size=1, max_size=8),
       st.sampled_from(LIMITS))
def test_sink_with_fast_path_keeps_the_table_and_counters_of_the_full_path(steps, limits):
    fast = HeartbeatSink(CacheTable(), NoPlace(), limits, ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    full = FullPathSink(CacheTable(), NoPlace(), limits, ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    last = {}
    for uuid, data in steps:
        base = last.get(uuid) or dict(data.draw(messages), uuid=uuid)
        msg = data.draw(repeats(base)) if uuid in last else base
        last[uuid] = msg
        body = json.dumps(msg).encode()
        user = data.draw(st.sampled_from(USERS))
        a, b = fast.handle(body, user), full.handle(body, user)
        assert (a is None) == (b is None)
    assert table_state(fast._table) == table_state(full._table)
    assert fast._status.counters() == full._status.counters()


# Raw bodies as deployed agents and hostile senders write them: every JSON layout, number
# spelling and decoy the byte-level repeat check (repeats.py) must not be fooled by.
LAYOUTS = [(", ", ": "), (",", ":"), (",\n  ", ": "), (" , ", " : "), (",\t", ":\t")]
NUMBERS = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(repr),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(repr),
    st.integers(min_value=-5, max_value=10 ** 6).map(str),
    st.sampled_from(["0", "-0", "-0.0", "1e3", "1.5E+2", "2e-3", "1e400", "-1e400", "01", "1.", ".5", "+1", "NaN",
                     "Infinity", '"12"', '"1.5"', "true", "null", "[1]", "1" * 40, "1" * 33, "12.50000"]),
)
STAMPS = st.one_of(
    st.floats(min_value=NOW - 200, max_value=NOW + 200).map(repr),
    st.sampled_from([NOW, NOW - 10.5, NOW + 20, NOW - 1000, NOW + 1000]).map(repr),
    st.sampled_from([str(int(NOW)), str(int(NOW) - 30), "%.6e" % NOW, "%.17g" % (NOW - 5), '"%d"' % NOW]),
)
# Members a body may carry besides the agent's: each tries to make a byte pattern lie.
DECOYS = [
    ('"extra"', '{"load": 5, "timestamp": 1}'),       # the names one level down
    ('"note"', '"\\"load\\": 7"'),                      # the pattern inside a string
    ('"x\\"load"', "7"),                               # a name that ends in "load
    ('"lo\\u0061d"', "9"),                             # load again, escaped: the decoder keeps the last
    ('"load"', "11"),                                  # load twice
    ('"timestamp"', repr(NOW - 2)),                    # timestamp twice
    ('"list"', "[1, 2]"),
    ('"motd"', '"{load} [timestamp]"'),                # braces and brackets inside a string
    ('"caf\\u00e9"', '"\\u00e9"'),                     # an escape anywhere
    ('"loads"', "3"), ('"my_timestamp"', "4"),         # longer names that contain the pattern
]


@st.composite
def raw_bodies(draw):
    """(static members, layout, decoys) for one cache: a template its repeats are drawn from."""
    base = draw(st.one_of(st.just(AGENT), st.just(AGENT), messages))   # mostly one the server accepts
    static = [(json.dumps(k), json.dumps(v)) for k, v in base.items() if k not in ("load", "timestamp")]
    decoys = draw(st.one_of(st.just([]), st.lists(st.sampled_from(DECOYS), min_size=1, max_size=2)))
    order = draw(st.permutations(range(len(static) + len(decoys) + 2)))
    return static, draw(st.sampled_from(LAYOUTS)), decoys, order


def render(template, load, stamp):
    static, (item_sep, key_sep), decoys, order = template
    members = static + decoys + [('"load"', load), ('"timestamp"', stamp)]
    return ("{" + item_sep.join(f"{members[i][0]}{key_sep}{members[i][1]}" for i in order) + "}").encode()


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "c", "c"]), st.sampled_from([False] * 5 + [True]), NUMBERS, STAMPS,
                          st.sampled_from([None] * 4 + USERS)), min_size=3, max_size=20),
       st.dictionaries(st.sampled_from(["a", "b", "c"]), raw_bodies(), min_size=3),
       st.sampled_from(LIMITS))
def test_repeated_raw_bodies_change_the_table_as_the_full_path_does(steps, templates, limits):
    fast = HeartbeatSink(CacheTable(), NoPlace(), limits, ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    full = FullPathSink(CacheTable(), NoPlace(), limits, ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    # "a" and "b" share their uuid (one cache that alternates between two bodies), "c" has its own.
    templates["c"] = ([(name, '"u3"' if name == '"uuid"' else value) for name, value in templates["c"][0]],
                      *templates["c"][1:])
    for key, other_layout, load, stamp, user in steps:
        template = templates[key]
        if other_layout:   # the same cache changes how it writes its body (an agent upgrade)
            template = (template[0], LAYOUTS[(LAYOUTS.index(template[1]) + 1) % len(LAYOUTS)], *template[2:])
        body = render(template, load, stamp)
        a, b = fast.handle(body, user), full.handle(body, user)
        assert (a is None) == (b is None), body
        assert (a and (a.hb, a.hb.repairs, a.owner)) == (b and (b.hb, b.hb.repairs, b.owner))
    assert table_state(fast._table) == table_state(full._table)
    assert fast._status.counters() == full._status.counters()
    assert fast._status.refused.newest() == full._status.refused.newest()


def agent_body(load, stamp, **fields):
    return json.dumps({**AGENT, "load": load, "timestamp": stamp, **fields}).encode()


def test_a_known_cache_s_repeats_are_not_decoded(monkeypatch):
    from shoal_server import consumer
    sink = HeartbeatSink(CacheTable(), NoPlace(), Limits(), ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    decoded = []
    real_decode = consumer.decode
    monkeypatch.setattr(consumer, "decode", lambda body: decoded.append(body) or real_decode(body))
    for k in range(5):
        assert sink.handle(agent_body(100.0 + k, NOW - k)) is not None
    assert len(decoded) == 1          # the first vouches for its template: a cache's second is not decoded
    assert sink._table.get(AGENT["uuid"]).hb.load == 104.0
    # A changed field is a new template: decoded and validated in full, and refused when wrong.
    assert sink.handle(agent_body(1.0, NOW, squid_port=0)) is None
    assert sink._status.counters()["dropped"] == {"bad_port": 1}
    assert len(decoded) == 2
    # A repeat that is stale or negative is refused as the full path refuses it.
    assert sink.handle(agent_body(1.0, NOW - 1000)) is None
    assert sink.handle(agent_body(-1, NOW)) is None
    assert sink._status.counters()["dropped"] == {"bad_port": 1, "stale": 1, "bad_load": 1}
    assert len(decoded) == 2


def test_templates_of_caches_that_left_are_forgotten():
    sink = HeartbeatSink(CacheTable(), NoPlace(), Limits(), ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    for wave in range(4):
        for i in range(600):
            for k in range(2):
                sink.handle(agent_body(1.0 + k, NOW, uuid=f"w{wave}-{i}"))
        sink._table.expire(NOW + 10_000, 60.0)
    assert len(sink._table) == 0
    assert len(sink._repeats) <= 2 * 600 + 1024


def test_a_cache_that_changes_its_body_every_time_keeps_one_template():
    # Each body a new template (another agent_version each time): the prune keeps the one the
    # table holds, so memory stays bounded and the prune runs once per ~1,000 new templates.
    sink = HeartbeatSink(CacheTable(), NoPlace(), Limits(), ConsumerStatus(clock=lambda: NOW), clock=lambda: NOW)
    sizes = []
    for k in range(3000):
        assert sink.handle(agent_body(1.0, NOW, agent_version=f"2.0.{k}")) is not None
        sizes.append(len(sink._repeats))
    assert max(sizes) <= 2 * 1 + 1024 + 1
    assert sizes[-1] < 1024 and sum(1 for a, b in zip(sizes, sizes[1:]) if b < a) <= 3


def reference_address_class(text):
    """address_class as it was written before the integer ranges: ipaddress all the way."""
    from shoal_server import heartbeat as hbmod
    addr = _ip_or_none(text)
    if addr is None:
        return "invalid"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return "non-global"
    if addr.is_global and not addr.is_multicast:
        if isinstance(addr, ipaddress.IPv4Address):
            outside = any(addr in net for net in hbmod._NOT_GLOBAL_V4)
        else:
            outside = addr not in hbmod._GLOBAL_UNICAST_V6 or any(addr in net for net in hbmod._NOT_GLOBAL_V6)
        return "reserved" if outside else "global"
    return hbmod._classify(text)


def _edges():
    """Both ends (and one beyond each) of every network the tables or ipaddress single out."""
    from shoal_server import heartbeat as hbmod
    nets = [*hbmod._NOT_GLOBAL_V4, *hbmod._NOT_GLOBAL_V6, hbmod._GLOBAL_UNICAST_V6, hbmod._ULA_V6,
            hbmod._DOC_V6, hbmod._SHARED_V4, *hbmod._PRIVATE_V4, *hbmod._DOC_V4]
    out = []
    for net in nets:
        top = 2 ** net.max_prefixlen - 1
        for value in (int(net.network_address) - 1, int(net.network_address), int(net.broadcast_address),
                      int(net.broadcast_address) + 1):
            if 0 <= value <= top:
                out.append(str(ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)))
    return out


addresses = st.one_of(st.ip_addresses().map(str), st.sampled_from(_edges()),
                      st.text(alphabet="0123456789.:abcdef%f ", max_size=24))


@settings(max_examples=EXAMPLES, deadline=None)
@given(addresses)
def test_address_class_matches_the_ipaddress_classification(text):
    assert address_class(text) == reference_address_class(text)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(addresses, st.none()))
def test_is_locatable_is_ipaddress_is_global(text):
    try:
        expected = ipaddress.ip_address(text).is_global
    except ValueError:
        expected = False
    assert is_locatable(text) == expected


_LOCATOR = []


def bundled_locator():
    if not _LOCATOR:
        _LOCATOR.append(open_locator(""))
    return _LOCATOR[0]


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None)
@given(st.lists(st.one_of(st.ip_addresses(v=4).map(str), st.sampled_from(["142.90.1.1", "128.141.1.1", "10.0.0.5",
                                                                             "2001:1458::1", "", "x"])),
                min_size=1, max_size=20))
def test_remembered_places_are_the_database_answers(queries):
    geo = bundled_locator()
    for address in queries:
        assert geo.locate(address) == geo._locate(address)
