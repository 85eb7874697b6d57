"""Proxy list and Frontier string building, host/port validation, URL building."""
import unittest

from _helpers import nearest_doc, raises_with, record
from shoal_client.proxies import (InvalidProxy, InvalidResponse, NoCaches, cache_groups, cache_url, cache_urls,
                                  check_server_url,
                                  cvmfs_proxy_value, frontier_string, is_hostname, nearest_url,
                                  parse_default_proxy, parse_port, site_fallback, DEFAULT_CACHES, MAX_CACHES)

# The shared host-name rule (docs/security.md): DNS names with "_", global unicast IP literals only.
GOOD_NAMES = ["squid.example.org", "a", "a-b.c", "xn--bcher-kva.example", "142.104.60.1", "8.8.8.8",
              "2a00:1450:4001::1", "2606:4700:4700::1111", "SQUID1.Example.ORG", "1a.example", "a" * 63 + ".org",
              "squid_05.example.org", "_srv.example.org", "a_", "a." * 125 + "abc"]
BAD_NAMES = ["", " ", "squid example.org", "-squid.org", "squid-.org", "a..b", ".a", "256.1.1.1",
             "1.2.3", "01.2.3.4", "1.2.3.4.5", "fe80::1%eth0", "[2001:db8::1]", "2001:db8::1::2", "squid.org;rm",
             "squid.org\n", "squid.org:3128", "h\u00e9.org", "a" * 64 + ".org", ("a." * 127) + "ab", "$(reboot)",
             "`id`", "a\"b", None, 5, ["x"], "12345", "squid.example.org.", "a/b", "a@b", "a|b", "a'b", "a\\b",
             "_-.org", "-_",
             # IP literals that are not global unicast
             "127.0.0.1", "127.8.9.1", "0.0.0.0", "255.255.255.255", "240.0.0.1", "224.0.0.1", "239.1.1.1",
             "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.1.1", "100.64.0.1",
             "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "192.0.0.1", "0.1.2.3",
             "::", "::1", "::ffff:142.104.60.1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
             "2002:c000:201::1", "2001::1", "3fff::1", "fec0::1", "4000::1", "64:ff9b:1::1", "100::1",
             "192.0.0.9", "2001:4:112::1", "2001:20::1",
             # names for the host itself
             "localhost", "LOCALHOST", "localhost.localdomain", "ip6-localhost", "localhost6", "x.localhost"]


class HostPortTest(unittest.TestCase):
    def test_good_names(self):
        for name in GOOD_NAMES:
            self.assertTrue(is_hostname(name), name)

    def test_bad_names(self):
        for name in BAD_NAMES:
            self.assertFalse(is_hostname(name), repr(name))

    def test_ports(self):
        for value, expected in ((3128, 3128), (1, 1), (65535, 65535), ("3128", 3128), (" 80 ", 80),
                                (0, None), (65536, None), (-1, None), (True, None), (3128.0, None),
                                ("31x", None), ("", None), (None, None), ("999999", None)):
            self.assertEqual(parse_port(value), expected, repr(value))


class CacheUrlTest(unittest.TestCase):
    def test_hostname_and_port(self):
        self.assertEqual(cache_url(record("squid.example.org", 3128)), "http://squid.example.org:3128")

    def test_ipv6_literal_is_bracketed(self):
        self.assertEqual(cache_url(record("2A00:1450:4001::5", 8000)), "http://[2a00:1450:4001::5]:8000")

    def test_falls_back_to_public_ip(self):
        self.assertEqual(cache_url(record(None, public_ip="142.104.60.7")), "http://142.104.60.7:3128")
        self.assertEqual(cache_url(record("", public_ip="2a00:1450:4001::7")), "http://[2a00:1450:4001::7]:3128")

    def test_cache_port_key_of_old_servers(self):
        rec = record("squid.example.org")
        del rec["squid_port"]
        rec["cache_port"] = 3129
        self.assertEqual(cache_url(rec), "http://squid.example.org:3129")

    def test_invalid(self):
        raises_with(self, ValueError, "invalid host name", cache_url, record("bad name"))
        raises_with(self, ValueError, "invalid port", cache_url, record("ok.org", port=0))
        raises_with(self, ValueError, "invalid port", cache_url, record("ok.org", port="x"))
        raises_with(self, ValueError, "no hostname", cache_url, record(None, public_ip=None))


