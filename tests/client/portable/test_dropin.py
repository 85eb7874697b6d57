"""Upstream shoal-client's flags and config keys, and the limits of issue 14: deadline, N caches, lock."""
import json
import os
import subprocess
import sys
import time
import unittest

from _helpers import (forget_root_site_proxies, REALISTIC_LOCAL, SITE_PROXIES, DripServer, FakeServer, TempDir, nearest_doc, read_bytes, record, run_main,
                      write_bytes)
from shoal_client.cvmfsconf import current_values
from shoal_client.main import Exit

DOC = nearest_doc(record("squid-b.example.org", 3128), record("squid_05.example.org", 3129),
                  record(None, 8080, public_ip="142.104.60.44"))
THREE = "http://squid-b.example.org:3128;http://squid_05.example.org:3129;http://142.104.60.44:8080"
MANY = nearest_doc(*[record("s%04d.example.org" % i) for i in range(1000)])


def body_response(doc):
    body = json.dumps(doc).encode("ascii")
    return (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


class DropInTest(unittest.TestCase):
    def setUp(self):
        forget_root_site_proxies()
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.local = os.path.join(self.dir, "default.local")
        self.lock = os.path.join(self.dir, "shoal-client.lock")
        write_bytes(self.local, REALISTIC_LOCAL)
        routes = {"/nearest": (200, json.dumps(DOC), 0), "/nearest/2": (200, json.dumps(nearest_doc(DOC["0"])), 0),
                  "/nearest/7": (200, json.dumps(DOC), 0), "/many": (200, json.dumps(MANY), 0),
                  "/many/32": (200, json.dumps(MANY), 0), "/many/3": (200, json.dumps(MANY), 0),
                  "/nearestconditions": (200, json.dumps(nearest_doc(DOC["1"])), 0),
                  "/nearestcvmfs": (200, json.dumps(nearest_doc(DOC["2"])), 0)}
        self.server = FakeServer(routes).__enter__()

    def tearDown(self):
        forget_root_site_proxies()
        self.server.__exit__(None, None, None)
        self.tmp.__exit__(None, None, None)

    def client(self, *args, **env):
        return run_main(["--cvmfs-config", self.local, "--lock-file", self.lock] + list(args), **env)

    def conf(self, text):
        path = os.path.join(self.dir, "shoal_client.conf")
        write_bytes(path, text.encode("utf-8"))
        return path

    # --- flags of upstream 1.0.4 and HEAD ------------------------------------------------------------
    def test_upstream_flags_are_accepted(self):
        url = self.server.url()
        self.assertEqual(self.client("-k", "-d", "-s", url), (0, THREE + ";" + SITE_PROXIES + "\n", ""))
        self.assertEqual(self.client("--skip-broadcast", "--force-server", "-o", "--dump", "--server", url),
                         (0, THREE + ";" + SITE_PROXIES + "\n", ""))
        for flag in (["--squids", "2"], ["--squids=2"], ["-n2"], ["--caches", "2"]):
            self.assertEqual(self.client("-d", "-s", url, *flag), (0, "http://squid-b.example.org:3128;" + SITE_PROXIES + "\n", ""),
                             flag)
            self.assertEqual(self.server.requests[-1][0], "/nearest/2")

    def test_bare_host_for_server_means_its_nearest(self):
        code, out, err = self.client("-d", "-s", "127.0.0.1:%d" % self.server.port)
        self.assertEqual((code, out), (0, THREE + ";" + SITE_PROXIES + "\n"), err)
        self.assertEqual(self.server.requests[-1][0], "/nearest")

    def test_dump_and_frontier_together_print_the_frontier_string(self):
        code, out, err = self.client("-d", "-f", "-s", self.server.url(),
                                     environ={"FRONTIER_SERVER": "(serverurl=http://f.example.org:8000/atlr)"})
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, "(proxyurl=http://squid-b.example.org:3128)(proxyurl=http://squid_05.example.org:3129)"
                              "(proxyurl=http://142.104.60.44:8080)\n")
        self.assertEqual(read_bytes(self.local), REALISTIC_LOCAL)

    def test_frontier_merges_into_frontier_server_like_upstream(self):
        code, out, err = self.client("-f", "-s", self.server.url("/nearestconditions"),
                                     environ={"FRONTIER_SERVER": "(serverurl=http://PresetServer.ca:3128)"})
        self.assertEqual((code, out), (0, "(serverurl=http://PresetServer.ca:3128)"
                                          "(proxyurl=http://squid_05.example.org:3129)\n"), err)

    # --- config keys of upstream HEAD (cvmfs_url, conditions_url, default_cache_proxy) -----------------
    def test_head_config_keys(self):
        conf = self.conf("[general]\ncvmfs_url = %s\nconditions_url = %s\n"
                         "default_cache_proxy = http://site.example.org:3128;DIRECT\n"
                         % (self.server.url("/nearestcvmfs"), self.server.url("/nearestconditions")))
        code, out, err = self.client("-c", conf, "-d")
        self.assertEqual((code, out), (0, "http://142.104.60.44:8080;http://site.example.org:3128;DIRECT\n"))
        warnings = err.splitlines()
        self.assertEqual(len(warnings), 2, err)
        self.assertIn("cvmfs_url is the name upstream shoal-client HEAD (2025) uses; read as shoal_server_url",
                      warnings[0])
        self.assertIn("default_cache_proxy", warnings[1])
        self.assertIn("default_squid_proxy", warnings[1])
        code, out, err = self.client("-c", conf, "-f", "-q")
        self.assertEqual((code, out, err), (0, "(proxyurl=http://squid_05.example.org:3129)"
                                               "(proxyurl=http://site.example.org:3128)\n", ""))
        self.assertEqual(self.server.requests[-1][0], "/nearestconditions")
        code, out, err = self.client("-c", conf, "-f", "-q", "-s", self.server.url())  # -s wins, as documented
        self.assertEqual(self.server.requests[-1][0], "/nearest")

    def test_upstream_1_0_4_sample_config(self):
        conf = self.conf("#\n# A sample configuration file for shoal client.\n#\n\n[general]\n\n"
                         "# URL of shoal server rest api to find nearest squid.\n"
                         "#shoal_server_url = http://localhost:8080/nearestverified\n"
                         "shoal_server_url = %s\n\n"
                         "#default_squid_proxy = http://squid.example.com:3128;http://squid.example.org:3128;DIRECT\n"
                         % self.server.url())
        self.assertEqual(self.client("-c", conf, "-d"), (0, THREE + ";" + SITE_PROXIES + "\n", ""))

    def test_misspelt_key_is_still_an_error(self):
        for text in ("[general]\ndefault_cache_proxies = DIRECT\n", "[general]\ncvmfs_urls = http://x/\n"):
            code, out, err = self.client("-c", self.conf(text), "-d")
            self.assertEqual(code, Exit.USAGE, text)
            self.assertIn("unknown setting", err)

    def test_two_names_for_one_setting_must_agree(self):
        code, out, err = self.client("-c", self.conf("[general]\nshoal_server_url = http://a/nearest\n"
                                                     "cvmfs_url = http://b/nearest\n"), "-d")
        self.assertEqual(code, Exit.USAGE)
        self.assertIn("contradicts shoal_server_url", err)
        conf = self.conf("[general]\nshoal_server_url = %s\ncvmfs_url = %s\n" % (self.server.url(), self.server.url()))
        self.assertEqual(self.client("-c", conf, "-d", "-q"), (0, THREE + ";" + SITE_PROXIES + "\n", ""))

    # --- issue 14: at most N caches, an overall deadline --------------------------------------------
    # These use only options the client had before (so they fail on it for what they test, not for an
    # unknown flag): -d writes nothing and takes no lock.
    def test_a_thousand_caches_give_at_most_five_or_the_n_asked(self):
        code, out, err = self.client("-d", "-s", self.server.url("/many"))
        self.assertEqual(code, 0, err)
        self.assertEqual(out.strip().split(";"), ["http://s%04d.example.org:3128" % i for i in range(5)] + [SITE_PROXIES])
        self.assertLess(len(out), 250)  # was 28 KB: all 1,000 written
        code, out, err = self.client("-s", self.server.url("/many"), "-q")
        value = current_values(read_bytes(self.local))[0].decode("ascii")
        self.assertEqual(value.split(";"), ["http://s%04d.example.org:3128" % i for i in range(5)] + [SITE_PROXIES])
        self.assertEqual(self.client("-d", "-n", "3", "-s", self.server.url("/many"))[1].count(";"), 3)
        code, out, err = self.client("-d", "-n", "1000", "-s", self.server.url("/many"))
        self.assertEqual((code, out.count(";")), (0, 32))
        self.assertIn("asked for 1000 caches; writing at most 32", err)
        self.assertEqual(self.server.requests[-1][0], "/many/32")

    def test_dripping_server_is_stopped_by_the_overall_timeout(self):
        # issue 14: `timeout = 3` ran for 30 s and more against a server sending a byte at a time.
        for head in (0, len(body_response(DOC)) - 60):  # drip the status line, or only the body
            with DripServer(body_response(DOC), interval=0.2, head=head) as drip:
                start = time.time()
                code, out, err = run_main(["-d", "-s", drip.url(), "--timeout", "1.5"])
                elapsed = time.time() - start
            self.assertEqual(code, Exit.TIMEOUT, err)
            self.assertIn("did not answer in time", err)
            self.assertTrue(1.4 < elapsed < 3.0, elapsed)
        with DripServer(body_response(DOC), interval=0.2) as drip:  # and a run that would write
            code, out, err = self.client("-s", drip.url(), "--timeout", "1")
        self.assertEqual(code, Exit.TIMEOUT, err)
        self.assertEqual(read_bytes(self.local), REALISTIC_LOCAL)

    def test_a_slow_but_complete_answer_within_the_timeout_is_used(self):
        with DripServer(body_response(DOC), interval=0.002) as drip:
            code, out, err = self.client("-d", "-s", drip.url(), "--timeout", "10")
        self.assertEqual((code, out), (0, THREE + ";" + SITE_PROXIES + "\n"), err)

    @unittest.skipUnless(os.geteuid() == 0, "needs root (the default lock, another user's flock and links)")
    def test_default_lock_is_not_the_config_directory(self):
        # issue 14: an unprivileged `flock -x /etc/cvmfs` made root's client exit 9 while it was held.
        conf = self.conf("[general]\nlock_timeout = 2\n")
        os.chmod(self.dir, 0o755)
        code = ("import fcntl, os, sys, time\nos.setgid(65534); os.setuid(65534)\n"
                "fd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                "sys.stdout.write('locked\\n'); sys.stdout.flush(); time.sleep(30)\n")
        holder = subprocess.Popen([sys.executable, "-c", code, self.dir], stdout=subprocess.PIPE)
        try:
            self.assertEqual(holder.stdout.readline().strip(), b"locked")
            result = run_main(["-c", conf, "--cvmfs-config", self.local, "-s", self.server.url(), "-q"])
        finally:
            holder.kill()
            holder.wait()
            holder.stdout.close()
        self.assertEqual(result, (0, "", ""))
        self.assertEqual(current_values(read_bytes(self.local)), [(THREE + ";" + SITE_PROXIES).encode("ascii")])

    @unittest.skipUnless(os.geteuid() == 0, "needs root (links owned by another user)")
    def test_link_planted_in_a_sticky_directory_is_not_followed(self):
        # issue 14: `cvmfs_config` through a symlink planted in a world-writable directory was followed.
        shared = os.path.join(self.dir, "tmp")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)
        victim = os.path.join(self.dir, "root-only")
        write_bytes(victim, b"secret\n")
        os.chmod(victim, 0o600)
        link = os.path.join(shared, "default.local")
        os.symlink(victim, link)
        os.lchown(link, 65534, 65534)
        conf = self.conf("[general]\nlock_timeout = 2\ncvmfs_config = %s\n" % link)
        code, out, err = run_main(["-c", conf, "-s", self.server.url()])
        self.assertEqual(code, Exit.FILE_ERROR, err)
        self.assertIn("protected_symlinks", err)
        self.assertEqual(read_bytes(victim), b"secret\n")

    # --- the lock is a private file, not the configuration directory -------------------------------
    def test_default_lock_file(self):
        home = os.path.join(self.dir, "home")
        os.mkdir(home)
        code, out, err = run_main(["--cvmfs-config", self.local, "-s", self.server.url(), "-q"],
                                  environ={"HOME": home}, geteuid=lambda: 1000)
        self.assertEqual((code, err), (0, ""))
        lock = os.path.join(home, ".shoal", "shoal-client.lock")
        self.assertTrue(os.path.isfile(lock))
        self.assertEqual(oct(os.stat(os.path.dirname(lock)).st_mode & 0o777), oct(0o700))
        self.assertEqual(oct(os.stat(lock).st_mode & 0o777), oct(0o600))

    def test_warns_when_a_later_cvmfs_file_sets_the_proxy_again(self):
        for sub, name, text in (("domain.d", "cern.ch.local", b"CVMFS_HTTP_PROXY=DIRECT\n"),
                                ("config.d", "atlas.cern.ch.conf", b"X=1\nexport CVMFS_HTTP_PROXY='http://a:1'\n"),
                                ("config.d", "ignored.txt", b"CVMFS_HTTP_PROXY=DIRECT\n"),
                                ("domain.d", "fine.conf", b"# CVMFS_HTTP_PROXY=DIRECT\nNOTE='CVMFS_HTTP_PROXY=x'\n")):
            os.makedirs(os.path.join(self.dir, sub)) if not os.path.isdir(os.path.join(self.dir, sub)) else None
            write_bytes(os.path.join(self.dir, sub, name), text)
        code, out, err = self.client("-s", self.server.url())
        self.assertEqual(code, 0, err)
        warnings = [l for l in err.splitlines() if "sets CVMFS_HTTP_PROXY too" in l]
        self.assertEqual(len(warnings), 2, err)
        self.assertIn(os.path.join(self.dir, "domain.d", "cern.ch.local") + " line 1", warnings[0])
        self.assertIn(os.path.join(self.dir, "config.d", "atlas.cern.ch.conf") + " line 2", warnings[1])
        self.assertEqual(self.client("-s", self.server.url(), "-q"), (0, "", ""))

    def test_talk_sets_the_proxies_of_mounted_repositories_every_run(self):
        calls = []
        run = lambda argv: calls.append(argv) or 0  # noqa: E731
        which = lambda name: "/usr/bin/" + name  # noqa: E731
        for _ in range(2):  # the second run: file unchanged, cvmfs_talk still told (a remount may have reset it)
            code, out, err = self.client("--talk", "-q", "-s", self.server.url(), which=which, run=run)
            self.assertEqual((code, err), (0, ""))
        self.assertEqual(calls, [["/usr/bin/cvmfs_talk", "proxy", "set", THREE + ";" + SITE_PROXIES]] * 2)
        code, out, err = self.client("-c", self.conf("[general]\ncvmfs_talk = yes\n"), "-s", self.server.url(),
                                     which=which, run=lambda argv: 1)
        self.assertEqual(code, Exit.RELOAD_FAILED)
        self.assertIn("proxy set exited with status 1", err)
        code, out, err = self.client("--talk", "-s", self.server.url(), which=lambda name: None)
        self.assertEqual(code, 0)
        self.assertIn("cvmfs_talk not found", err)

    def test_failed_reload_is_retried_until_it_succeeds(self):
        # issue 15: a failed `cvmfs_config reload` was never retried: the next run said "unchanged".
        calls, statuses = [], [5, 7, 0]
        run = lambda argv: calls.append(argv) or statuses.pop(0)  # noqa: E731
        which = lambda name: "/usr/bin/" + name  # noqa: E731
        code, out, err = self.client("--reload", "-s", self.server.url(), which=which, run=run)
        self.assertEqual(code, Exit.RELOAD_FAILED)
        self.assertTrue(os.path.exists(self.lock + ".reload-pending"))
        code, out, err = self.client("--reload", "-s", self.server.url(), which=which, run=run)  # file unchanged
        self.assertEqual(code, Exit.RELOAD_FAILED)
        self.assertIn("the last reload failed; reloading again", err)
        code, out, err = self.client("--reload", "-q", "-s", self.server.url(), which=which, run=run)
        self.assertEqual((code, err), (0, ""))
        self.assertFalse(os.path.exists(self.lock + ".reload-pending"))
        self.assertEqual(self.client("--reload", "-q", "-s", self.server.url(), which=which, run=run)[0], 0)
        self.assertEqual(calls, [["/usr/bin/cvmfs_config", "reload"]] * 3)  # the fourth run had nothing owed

    def test_quiet_keeps_reload_output_out_of_cron_mail(self):
        stub = os.path.join(self.dir, "cvmfs_config")
        write_bytes(stub, b"#!/bin/sh\necho 'Reloading CVMFS configuration'\necho 'atlas.cern.ch: OK' >&2\nexit $RC\n")
        os.chmod(stub, 0o755)
        os.environ["RC"] = "0"
        try:
            code, out, err = self.client("--reload", "-q", "-s", self.server.url(), which=lambda name: stub)
            self.assertEqual((code, out, err), (0, "", ""))
            write_bytes(self.local, REALISTIC_LOCAL)
            code, out, err = self.client("--reload", "-s", self.server.url(), which=lambda name: stub)
            self.assertIn("cvmfs_config: Reloading CVMFS configuration", err)
            self.assertIn("cvmfs_config: atlas.cern.ch: OK", err)
            self.assertEqual(out, "")
            write_bytes(self.local, REALISTIC_LOCAL)
            os.environ["RC"] = "3"
            code, out, err = self.client("--reload", "-q", "-s", self.server.url(), which=lambda name: stub)
            self.assertEqual(code, Exit.RELOAD_FAILED)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertIn("exited with status 3 (Reloading CVMFS configuration / atlas.cern.ch: OK)", err)
        finally:
            del os.environ["RC"]

    def test_lock_file_in_a_missing_directory_names_the_lock(self):
        code, out, err = run_main(["--cvmfs-config", self.local, "--lock-file", os.path.join(self.dir, "no", "l"),
                                   "-s", self.server.url()])
        self.assertEqual(code, Exit.FILE_ERROR)
        self.assertIn("cannot open the lock file", err)

    def test_planted_lock_link_is_refused_with_file_error(self):
        os.symlink(self.local, self.lock)
        code, out, err = self.client("-s", self.server.url())
        self.assertEqual(code, Exit.FILE_ERROR)
        self.assertIn("symbolic link", err)
        self.assertEqual(read_bytes(self.local), REALISTIC_LOCAL)


if __name__ == "__main__":
    unittest.main()
