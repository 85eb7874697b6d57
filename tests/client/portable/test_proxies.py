"""Proxy list and Frontier string building, host/port validation, URL building."""
import unittest

from _helpers import nearest_doc, raises_with, record
from shoal_client.proxies import (InvalidProxy, InvalidResponse, NoCaches, cache_url, cache_urls, check_server_url,
                                  cvmfs_proxy_value, frontier_string, is_hostname, nearest_url,
                                  parse_default_proxy, parse_port)

GOOD_NAMES = ["squid.example.org", "squid.example.org.", "a", "a-b.c", "xn--bcher-kva.example", "192.0.2.1",
              "255.255.255.255", "2001:db8::1", "::1", "::ffff:192.0.2.1", "SQUID1.Example.ORG", "1a.example",
              "a" * 63 + ".org"]
BAD_NAMES = ["", " ", "squid example.org", "-squid.org", "squid-.org", "sq_uid.org", "a..b", ".a", "256.1.1.1",
             "1.2.3", "01.2.3.4", "1.2.3.4.5", "fe80::1%eth0", "[2001:db8::1]", "2001:db8::1::2", "squid.org;rm",
             "squid.org\n", "squid.org:3128", "h\u00e9.org", "a" * 64 + ".org", ("a." * 127) + "ab", "$(reboot)",
             "`id`", "a\"b", None, 5, ["x"], "12345"]


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
        self.assertEqual(cache_url(record("2001:DB8::5", 8000)), "http://[2001:db8::5]:8000")

    def test_falls_back_to_public_ip(self):
        self.assertEqual(cache_url(record(None, public_ip="192.0.2.7")), "http://192.0.2.7:3128")
        self.assertEqual(cache_url(record("", public_ip="2001:db8::7")), "http://[2001:db8::7]:3128")

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
        for text in ("direct-ish", "https://a:3128", "http://a b:3128", "http://a:0", "http://a:x", "http://$x",
                     "DIRECT;;", "http://a:3128\"", "socks://a:1080"):
            self.assertRaises(InvalidProxy, parse_default_proxy, text)

    def test_frontier(self):
        self.assertEqual(frontier_string(["http://h1:3128", "http://[2001:db8::1]:3129"]),
                         "(proxyurl=http://h1:3128)(proxyurl=http://[2001:db8::1]:3129)")

    def test_frontier_keeps_url_defaults_drops_direct(self):
        groups = parse_default_proxy("http://site:3128;DIRECT")
        self.assertEqual(frontier_string(["http://h1:3128"], groups),
                         "(proxyurl=http://h1:3128)(proxyurl=http://site:3128)")


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