class CacheUrlsTest(unittest.TestCase):
    def test_rank_order_is_numeric_not_lexical(self):
        doc = nearest_doc(*[record("s%d.example.org" % i) for i in range(12)])
        urls, warnings = cache_urls(doc)
        self.assertEqual(urls, ["http://s%d.example.org:3128" % i for i in range(12)])
        self.assertEqual(warnings, [])

    def test_invalid_cache_skipped_with_warning(self):
        doc = nearest_doc(record("a.example.org"), record("evil;reboot"), record("b.example.org", port=99999))
        urls, warnings = cache_urls(doc)
        self.assertEqual(urls, ["http://a.example.org:3128"])
        self.assertEqual(len(warnings), 2)
        self.assertIn("#1", warnings[0])
        self.assertIn("evil;reboot", warnings[0])

    def test_duplicates_dropped(self):
        urls, _ = cache_urls(nearest_doc(record("a.org"), record("A.org."), record("b.org")))
        self.assertEqual(urls, ["http://a.org:3128", "http://b.org:3128"])

    def test_empty_answer(self):
        raises_with(self, NoCaches, "no caches", cache_urls, {})

    def test_only_invalid_caches(self):
        raises_with(self, NoCaches, "no usable cache", cache_urls, nearest_doc(record("bad name")))

    def test_wrong_shapes(self):
        for doc in ([], "x", None, 3, {"a": record("a.org")}, {"0": "a.org"}, {"-1": record("a.org")},
                    {"0": [record("a.org")]}):
            self.assertRaises(InvalidResponse, cache_urls, doc)


def grouped(host, group):
    rec = record(host)
    rec["group"] = group
    return rec


class GroupTest(unittest.TestCase):
    """Equally good caches (same ``group`` number from the server) become one CVMFS ``|`` group."""

    def test_groups_joined_with_bar_then_failover_with_semicolon(self):
        doc = nearest_doc(grouped("a.org", 0), grouped("b.org", 0), grouped("c.org", 1), grouped("d.org", 2))
        groups, _ = cache_groups(doc)
        self.assertEqual(groups, [["http://a.org:3128", "http://b.org:3128"], ["http://c.org:3128"],
                                  ["http://d.org:3128"]])
        self.assertEqual(cvmfs_proxy_value(groups, [["http://site.org:3128"]]),
                         "http://a.org:3128|http://b.org:3128;http://c.org:3128;http://d.org:3128;"
                         "http://site.org:3128")
        # Frontier has no "|": the caches in rank order.
        self.assertEqual(frontier_string(groups), "(proxyurl=http://a.org:3128)(proxyurl=http://b.org:3128)"
                                                  "(proxyurl=http://c.org:3128)(proxyurl=http://d.org:3128)")
        self.assertEqual(cache_urls(doc)[0], ["http://a.org:3128", "http://b.org:3128", "http://c.org:3128",
                                              "http://d.org:3128"])

    def test_upstream_answers_without_group_keep_one_group_per_cache(self):
        doc = nearest_doc(record("a.org"), record("b.org"))
        self.assertEqual(cvmfs_proxy_value(cache_groups(doc)[0], []), "http://a.org:3128;http://b.org:3128")

    def test_odd_group_values_are_not_trusted_and_skipped_caches_do_not_merge_groups(self):
        doc = nearest_doc(grouped("a.org", True), grouped("b.org", True), grouped("c.org", "0"),
                          grouped("d.org", "0"), grouped("e.org", None), grouped("f.org", None))
        self.assertEqual(len(cache_groups(doc)[0]), 6)
        doc = nearest_doc(grouped("a.org", 0), grouped("bad name", 0), grouped("c.org", 0))
        groups, warnings = cache_groups(doc)
        self.assertEqual(groups, [["http://a.org:3128", "http://c.org:3128"]])
        self.assertEqual(len(warnings), 1)

    def test_limit_counts_caches_not_groups(self):
        doc = nearest_doc(*[grouped("s%d.org" % i, 0) for i in range(10)])
        groups, _ = cache_groups(doc, 3)
        self.assertEqual(groups, [["http://s0.org:3128", "http://s1.org:3128", "http://s2.org:3128"]])


