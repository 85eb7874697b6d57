"""Everything an agent (or GeoIP) can put on a page is escaped for where it lands.

The validator already keeps host names to RFC 1123 (see test_fuzz_heartbeat); these tests bypass it
and hand the renderers hostile text directly, so a validator regression alone cannot open a hole.
HTML is parsed back with html.parser; PAC files are executed by node in a fresh VM context.
"""
from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat
from shoal_server.pac import render_pac
from shoal_server.render import cache_record, js_string, to_json
from shoal_server.statuspage import PageRequest, render_status
from shoal_server.table import CacheEntry
from support.tools import requires

NOW = 1_700_000_000.0
EXAMPLES = min(300, int(os.environ.get("FUZZ_EXAMPLES", "300")))
HOSTILE = ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "' onmouseover='alert(1)",
           "</td></tr></table><h1>owned</h1>", "&lt;already&gt; &amp; escaped", "<!--", "]]>", "</title><b>x",
           "javascript:alert(1)", "\u2028\u2029", "\\\"; alert(1); //", "${alert(1)}", "`", "\x00", "é中文🙂"]
hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=60),
                         st.lists(st.sampled_from(HOSTILE + ["a", " ", "<", ">", "&", "\"", "'"]), min_size=1,
                                  max_size=6).map("".join))


def entry(hostname, uuid="u-1", city=None, public_ip="198.51.100.7"):
    hb = Heartbeat(uuid=uuid, hostname=hostname, squid_port=3128, public_ip=public_ip, private_ip=None,
                   external_ip=None, load=10.0, max_load=100.0, timestamp=NOW, drift=0.0, verified=True,
                   upstream="both", cache_type="squid", agent_version=None, user_id="agent")
    loc = Location(46.2, 6.1, city=city, country_code="CH", country_name=city)
    return CacheEntry(hb=hb, created=NOW - 100, last_active=NOW - 5, location=loc)


class Structure(html.parser.HTMLParser):
    """Record the element/attribute skeleton of a page, and every text node and attribute value."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.skeleton, self.texts, self.attrs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.skeleton.append((tag, tuple(name for name, _ in attrs)))
        self.attrs.extend(value for _, value in attrs)

    def handle_endtag(self, tag):
        self.skeleton.append(("/" + tag, ()))

    def handle_data(self, data):
        self.texts.append(data)

    def handle_comment(self, data):
        self.skeleton.append(("!--", ()))

    def handle_decl(self, decl):
        self.skeleton.append(("!" + decl.lower(), ()))


def parse(page):
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


def page(entries):
    return render_status(entries, NOW, PageRequest(), 100, 60.0, True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_text, hostile_text, hostile_text)
def test_status_page_escapes_agent_and_geoip_text(hostname, uuid, city):
    benign, hostile = parse(page([entry("squid.example.org", "u-1", "Geneva")])), parse(page([entry(hostname, uuid, city)]))
    # The same elements and attributes: no text became markup.
    assert hostile.skeleton == benign.skeleton
    # And the text reads back exactly (html.parser unescapes what render_status escaped).
    visible = "".join(hostile.texts)
    assert hostname in visible or hostname.strip() == "" or "\x00" in hostname or "\r" in hostname
    assert uuid in hostile.attrs or "\x00" in uuid or "\r" in uuid


def test_status_page_escapes_the_classic_payloads():
    text = page([entry(h, f"u{i}", h) for i, h in enumerate(HOSTILE)])
    for payload in ("<script", "<img", "<h1>owned", "<b>x", "<!--"):
        assert payload not in text          # only ever present escaped, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&amp;lt;already&amp;gt;" in text      # escaped once more, not passed through


def test_json_round_trips_hostile_text():
    entries = [entry(h, f"u{i}", h) for i, h in enumerate(HOSTILE)]
    body = to_json(cache_record(e) for e in entries)
    decoded = json.loads(body)
    assert [decoded[str(i)]["hostname"] for i in range(len(HOSTILE))] == HOSTILE


NODE = shutil.which("node")
PAC_RUNNER = r"""
const vm = require('vm');
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map(pac => {
  const sandbox = {};
  try {
    vm.runInNewContext(pac, sandbox, {timeout: 1000});
    const keys = Object.keys(sandbox);
    return {keys: keys, value: typeof sandbox.FindProxyForURL === 'function'
            ? sandbox.FindProxyForURL('http://x/', 'x') : null};
  } catch (e) { return {error: String(e)}; }
});
process.stdout.write(JSON.stringify(out));
"""


def run_pacs(pacs):
    out = subprocess.run([NODE, "-e", PAC_RUNNER], input=json.dumps(pacs), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@requires("node", NODE is not None)
def test_pac_file_keeps_hostile_host_names_inside_the_js_string():
    import random
    rng = random.Random(5)
    alphabet = list("<>&\"'\\/;:`$ {}()\n\r\t\u2028\u2029\x00") + ["</script>", "\"+alert(1)+\"", "é", "🙂", "a"]
    names = HOSTILE + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(400)]
    cases = [[(name, 3128), ("squid2.example.org", 8080)] for name in names]
    results = run_pacs([render_pac([], proxies, ("DIRECT",)) for proxies in cases])
    for proxies, result in zip(cases, results):
        assert "error" not in result, (proxies, result)
        assert result["keys"] == ["FindProxyForURL"], (proxies, result)   # nothing else ran
        host = proxies[0][0]
        first = f"[{host}]:3128" if ":" in host else f"{host}:3128"
        assert result["value"] == f"PROXY {first}; PROXY squid2.example.org:8080; DIRECT"


def test_js_string_is_safe_inside_html_script_too():
    literal = js_string("</script><script>alert(1)</script>&<!--")
    assert "<" not in literal and ">" not in literal and "&" not in literal
    assert json.loads(literal) == "</script><script>alert(1)</script>&<!--"
