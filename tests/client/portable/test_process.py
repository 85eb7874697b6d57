"""The client as a separate process: stdlib only, json fallback, ``python -m``, crash before rename."""
import json
import os
import signal
import subprocess
import sys
import unittest

from _helpers import (CLIENT_SRC, REALISTIC_LOCAL, SITE_PROXIES, FakeServer, TempDir, nearest_doc, read_bytes, record,
                      run_client, write_bytes)
from shoal_client import __version__
from shoal_client.cvmfsconf import TEMP_SUFFIX, rewrite

DOC = nearest_doc(record("squid-a.example.org", 3128), record("2a00:1450:4001::9", 3128))
VALUE = "http://squid-a.example.org:3128;http://[2a00:1450:4001::9]:3128;" + SITE_PROXIES

# Runs under `python -S -E` (no site-packages, no PYTHON* variables): import and run the client, then
# report every loaded module that lives outside the standard library and outside shoal_client.
STDLIB_ONLY_SCRIPT = r"""
import os, sys, sysconfig
src = sys.argv[1]
sys.path.insert(0, src)
from shoal_client import _compat, config, cvmfsconf, main, minijson, proxies
code = main.main(sys.argv[2:])
stdlib = [os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")]
own = os.path.realpath(os.path.join(src, "shoal_client"))
foreign = []
for name, module in sorted(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        continue  # built into the interpreter, or a failed optional import
    path = os.path.realpath(path)
    inside = [d for d in stdlib + [own] if path.startswith(d + os.sep)]
    if not inside or "site-packages" in path or "dist-packages" in path:
        foreign.append("%s=%s" % (name, path))
sys.stdout.write("FOREIGN:%s\n" % ",".join(foreign))
sys.stdout.write("MODULES:%d\n" % len(sys.modules))
sys.exit(code)
"""

BLOCK_JSON_SCRIPT = r"""
import sys
sys.modules["json"] = None  # as on an interpreter without the json module
sys.path.insert(0, sys.argv[1])
from shoal_client import _compat
assert _compat.JSON_PARSER == "minijson", _compat.JSON_PARSER
from shoal_client.main import main
sys.exit(main(sys.argv[2:]))
"""


class ProcessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = FakeServer({"/nearest": (200, json.dumps(DOC), 0), "/html": (200, "<p>", 0)}).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)

    def setUp(self):
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.local = os.path.join(self.dir, "default.local")
        self.conf = os.path.join(self.dir, "shoal_client.conf")
        write_bytes(self.local, REALISTIC_LOCAL)
        os.mkdir(os.path.join(self.dir, "run"), 0o700)
        write_bytes(self.conf, ("[general]\nshoal_server_url = %s\ncvmfs_config = %s\nlock_file = %s\n"
                                % (self.server.url(), self.local, os.path.join(self.dir, "run", "shoal-client.lock"))
                                ).encode("utf-8"))

    def tearDown(self):
        self.tmp.__exit__(None, None, None)

    def run_script(self, script, *args):
        proc = subprocess.Popen([sys.executable, "-B", "-S", "-E", "-c", script, CLIENT_SRC] + list(args),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.dir)
        out, err = proc.communicate()
        return proc.returncode, out.decode("utf-8"), err.decode("utf-8")

    def test_imports_only_the_standard_library(self):
        code, out, err = self.run_script(STDLIB_ONLY_SCRIPT, "-c", self.conf)
        self.assertEqual(code, 0, err)
        self.assertIn("FOREIGN:\n", out)
        self.assertEqual(read_bytes(self.local), rewrite(REALISTIC_LOCAL, VALUE))

    def test_runs_without_the_json_module(self):
        code, out, err = self.run_script(BLOCK_JSON_SCRIPT, "-c", self.conf)
        self.assertEqual(code, 0, err)
        self.assertEqual(read_bytes(self.local), rewrite(REALISTIC_LOCAL, VALUE))
        code, out, err = self.run_script(BLOCK_JSON_SCRIPT, "-c", self.conf, "-s", self.server.url("/html"))
        self.assertEqual(code, 6, err)
        self.assertIn("invalid JSON: Expecting value: line 1 column 1 (char 0)", err)

    def test_python_m_dump_and_version(self):
        self.assertEqual(run_client(["-c", self.conf, "--dump"]), (0, VALUE + "\n", ""))
        self.assertEqual(run_client(["--version"])[:2], (0, "shoal-client %s\n" % __version__))
        self.assertEqual(read_bytes(self.local), REALISTIC_LOCAL)

    def test_killed_between_temp_write_and_rename(self):
        os.utime(self.local, (1000000000, 1000000000))
        code, out, err = run_client(["-c", self.conf], env={"SHOAL_CLIENT_TEST_HOOK": "kill-before-rename"})
        self.assertEqual(code, -signal.SIGKILL, err)
        self.assertEqual(read_bytes(self.local), REALISTIC_LOCAL)
        self.assertEqual(os.stat(self.local).st_mtime, 1000000000)
        temps = [n for n in os.listdir(self.dir) if n.endswith(TEMP_SUFFIX)]
        self.assertEqual(len(temps), 1)  # proof that it died after writing the complete temp file
        self.assertEqual(read_bytes(os.path.join(self.dir, temps[0])), rewrite(REALISTIC_LOCAL, VALUE))
        code, out, err = run_client(["-c", self.conf, "-q"])
        self.assertEqual((code, out, err), (0, "", ""))
        self.assertEqual(read_bytes(self.local), rewrite(REALISTIC_LOCAL, VALUE))
        self.assertEqual(sorted(os.listdir(self.dir)), ["default.local", "run", "shoal_client.conf"])


if __name__ == "__main__":
    unittest.main()