class ProxyStringTest(unittest.TestCase):
    def test_cvmfs_value_appends_default(self):
        self.assertEqual(cvmfs_proxy_value(["http://a:3128", "http://[::1]:3128"], [["DIRECT"]]),
                         "http://a:3128;http://[::1]:3128;DIRECT")

    def test_cvmfs_value_with_load_balanced_default(self):
        groups = parse_default_proxy("http://site1:3128|http://site2:3128; DIRECT")
        self.assertEqual(cvmfs_proxy_value(["http://a:3128"], groups),
                         "http://a:3128;http://site1:3128|http://site2:3128;DIRECT")

    def test_empty_default_means_no_fallback(self):
        self.assertEqual(cvmfs_proxy_value(["http://a:3128"], parse_default_proxy("")), "http://a:3128")

    def test_default_equal_to_a_cache_is_not_repeated(self):
        self.assertEqual(cvmfs_proxy_value(["http://a:3128"], parse_default_proxy("http://a:3128;DIRECT")),
                         "http://a:3128;DIRECT")

    def test_bad_defaults(self):
        for text in ("direct ish", "http://a b:3128", "http://a:0", "http://a:x", "http://$x", "a:99999",
                     "DIRECT;;", "http://a:3128\"", "socks://a:1080", "a|", "auto;`id`", "https://a:3128/x y"):
            self.assertRaises(InvalidProxy, parse_default_proxy, text)

    def test_everything_cvmfs_accepts_is_accepted(self):
        # CVMFS_HTTP_PROXY members: DIRECT, auto (PAC), http:// and https:// proxies, bare host:port.
        self.assertEqual(parse_default_proxy("auto; squid1.site:3128|squid2.site ;https://sq.site:3130;direct"),
                         [["auto"], ["http://squid1.site:3128", "http://squid2.site"], ["https://sq.site:3130"],
                          ["DIRECT"]])
        self.assertEqual(cvmfs_proxy_value(["http://a:3128"], parse_default_proxy("auto;DIRECT")),
                         "http://a:3128;auto;DIRECT")
        # Frontier takes only the http:// ones.
        self.assertEqual(frontier_string(["http://a:3128"], parse_default_proxy("auto;https://s:1;b:3128;DIRECT")),
                         "(proxyurl=http://a:3128)(proxyurl=http://b:3128)")

    def test_remembered_site_proxies_drop_direct_and_shoal_caches(self):
        groups, warnings = site_fallback("http://s1.site:3128|s2.site:3128; http://a:3128 ;DIRECT", ["http://a:3128"])
        self.assertEqual(groups, [["http://s1.site:3128", "http://s2.site:3128"]])
        self.assertEqual(warnings, [])
        self.assertEqual(site_fallback("DIRECT")[0], [])
        self.assertEqual(site_fallback("")[0], [])
        self.assertEqual(site_fallback("auto;DIRECT")[0], [["auto"]])
        groups, warnings = site_fallback("http://ok.site:3128;$SQUID;DIRECT")
        self.assertEqual(groups, [["http://ok.site:3128"]])
        self.assertEqual(len(warnings), 1)

    def test_frontier(self):
        self.assertEqual(frontier_string(["http://h1:3128", "http://[2001:db8::1]:3129"]),
                         "(proxyurl=http://h1:3128)(proxyurl=http://[2001:db8::1]:3129)")

    def test_frontier_keeps_url_defaults_drops_direct(self):
        groups = parse_default_proxy("http://site:3128;DIRECT")
        self.assertEqual(frontier_string(["http://h1:3128"], groups),
                         "(proxyurl=http://h1:3128)(proxyurl=http://site:3128)")


    def test_frontier_merged_into_frontier_server_as_upstream(self):
        # upstream 1.0.4 README: (serverurl=http://PresetServer.ca:3128)(proxyurl=http://PROXY.FROM.SHOAL.1:3128)...
        ours = ["http://p1.example.org:3128", "http://p2.example.org:3128"]
        self.assertEqual(frontier_string(ours, (), "(serverurl=http://PresetServer.ca:3128)"),
                         "(serverurl=http://PresetServer.ca:3128)(proxyurl=http://p1.example.org:3128)"
                         "(proxyurl=http://p2.example.org:3128)")
        self.assertEqual(frontier_string(ours, (), "(serverurl=http://s:8000/atlr)(proxyurl=http://old:3128)"
                                                   "(proxyurl=http://p2.example.org:3128)(retrieve-ziplevel=0)"),
                         "(serverurl=http://s:8000/atlr)(proxyurl=http://p1.example.org:3128)"
                         "(proxyurl=http://p2.example.org:3128)(proxyurl=http://old:3128)(retrieve-ziplevel=0)")
        self.assertEqual(frontier_string(ours[:1], (), "http://s:8000/atlr"),
                         "http://s:8000/atlr(proxyurl=http://p1.example.org:3128)")

    def test_site_proxies_may_be_private_loopback_or_use_underscores(self):
        self.assertEqual(parse_default_proxy("http://10.0.0.5:3128|http://squid_2.site.:3128;http://127.0.0.1:3128;"
                                             "http://[fd00::5]:3128;DIRECT"),
                         [["http://10.0.0.5:3128", "http://squid_2.site:3128"], ["http://127.0.0.1:3128"],
                          ["http://[fd00::5]:3128"], ["DIRECT"]])


