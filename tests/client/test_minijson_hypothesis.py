"""Property tests (venv only): minijson.loads == json.loads over >= 10,000 generated documents,
and the client's name check against the shared host-name rule and the server's."""
from __future__ import annotations

import ipaddress
import json
import math
import random
import re

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from shoal_client import minijson
from shoal_client.cvmfsconf import current_values, rewrite
from shoal_client.proxies import cache_url, cache_urls, is_hostname, NoCaches
from shoal_server.heartbeat import is_hostname as server_is_hostname

# Hypothesis spends most of its time per example and per drawn value, so each example checks a
# batch of values, each written as several distinct documents (other escapes, other whitespace).
# A failing batch still shrinks. The counts below are asserted, not assumed.
VALUES_PER_EXAMPLE = 10
ARBITRARY_EXAMPLES, ARBITRARY_STYLES = 150, 3    # 4,500 documents
GRAMMAR_EXAMPLES, GRAMMAR_VARIANTS = 90, 2       # 1,800 documents
SERVER_EXAMPLES, SERVER_VARIANTS = 200, 2        # 4,000 documents (10 answers per example)
EQUALITY_DOCUMENTS = VALUES_PER_EXAMPLE * (ARBITRARY_EXAMPLES * ARBITRARY_STYLES + GRAMMAR_EXAMPLES * GRAMMAR_VARIANTS
                                           + SERVER_EXAMPLES * SERVER_VARIANTS)
assert EQUALITY_DOCUMENTS >= 10_000

