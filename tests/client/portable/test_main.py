"""The command in-process against a stdlib fake server: output, exit codes, and what it writes."""
import json
import os
import socket
import unittest

from _helpers import (forget_root_site_proxies, REALISTIC_LOCAL, FakeServer, TempDir, nearest_doc, read_bytes, record, run_main,
                      write_bytes)
from shoal_client import __version__, minijson
from shoal_client.cvmfsconf import current_values
from shoal_client.main import EXIT_CODES, Exit

DOC = nearest_doc(record("squid-b.example.org", 3128, load=5), record("2a00:1450:4001::7", 3129),
                  record(None, 8080, public_ip="142.104.60.44"))
# No default_squid_proxy: the site's own proxies from REALISTIC_LOCAL (before Shoal's edit), without DIRECT.
SITE = "http://old-squid.example.org:3128|http://old-squid2.example.org:3128"
EXPECTED = "http://squid-b.example.org:3128;http://[2a00:1450:4001::7]:3129;http://142.104.60.44:8080;" + SITE
OLD_MTIME = 1000000000


def free_closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class MainTest(unittest.TestCase):
    def setUp(self):
        forget_root_site_proxies()
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.local = os.path.join(self.dir, "default.local")
        self.lockdir = TempDir()
        self.lock = os.path.join(self.lockdir.__enter__(), "shoal-client.lock")
        write_bytes(self.local, REALISTIC_LOCAL)
        os.utime(self.local, (OLD_MTIME, OLD_MTIME))
        self.server = FakeServer({"/nearest": (200, json.dumps(DOC), 0),
                                  "/nearest/2": (200, json.dumps(nearest_doc(*[DOC[k] for k in ("0", "1")])), 0),
                                  "/empty": (200, "{}", 0), "/empty/2": (200, "{}", 0), "/500": (500, "oops", 0), "/html": (200, "<html>", 0),
                                  "/list": (200, "[]", 0), "/latin1": (200, b'{"0": "\xe9"}', 0),
                                  "/truncated": (200, json.dumps(DOC)[:-3], 0),
                                  "/slow": (200, json.dumps(DOC), 3),
                                  "/bad": (200, json.dumps(nearest_doc(record("bad name"))), 0),
                                  "/somebad": (200, json.dumps(nearest_doc(record("x;reboot"), record("ok.org"))),
                                               0)})
        self.server.__enter__()

    def tearDown(self):
        forget_root_site_proxies()
        self.server.__exit__(None, None, None)
        self.tmp.__exit__(None, None, None)
        self.lockdir.__exit__(None, None, None)

    def client(self, *args, **env):
        return run_main(["--cvmfs-config", self.local, "--lock-file", self.lock] + list(args), **env)

    def assertUntouched(self):
        self.assertEqual(read_bytes(self.local), REALISTIC_LOCAL)
        self.assertEqual(os.stat(self.local).st_mtime, OLD_MTIME)
        self.assertEqual(os.listdir(self.dir), ["default.local"])

    def assertFails(self, code, url, text, *args):
        got, out, err = self.client("-s", url, *args)
        self.assertEqual((got, out), (code, ""), err)
        self.assertTrue(err.startswith("shoal-client: error: "), err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn(text, err)
        self.assertUntouched()

    def test_rewrites_proxy_line_in_server_order(self):
        code, out, err = self.client("-s", self.server.url())
        self.assertEqual((code, out), (0, ""))
        self.assertIn("updated %s: CVMFS_HTTP_PROXY=%s" % (self.local, EXPECTED), err)
        new = read_bytes(self.local)
        self.assertEqual(current_values(new), [EXPECTED.encode("ascii")])
        old_lines, new_lines = REALISTIC_LOCAL.splitlines(True), new.splitlines(True)
        self.assertEqual([a == b for a, b in zip(old_lines, new_lines)], [i != 6 for i in range(len(old_lines))])
        self.assertEqual(self.server.requests[0][0], "/nearest")
        headers = dict((k.lower(), v) for k, v in self.server.requests[0][1].items())
        self.assertEqual(headers["user-agent"], "shoal-client/%s" % __version__)

    # --- issue 15 item 4: fallback without a stampede --------------------------------------------
    def test_first_run_remembers_the_site_proxies_and_later_runs_keep_them(self):
        self.assertEqual(self.client("-q", "-s", self.server.url())[0], 0)
        record = self.lock + ".site-proxies"
        self.assertEqual(read_bytes(record).decode("ascii").strip(),
                         "http://old-squid.example.org:3128|http://old-squid2.example.org:3128;DIRECT")
        self.assertEqual(os.stat(record).st_mode & 0o777, 0o600)
        # The file now holds Shoal's value; the next run (two caches only) still falls back to the site's.
        code, out, err = self.client("-n", "2", "-s", self.server.url())
        self.assertEqual(code, 0, err)
        self.assertEqual(current_values(read_bytes(self.local)),
                         [("http://squid-b.example.org:3128;http://[2a00:1450:4001::7]:3129;" + SITE).encode("ascii")])
        self.assertNotIn(b"DIRECT", current_values(read_bytes(self.local))[0])

    def test_a_file_without_proxies_gets_no_fallback_and_never_direct(self):
        write_bytes(self.local, b"CVMFS_QUOTA_LIMIT=20000\n")
        self.assertEqual(self.client("-q", "-s", self.server.url())[0], 0)
        self.assertEqual(current_values(read_bytes(self.local)),
                         [b"http://squid-b.example.org:3128;http://[2a00:1450:4001::7]:3129;http://142.104.60.44:8080"])

    def test_configured_fallback_wins_over_the_remembered_one(self):
        for setting, tail in (("DIRECT", ";DIRECT"), ("", ""), ("auto;squid.site.example:3128", ";auto;http://squid.site.example:3128"),
                              ("https://sq.site.example:3130|sq2.site.example", ";https://sq.site.example:3130|http://sq2.site.example")):
            conf = os.path.join(self.dir, "c.conf")
            write_bytes(conf, ("[general]\ndefault_squid_proxy = %s\n" % setting).encode("ascii"))
            code, out, err = self.client("-c", conf, "-d", "-n", "2", "-s", self.server.url())
            self.assertEqual((code, out), (0, "http://squid-b.example.org:3128;http://[2a00:1450:4001::7]:3129%s\n" % tail),
                             (setting, err))

    def test_dump_remembers_nothing(self):
        self.assertEqual(self.client("-d", "-s", self.server.url())[1], EXPECTED + "\n")
        self.assertFalse(os.path.exists(self.lock + ".site-proxies"))

    def test_second_run_leaves_file_untouched(self):
        self.assertEqual(self.client("-s", self.server.url())[0], 0)
        os.utime(self.local, (OLD_MTIME, OLD_MTIME))
        before = read_bytes(self.local)
        code, out, err = self.client("-s", self.server.url())
        self.assertEqual(code, 0)
        self.assertIn("unchanged", err)
        self.assertEqual((read_bytes(self.local), os.stat(self.local).st_mtime), (before, OLD_MTIME))

    def test_quiet_success_prints_nothing(self):
        self.assertEqual(self.client("-q", "-s", self.server.url()), (0, "", ""))

    def test_caches_option_appends_n(self):
        code, out, err = self.client("-n", "2", "--dump", "-s", self.server.url())
        self.assertEqual((code, out), (0, "http://squid-b.example.org:3128;http://[2a00:1450:4001::7]:3129;" + SITE + "\n"))
        self.assertEqual(self.server.requests[0][0], "/nearest/2")

    def test_dump_and_frontier_write_nothing(self):
        self.assertEqual(self.client("--dump", "-s", self.server.url()), (0, EXPECTED + "\n", ""))
        self.assertEqual(self.client("-f", "-s", self.server.url()),
                         (0, "(proxyurl=http://squid-b.example.org:3128)(proxyurl=http://[2a00:1450:4001::7]:3129)"
                             "(proxyurl=http://142.104.60.44:8080)\n", ""))
        self.assertUntouched()

    def test_minijson_gives_the_same_result(self):
        self.assertEqual(self.client("-d", "-s", self.server.url(), loads=minijson.loads),
                         (0, EXPECTED + "\n", ""))
        self.assertEqual(self.client("-s", self.server.url("/html"), loads=minijson.loads)[0], Exit.BAD_RESPONSE)

    def test_invalid_cache_skipped_with_warning(self):
        code, out, err = self.client("-d", "-s", self.server.url("/somebad"))
        self.assertEqual((code, out), (0, "http://ok.org:3128;" + SITE + "\n"))
        self.assertIn("skipping cache #0: invalid host name", err)
        self.assertEqual(self.client("-q", "-d", "-s", self.server.url("/somebad")),
                         (0, "http://ok.org:3128;" + SITE + "\n", ""))

    def test_failures_leave_file_untouched(self):
        self.assertFails(Exit.HTTP_ERROR, self.server.url("/500"), "HTTP 500")
        self.assertFails(Exit.HTTP_ERROR, self.server.url("/missing"), "HTTP 404")
        self.assertFails(Exit.BAD_RESPONSE, self.server.url("/html"), "invalid JSON")
        self.assertFails(Exit.BAD_RESPONSE, self.server.url("/truncated"), "invalid JSON")
        self.assertFails(Exit.BAD_RESPONSE, self.server.url("/list"), "expected a JSON object")
        self.assertFails(Exit.BAD_RESPONSE, self.server.url("/latin1"), "not UTF-8")
        self.assertFails(Exit.NO_CACHES, self.server.url("/empty"), "no caches")
        self.assertFails(Exit.NO_CACHES, self.server.url("/bad"), "no usable cache")
        self.assertFails(Exit.UNREACHABLE, "http://127.0.0.1:%d/nearest" % free_closed_port(), "cannot reach")
        self.assertFails(Exit.UNREACHABLE, "https://127.0.0.1:%d/nearest" % self.server.port, "TLS")

    def test_timeout(self):
        self.assertFails(Exit.TIMEOUT, self.server.url("/slow"), "did not answer in time", "--timeout", "0.5")

    def test_unparseable_cvmfs_file_is_refused(self):
        write_bytes(self.local, b"CVMFS_HTTP_PROXY=\"a;\nb\"\n")
        code, out, err = self.client("-s", self.server.url())
        self.assertEqual(code, Exit.FILE_ERROR)
        self.assertIn("continued on the next line", err)
        self.assertEqual(read_bytes(self.local), b"CVMFS_HTTP_PROXY=\"a;\nb\"\n")

    def test_unwritable_directory(self):
        code, out, err = self.client("-s", self.server.url(), "--cvmfs-config", os.path.join(self.dir, "no", "x"))
        self.assertEqual(code, Exit.FILE_ERROR)
        self.assertIn("cannot update", err)

    def test_config_file_and_overrides(self):
        conf = os.path.join(self.dir, "shoal_client.conf")
        write_bytes(conf, ("[general]\nshoal_server_url = %s\ndefault_squid_proxy = http://site:3128;DIRECT\n"
                           "caches = 2\n" % self.server.url()).encode("ascii"))
        code, out, err = run_main(["-c", conf, "-d"])
        self.assertEqual(out, "http://squid-b.example.org:3128;http://[2a00:1450:4001::7]:3129;http://site:3128;DIRECT\n")
        code, out, err = run_main(["-c", conf, "-d", "-s", self.server.url("/empty")])
        self.assertEqual(code, Exit.NO_CACHES)
        self.assertEqual(self.server.requests[-1][0], "/empty/2")

    def test_config_found_by_search(self):
        conf = os.path.join(self.dir, "found.conf")
        write_bytes(conf, ("[general]\nshoal_server_url = %s\ncvmfs_config = %s\nlock_file = %s\n"
                           % (self.server.url(), self.local, self.lock)).encode("ascii"))
        self.assertEqual(run_main(["-d"], search_paths=(os.path.join(self.dir, "nope"), conf))[1],
                         EXPECTED + "\n")

    def test_bad_config_exits_2(self):
        conf = os.path.join(self.dir, "bad.conf")
        write_bytes(conf, b"[general]\ntimeout = never\n")
        code, out, err = run_main(["-c", conf, "-d"])
        self.assertEqual(code, 2)
        self.assertIn("[general] timeout", err)

    def test_reload(self):
        calls = []
        code, _, err = self.client("--reload", "-s", self.server.url(), which=lambda name: "/bin/" + name,
                                   run=lambda argv: calls.append(argv) or 0)
        self.assertEqual((code, calls), (0, [["/bin/cvmfs_config", "reload"]]))
        code, _, err = self.client("--reload", "-s", self.server.url(), which=lambda name: "/bin/" + name,
                                   run=lambda argv: calls.append(argv) or 0)
        self.assertEqual((code, len(calls)), (0, 1))  # unchanged: no reload
        write_bytes(self.local, REALISTIC_LOCAL)
        code, _, err = self.client("--reload", "-s", self.server.url(), which=lambda name: "/bin/" + name,
                                   run=lambda argv: 3)
        self.assertEqual(code, Exit.RELOAD_FAILED)
        self.assertIn("status 3", err)
        write_bytes(self.local, REALISTIC_LOCAL)
        code, _, err = self.client("--reload", "-s", self.server.url(), which=lambda name: None)
        self.assertEqual(code, 0)
        self.assertIn("cvmfs_config not found", err)

    def test_usage(self):
        code, out, err = run_main(["--version"])
        self.assertEqual((code, out), (0, "shoal-client %s\n" % __version__))
        code, out, err = run_main(["--help"])
        self.assertEqual(code, 0)
        for number, name, meaning in EXIT_CODES:
            self.assertIn(meaning, out)
        for args in (["-n", "0"], ["-n", "x"], ["-s", "ftp://x/"], ["--nope"], ["--caches"],
                     ["--timeout", "0"], ["extra"]):
            code, out, err = run_main(args)
            self.assertEqual(code, Exit.USAGE, args)
            self.assertIn("shoal-client: error:", err)

    def test_unknown_test_hook_is_refused(self):
        code, out, err = self.client("-s", self.server.url(), environ={"SHOAL_CLIENT_TEST_HOOK": "nope"})
        self.assertEqual(code, Exit.USAGE)
        self.assertUntouched()


if __name__ == "__main__":
    unittest.main()