class LimitTest(unittest.TestCase):
    def test_at_most_n_caches_and_never_more_than_32(self):
        doc = nearest_doc(*[record("s%d.example.org" % i) for i in range(1000)])
        urls, warnings = cache_urls(doc)
        self.assertEqual(urls, ["http://s%d.example.org:3128" % i for i in range(MAX_CACHES)])
        self.assertEqual((MAX_CACHES, DEFAULT_CACHES), (32, 5))
        self.assertEqual(cache_urls(doc, 3)[0], ["http://s0.example.org:3128", "http://s1.example.org:3128",
                                                 "http://s2.example.org:3128"])

    def test_refused_addresses_are_skipped_not_written(self):
        doc = nearest_doc(record("127.0.0.1"), record("::"), record("0.0.0.0"), record("", public_ip="10.0.0.1"),
                          record("255.255.255.255"), record("240.0.0.1"), record("localhost"),
                          record("squid_05.example.org"))
        urls, warnings = cache_urls(doc)
        self.assertEqual(urls, ["http://squid_05.example.org:3128"])
        self.assertEqual(len(warnings), 7)
        self.assertIn("refusing 'localhost': a name for this host itself", warnings[6])
        self.assertIn("refusing '127.0.0.1': not a global unicast address", warnings[0])


class UrlTest(unittest.TestCase):
    def test_nearest_url(self):
        for base, n, expected in (
                ("http://s:8080/nearest", None, "http://s:8080/nearest"),
                ("http://s:8080/nearest", 3, "http://s:8080/nearest/3"),
                ("http://s:8080/nearest/", 3, "http://s:8080/nearest/3"),
                ("https://s/shoal/nearest?ip=192.0.2.1", 10, "https://s/shoal/nearest/10?ip=192.0.2.1"),
                ("http://[::1]:8080/nearestverified", 2, "http://[::1]:8080/nearestverified/2")):
            self.assertEqual(nearest_url(base, n), expected)

    def test_check_server_url(self):
        self.assertEqual(check_server_url("https://shoal.example.org/nearest"), "https://shoal.example.org/nearest")
        for bad in ("ftp://s/nearest", "shoal.example.org/nearest", "http:///nearest", "http://s:port/nearest"):
            self.assertRaises(ValueError, check_server_url, bad)


if __name__ == "__main__":
    unittest.main()
