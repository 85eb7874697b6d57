"""Reading shoal_client.conf: defaults, search order, errors naming file and key."""
import os
import unittest

from _helpers import CLIENT_SRC, TempDir, raises_with, write_bytes
from shoal_client.config import ClientConfig, ConfigError, find_config, load_config


class ConfigTest(unittest.TestCase):
    def test_defaults(self):
        config = load_config(None)
        self.assertEqual(config.shoal_server_url, "http://localhost:8080/nearest")
        self.assertEqual(config.cvmfs_config, "/etc/cvmfs/default.local")
        self.assertEqual(config.default_squid_proxy, None)   # the site's remembered proxies, no DIRECT
        self.assertEqual(config.default_proxy_groups(), None)
        self.assertEqual(config.timeout, 10.0)
        self.assertEqual((config.caches, config.ca_file, config.reload), (None, "", False))

    def test_sample_config_loads_and_matches_defaults(self):
        sample = load_config(os.path.join(CLIENT_SRC, "conf", "shoal_client.conf"))
        defaults = ClientConfig()
        for name in ClientConfig.FIELDS:
            self.assertEqual(getattr(sample, name), getattr(defaults, name), name)

    def test_values(self):
        with TempDir() as tmp:
            path = os.path.join(tmp, "c.conf")
            write_bytes(path, b"[general]\nshoal_server_url = https://shoal.example.org/nearest?x=%20\n"
                              b"cvmfs_config = /tmp/x.local\ndefault_squid_proxy = http://site:3128;DIRECT\n"
                              b"timeout = 2.5\ncaches = 4\nca_file = /etc/pki/ca.pem\nreload = yes\n"
                              b"lock_timeout = 5\n")
            config = load_config(path)
        self.assertEqual(config.shoal_server_url, "https://shoal.example.org/nearest?x=%20")
        self.assertEqual((config.cvmfs_config, config.default_squid_proxy, config.timeout, config.caches),
                         ("/tmp/x.local", "http://site:3128;DIRECT", 2.5, 4))
        self.assertEqual((config.ca_file, config.reload, config.lock_timeout, config.path),
                         ("/etc/pki/ca.pem", True, 5.0, path))

    def test_errors_name_file_and_key(self):
        with TempDir() as tmp:
            path = os.path.join(tmp, "c.conf")
            for body, key in ((b"[general]\ntimeout = soon\n", "timeout"), (b"[general]\ntimeout = -1\n", "timeout"),
                              (b"[general]\ncaches = 0\n", "caches"), (b"[general]\nreload = maybe\n", "reload"),
                              (b"[general]\nshoal_server_url = ftp://x/\n", "shoal_server_url"),
                              (b"[general]\ndefault_squid_proxy = squid:0\n", "default_squid_proxy"),
                              (b"[general]\ncvmfs_confg = /x\n", "cvmfs_confg")):
                write_bytes(path, body)
                err = raises_with(self, ConfigError, "%s [general] %s" % (path, key), load_config, path)
                self.assertEqual(err.exit_code, 2)
            write_bytes(path, b"[other]\n")
            raises_with(self, ConfigError, "no [general] section", load_config, path)
            write_bytes(path, b"no section\n")
            raises_with(self, ConfigError, "not a valid INI file", load_config, path)
            raises_with(self, ConfigError, "cannot read", load_config, os.path.join(tmp, "missing.conf"))

    def test_search_order(self):
        with TempDir() as tmp:
            etc, home = os.path.join(tmp, "etc.conf"), os.path.join(tmp, "home")
            os.makedirs(os.path.join(home, ".shoal"))
            user = os.path.join(home, ".shoal", "shoal_client.conf")
            search = (etc, "~/.shoal/shoal_client.conf")
            self.assertIsNone(find_config(search, home=home))
            write_bytes(user, b"[general]\n")
            self.assertEqual(find_config(search, home=home), user)
            write_bytes(etc, b"[general]\n")
            self.assertEqual(find_config(search, home=home), etc)

    def test_replace_ignores_none(self):
        config = ClientConfig(timeout=3.0).replace(timeout=None, caches=7)
        self.assertEqual((config.timeout, config.caches), (3.0, 7))


if __name__ == "__main__":
    unittest.main()