FAST = dict(deadline=None, database=None, phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def documents_checked():
    """Documents each equality test checked; the last test of the module adds them up."""
    return []


def same(a, b) -> bool:
    """Equal values of the same types all the way down (floats by repr, so -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def assert_same_as_json(text: str) -> None:
    expected = json.loads(text)
    got = minijson.loads(text)
    assert same(got, expected), (text, got, expected)


# --- arbitrary values, serialised in many json.dumps styles -------------------------------------
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2 ** 80, max_value=2 ** 80)
          | st.floats(allow_nan=False, allow_infinity=False) | ANY_TEXT)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
                      max_leaves=12)
ALL_STYLES = [dict(ensure_ascii=a, sort_keys=k, indent=i, separators=sep)
              for a in (True, False) for k in (True, False) for i in (None, 0, 1, 4, "\t", " \r\n")
              for sep in (None, (",", ":"), (", ", ": "), (" ,\n", " :\t"))]
STYLES = st.lists(st.sampled_from(ALL_STYLES), min_size=ARBITRARY_STYLES, max_size=ARBITRARY_STYLES)


def test_arbitrary_values_in_any_style(documents_checked):
    seen = []

    @settings(max_examples=ARBITRARY_EXAMPLES, **FAST)
    @given(st.lists(st.tuples(VALUES, STYLES), min_size=VALUES_PER_EXAMPLE, max_size=VALUES_PER_EXAMPLE))
    def check(batch):
        for value, styles in batch:
            for style in styles:
                seen.append(1)
                assert_same_as_json(json.dumps(value, **style))

    check()
    documents_checked.append(len(seen))
    assert len(seen) >= ARBITRARY_EXAMPLES * VALUES_PER_EXAMPLE * ARBITRARY_STYLES


# --- JSON text written directly from the grammar (escapes, number forms, whitespace) ------------
WS = st.text(" \t\n\r", max_size=3)
DIGITS = st.text("0123456789", min_size=1, max_size=25)
NUMBER = st.builds(
    lambda sign, whole, frac, exp: sign + whole + frac + exp,
    st.sampled_from(["", "-"]),
    st.just("0") | st.builds(lambda first, rest: first + rest, st.sampled_from("123456789"),
                             st.text("0123456789", max_size=25)),
    st.just("") | DIGITS.map(lambda d: "." + d),
    st.just("") | st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                            st.text("0123456789", min_size=1, max_size=4)),
)


def _u_escape(code: int, upper: bool) -> str:
    text = "\\u%04x" % code
    return text.upper().replace("\\U", "\\u") if upper else text


def _char_piece(char: str, how: int, upper: bool) -> str:
    code = ord(char)
    if code > 0xFFFF:  # JSON has no \U: write the surrogate pair, or the raw character
        if how % 2:
            code -= 0x10000
            return _u_escape(0xD800 + (code >> 10), upper) + _u_escape(0xDC00 + (code & 0x3FF), upper)
        return char
    short = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if how == 0 and char in short:
        return short[char]
    if how == 1 or code < 0x20 or char in '"\\':
        return _u_escape(code, upper)
    return char


def _encode_string(text: str, seed: int) -> str:
    """Write ``text`` as a JSON string, choosing raw / short escape / \\u escape per character from ``seed``."""
    rng = random.Random(seed)
    return '"' + "".join(_char_piece(c, rng.randrange(3), rng.random() < 0.5) for c in text) + '"'


ESCAPABLE = '"\\/\b\f\n\r\t\x00\x1f\x7f'


def _random_text(seed: int) -> str:
    """Up to 12 characters weighted towards what needs escaping, then ASCII, BMP and astral planes."""
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randrange(13)):
        kind = rng.random()
        if kind < 0.35:
            out.append(rng.choice(ESCAPABLE))
        elif kind < 0.7:
            out.append(chr(rng.randrange(0x20, 0x7F)))
        elif kind < 0.9:
            out.append(chr(rng.randrange(0x80, 0x10000)))  # includes lone surrogates, as json allows
        else:
            out.append(chr(rng.randrange(0x10000, 0x110000)))
    return "".join(out)


STRING = st.builds(_encode_string, ANY_TEXT | st.integers(0, 2 ** 64).map(_random_text), st.integers(0, 2 ** 32 - 1))
LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(lambda c: '"\\u%04x"' % c)
SCALAR_TEXT = st.sampled_from(["true", "false", "null"]) | NUMBER | STRING | LONE_SURROGATES


def _container(children):
    arrays = st.lists(st.tuples(WS, children, WS), max_size=4).map(
        lambda items: "[" + ",".join(a + v + b for a, v, b in items) + "]")
    objects = st.lists(st.tuples(WS, STRING, WS, WS, children, WS), max_size=4).map(
        lambda items: "{" + ",".join(a + k + b + ":" + c + v + d for a, k, b, c, v, d in items) + "}")
    return arrays | objects


JSON_TEXT = st.builds(lambda a, v, b: a + v + b, WS, st.recursive(SCALAR_TEXT, _container, max_leaves=12), WS)


def test_grammar_generated_text(documents_checked):
    seen = []

    @settings(max_examples=GRAMMAR_EXAMPLES, **FAST)
    @given(st.lists(JSON_TEXT, min_size=VALUES_PER_EXAMPLE, max_size=VALUES_PER_EXAMPLE))
    def check(batch):
        for text in batch:
            seen.extend((1, 1))
            assert_same_as_json(text)
            try:  # the same value with raw non-ASCII text and no escapes
                variant = json.dumps(json.loads(text), ensure_ascii=False, allow_nan=False)
            except ValueError:  # a number like 1e400 became inf, which JSON cannot write
                variant = "\r\n" + text + " \t"
            assert_same_as_json(variant)

    check()
    documents_checked.append(len(seen))
    assert len(seen) >= GRAMMAR_EXAMPLES * VALUES_PER_EXAMPLE * GRAMMAR_VARIANTS


# --- documents shaped like the server's /nearest answer ----------------------------------------
# --- the shared host-name rule (HOSTRULE), written independently with ipaddress --------------------
NOT_GLOBAL = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "240.0.0.0/4", "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20")]
LOOPBACK = ("localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4", "localhost6",
            "localhost6.localdomain6", "ip6-localhost", "ip6-loopback")
LABEL_RULE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


def reference_served(name) -> bool:
    """HOSTRULE from its text: a DNS name, or a global unicast IP literal."""
    if not isinstance(name, str) or not name or not name.isascii() or "%" in name:
        return False
    if re.fullmatch(r"[0-9.]+", name) or ":" in name:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False
        if ip.version == 6 and ip not in ipaddress.ip_network("2000::/3"):
            return False
        return not any(ip in net for net in NOT_GLOBAL if net.version == ip.version)
    labels = name.split(".")
    if name.lower() in LOOPBACK or name.lower().endswith(".localhost"):
        return False
    return len(name) <= 253 and all(LABEL_RULE.match(l) for l in labels) and not labels[-1].isdigit()


GLOBAL_IPS = st.ip_addresses().map(str).filter(reference_served)
NAME_POOL = ["squid.example.org", "squid-01.site.example.edu", "cache.cern.ch", "a", "xn--bcher-kva.example",
             "squid_05.example.org", "142.104.60.10", "8.8.8.8", "2a00:1450:4001::1", "2606:4700::1111"]
LABELS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=10).map(
    lambda label: "x" + label.strip("-") + "y")
HOSTNAMES = (st.sampled_from(NAME_POOL) | GLOBAL_IPS | st.lists(LABELS, min_size=1, max_size=3).map(".".join))
OPT_IP = st.none() | st.sampled_from(NAME_POOL[6:]) | GLOBAL_IPS
FINITE = st.floats(allow_nan=False, allow_infinity=False)
GEO = st.none() | st.fixed_dictionaries({
    "city": ANY_TEXT, "country_code": st.sampled_from(["CA", "CH", "DE", "US", "JP"]),
    "latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180),
    "continent_code": st.sampled_from(["EU", "NA", "AS"]), "time_zone": st.none() | ANY_TEXT})
RECORD = st.fixed_dictionaries({
    "hostname": HOSTNAMES, "squid_port": st.integers(1, 65535), "public_ip": OPT_IP,
    "private_ip": st.just("10.0.0.5"), "external_ip": st.none(), "load": st.floats(0, 1e9) | st.integers(0, 10 ** 9),
    "max_load": FINITE, "distance": st.none() | st.floats(0, 20040.0).map(lambda d: round(d, 1)),
    "last_active": FINITE, "created": st.just(1700000000.125), "verified": st.booleans(),
    "upstream": st.sampled_from(["cvmfs", "frontier", "both"]), "cache_type": st.just("squid"),
    "uuid": st.text("0123456789abcdef", min_size=1, max_size=32), "geo_data": GEO})


@st.composite
def server_docs(draw, count=VALUES_PER_EXAMPLE):
    """``count`` /nearest answers built from one pool of records (rank orders differ per answer)."""
    pool = draw(st.lists(RECORD, min_size=1, max_size=6))
    docs = [{}]
    for _ in range(count - 1):
        picks = draw(st.lists(st.integers(0, len(pool) - 1), max_size=8))
        docs.append({str(i): pool[j] for i, j in enumerate(picks)})
    return docs


def test_server_shaped_answers(documents_checked):
    seen = []

    @settings(max_examples=SERVER_EXAMPLES, **FAST)
    @given(server_docs())
    def check(docs):
        for doc in docs:
            for ensure_ascii in (True, False):
                seen.append(1)
                text = json.dumps(doc, separators=(", ", ": "), allow_nan=False, ensure_ascii=ensure_ascii)  # render.py
                assert_same_as_json(text)
            if not doc:
                continue
            urls, warnings = cache_urls(minijson.loads(text))
            assert warnings == []  # every name the server can publish is usable
            assert urls == list(dict.fromkeys(cache_url(doc[str(i)]) for i in range(len(doc))))

    check()
    documents_checked.append(len(seen))
    assert len(seen) >= SERVER_EXAMPLES * VALUES_PER_EXAMPLE * SERVER_VARIANTS


# --- invalid input: both parsers refuse the same texts ------------------------------------------
JSON_EXTENSIONS = ("NaN", "Infinity")  # accepted by json.loads, refused by minijson on purpose


@settings(max_examples=150, **FAST)
@given(JSON_TEXT, st.data())
def test_mutated_documents_fail_alike(text, data):
    """Delete, insert or replace one character: both parsers must agree on valid vs invalid."""
    pos = data.draw(st.integers(0, len(text)))
    op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    char = data.draw(st.sampled_from(list('{}[]",:\\/ -+.0123456789eEtfnulx\x00\x1f')))
    if op == "delete":
        mutated = text[:pos] + text[pos + 1:]
    elif op == "insert":
        mutated = text[:pos] + char + text[pos:]
    else:
        mutated = text[:pos] + char + text[pos + 1:]
    try:
        expected = json.loads(mutated)
    except ValueError:
        try:
            minijson.loads(mutated)
        except minijson.JSONError:
            return
        raise AssertionError(f"minijson accepted what json.loads refuses: {mutated!r}")
    assert_same_as_json(mutated)


@settings(max_examples=1000, **FAST)
@given(st.text(st.sampled_from(list('{}[]",:\\/ -+.0123456789eEtrufalsn\t\n\x00é\ud800')), max_size=30))
def test_random_text_fails_alike(text):
    try:
        expected = json.loads(text)
    except ValueError:
        try:
            got = minijson.loads(text)
        except minijson.JSONError:
            return
        raise AssertionError(f"minijson accepted what json.loads refuses: {text!r} -> {got!r}")
    assert same(minijson.loads(text), expected)


def test_documented_extensions_are_refused():
    for text in ("NaN", "Infinity", "-Infinity", "[NaN]", '{"load": Infinity}'):
        assert json.loads(text) is not None
        try:
            minijson.loads(text)
        except minijson.JSONError:
            continue
        raise AssertionError(text)
    assert math.isinf(minijson.loads("1e999"))


# --- names: the client accepts every name the server accepts, and only shell-safe text ----------
ANY_NAME = (HOSTNAMES | st.ip_addresses().map(str) | st.text(max_size=30) | st.text("abc_-.:019[]%", max_size=20)
            | st.integers(0, 2 ** 32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))))


@settings(max_examples=600, **FAST)
@given(ANY_NAME)
def test_client_accepts_exactly_the_shared_rule_and_only_shell_safe_text(name):
    assert is_hostname(name) == reference_served(name), name
    if ":" in name or re.fullmatch(r"[0-9.]+", name or "x"):
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            ip = None
        if ip is not None and is_hostname(name):  # never more than Python itself calls global
            assert ip.is_global and not ip.is_multicast and not ip.is_loopback, name
    if is_hostname(name):
        url = cache_url({"hostname": name, "squid_port": 3128})
        value = url + ";DIRECT"
        assert current_values(rewrite(b"A=1\n", value)) == [value.encode("ascii")]


@settings(max_examples=300, **FAST)
@given(ANY_NAME)
def test_client_accepts_what_the_server_serves(name):
    """Exactly the server's names and IP literals: both apply the same fixed address table, not
    their Python's ``ipaddress`` (whose tables differ between 3.9, 3.11 and 3.13). Loopback
    names are the one difference: the server repairs them (it never serves them)."""
    if is_hostname(name):
        assert server_is_hostname(name), name
    elif isinstance(name, str) and name.lower() not in LOOPBACK and not name.lower().endswith(".localhost"):
        assert not server_is_hostname(name), name


def test_empty_answer_is_no_caches():
    try:
        cache_urls(minijson.loads("{}"))
    except NoCaches:
        return
    raise AssertionError("{} accepted")


def test_at_least_10000_documents_checked(documents_checked, request):
    """Runs last in this module: the three equality tests together checked >= 10,000 documents."""
    names = ("test_arbitrary_values_in_any_style", "test_grammar_generated_text", "test_server_shaped_answers")
    selected = {item.name for item in request.session.items}
    if not all(name in selected for name in names):
        pytest.skip("only meaningful when all three equality tests run")
    assert len(documents_checked) == 3 and sum(documents_checked) >= 10_000, documents_checked
    print(f"minijson == json.loads on {sum(documents_checked)} generated documents")
