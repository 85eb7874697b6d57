"""Issue 15 item 3: the edit is right for every file CVMFS accepts, judged by /bin/sh itself.

CVMFS feeds a config file to /bin/sh and asks the shell for every parameter the file assigns
(cvmfs/options.cc: SanitizeParameterAssignment picks the names, ``echo $NAME`` the values).
For real-world and generated files, this sources the file before and after ``rewrite`` with
/bin/sh and checks that CVMFS_HTTP_PROXY is exactly the value written and that every other
parameter CVMFS would read is unchanged -- or that ``rewrite`` refused with ConfigFileError,
where the generator planted something no edit can make safe. Runs on every interpreter of the
portable suite (2.7, 3.6 ... 3.13), with a seeded ``random`` (no hypothesis on 2.7).
"""
import os
import random
import subprocess
import unittest

from _helpers import REALISTIC_LOCAL, TempDir, write_bytes
from shoal_client.cvmfsconf import ConfigFileError, rewrite

SH = "/bin/sh"
KEY = b"CVMFS_HTTP_PROXY"
VALUE = "http://squid_05.example.org:3128|http://[2a00:1450:4001::1]:3128;http://s2.example.org:3129;DIRECT"
GENERATED = int(os.environ.get("SHOAL_SH_CORPUS_FILES", "250"))
HERE = os.path.dirname(os.path.abspath(__file__))


def cvmfs_parameters(content):
    """The names CVMFS asks the shell for: SanitizeParameterAssignment of each line (options.cc)."""
    names = []
    for line in content.split(b"\n"):
        line = line.split(b"#", 1)[0].strip()
        tokens = line.split(b"=")
        if len(tokens) < 2:
            continue
        name = tokens[0].strip()
        for prefix in (b"readonly ", b"export ", b"eval "):
            if name.startswith(prefix):
                name = name[len(prefix):].strip()
                break
        if name and b" " not in name and name not in names:
            names.append(name)
    return names


def sh_values(directory, content, names):
    """{name: value} as /bin/sh has them after reading ``content`` (an aborted shell gives "")."""
    path = os.path.join(directory, "sourced.local")
    write_bytes(path, content)
    safe = [n for n in names if n.replace(b"_", b"").isalnum() and not n[:1].isdigit()]
    script = '. "$1" >/dev/null 2>&1 </dev/null\n' + "".join(
        "printf '%%s\\0' \"${%s-}\"\n" % n.decode("ascii") for n in safe)
    proc = subprocess.Popen([SH, "-c", script, "sh", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=directory)
    out, _ = proc.communicate()
    values = out.split(b"\0")[:-1]
    if len(values) != len(safe):  # the shell aborted (e.g. a readonly variable assigned again)
        values = [b""] * len(safe)
    return dict(zip(safe, values))


# --- the generator ---------------------------------------------------------------------------------
OTHER = [
    b"CVMFS_REPOSITORIES=atlas.cern.ch,cms.cern.ch",
    b'CVMFS_QUOTA_LIMIT="20000"',
    b"CVMFS_CACHE_BASE='/var/lib/cvmfs'",
    b"export CVMFS_KEYS_DIR=/etc/cvmfs/keys",
    b"readonly CVMFS_CLIENT_PROFILE=single",
    b"   CVMFS_DEBUGLOG=/tmp/cvmfs.log   # debugging",
    b'CVMFS_SERVER_URL="http://s1.example.org/cvmfs/@fqrn@;http://s2.example.org/cvmfs/@fqrn@"',
    b"SITE_SQUID=http://site-squid.example.org:3128",
    b'CVMFS_ALIEN_CACHE="${CVMFS_CACHE_BASE}/alien"',
    b"CVMFS_USE_GEOAPI=yes",
    b"# CVMFS_HTTP_PROXY=\"http://commented.example.org:3128;DIRECT\"",
    b"",
    b'NOTES="a multi-line note\nCVMFS_HTTP_PROXY=http://inside-a-string.example.org:1\nend of note"',
    b"cat >/dev/null <<'EOF'\nCVMFS_HTTP_PROXY=http://inside-a-heredoc.example.org:1\nEOF",
    b'if [ -n "$SITE_SQUID" ]; then\n  CVMFS_NFILES=65536\nelse\n  CVMFS_NFILES=32768\nfi',
    b"case \"$CVMFS_CLIENT_PROFILE\" in\n  single) CVMFS_SHARED_CACHE=no ;;\n  *) CVMFS_SHARED_CACHE=yes ;;\nesac",
    b"setup_site() {\n  CVMFS_MEMCACHE_SIZE=64\n}",
    b"CVMFS_IPFAMILY_PREFER=4; CVMFS_TIMEOUT=5",
    b"CVMFS_MAX_RETRIES=3 \\\n  CVMFS_BACKOFF_INIT=2",
    b"echo CVMFS_HTTP_PROXY=not-an-assignment >/dev/null",
]
PROXY = [
    b"CVMFS_HTTP_PROXY=DIRECT",
    b'CVMFS_HTTP_PROXY="http://old.example.org:3128;DIRECT"',
    b"CVMFS_HTTP_PROXY='http://a.example.org:3128|http://b.example.org:3128;DIRECT'   # site squids",
    b"export CVMFS_HTTP_PROXY=\"http://old.example.org:3128\"",
    b'  CVMFS_HTTP_PROXY="$SITE_SQUID;DIRECT"',
    b"CVMFS_HTTP_PROXY=$SITE_SQUID",
    b"CVMFS_HTTP_PROXY=${SITE_SQUID}",
    b"CVMFS_HTTP_PROXY=",
    b"CVMFS_HTTP_PROXY=http://unquoted.example.org:3128;DIRECT",
    b"eval CVMFS_HTTP_PROXY=\"'http://evaled.example.org:3128;DIRECT'\"",
    b'CVMFS_HTTP_PROXY="a"\'b\'',
]
READONLY_PROXY = b'readonly CVMFS_HTTP_PROXY="http://ro.example.org:3128;DIRECT"'
UNSAFE = [  # no edit is safe: each must be refused, the file left alone
    b'if [ -f /etc/site ]; then\n  CVMFS_HTTP_PROXY="http://a.example.org:3128"\nelse\n  CVMFS_HTTP_PROXY=DIRECT\nfi',
    b"CVMFS_HTTP_PROXY=$(cat /etc/site-proxy 2>/dev/null)",
    b"CVMFS_HTTP_PROXY=`cat /etc/site-proxy 2>/dev/null`",
    b"true && CVMFS_HTTP_PROXY=DIRECT",
    b'CVMFS_HTTP_PROXY="http://a.example.org:3128;\nDIRECT"',
    b'eval "CVMFS_HTTP_PROXY=DIRECT"',
    b"site_proxy() {\n  CVMFS_HTTP_PROXY=DIRECT\n}",
    b"readonly CVMFS_HTTP_PROXY=DIRECT\nCVMFS_HTTP_PROXY=http://late.example.org:3128",
    b"CVMFS_HTTP_PROXY=DIRECT true",
]


def generate(rng):
    """(file bytes, True if rewrite must refuse it).

    With CRLF line ends only simple lines are used: /bin/sh reads ``fi\r``, ``esac\r`` or a
    here-document delimiter ``EOF\r`` as plain words, so such a file fails in the shell itself.
    """
    crlf = rng.random() < 0.25
    pool = [p for p in OTHER if not (crlf and (b"\n" in p or b"\\" in p))]
    parts = rng.sample(pool, rng.randint(0, 8))  # without repeats: `readonly X` twice aborts sh
    unsafe = rng.random() < 0.15
    for _ in range(rng.randint(0, 3)):
        parts.insert(rng.randint(0, len(parts)), rng.choice(PROXY))
    if rng.random() < 0.2:
        parts.append(READONLY_PROXY)  # last: nothing may assign it after
    if unsafe:
        parts.insert(rng.randint(0, len(parts)), rng.choice([u for u in UNSAFE if not (crlf and b"\n" in u)]))
    eol = b"\r\n" if crlf else b"\n"
    content = eol.join(p.replace(b"\n", eol) for p in parts)
    if parts and rng.random() < 0.8:
        content += eol
    return content, unsafe


# Random text from shell fragments: any file /bin/sh parses and runs to its end is either edited
# exactly right or refused. (15,000 such files were run once with 0 mismatches.)
FRAGMENTS = [b"CVMFS_HTTP_PROXY=", b"X=", b"Y=", b"'", b'"', b"$X", b"${X}", b"$(echo z)", b")", b"}", b"(", b"{ ",
             b" ", b"\t", b"\n", b"\n", b"\n", b"\r\n", b"#", b";", b";;", b"&&", b"||", b"|", b"\\", b"<<EOF\n",
             b"EOF\n", b"if true; then ", b"else ", b"fi", b"case x in ", b"x) ", b"esac", b"for i in 1; do ", b"done",
             b"readonly ", b"export ", b"eval ", b"a", b"1", b"=", b"true ", b"false ", b"f() { ", b"while false; do ",
             b"http://q:1;DIRECT"]
RANDOM_FILES = int(os.environ.get("SHOAL_SH_RANDOM_FILES", "400"))


def sh_accepts(directory, content):
    """True if /bin/sh parses ``content`` and runs it to its end (what CVMFS needs to read anything)."""
    proc = subprocess.Popen([SH, "-n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.communicate(content)
    if proc.returncode != 0:
        return False
    path = os.path.join(directory, "probe.local")
    write_bytes(path, content)
    proc = subprocess.Popen([SH, "-c", '. "$1" >/dev/null 2>&1 </dev/null; echo completed', "sh", path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=directory)
    return proc.communicate()[0].strip() == b"completed"


def corpus_files():
    directory = os.path.join(HERE, "sh_corpus")
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as fh:
            yield name, fh.read()


@unittest.skipUnless(os.access(SH, os.X_OK), "needs /bin/sh")
class ShCorpusTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()

    def tearDown(self):
        self.tmp.__exit__(None, None, None)

    def check(self, label, content):
        """Rewrite ``content``; return True if edited (and checked by /bin/sh), False if refused."""
        try:
            new = rewrite(content, VALUE)
        except ConfigFileError:
            return False
        names = [n for n in cvmfs_parameters(content) if n != KEY]
        before = sh_values(self.dir, content, names)
        after = sh_values(self.dir, new, names + [KEY])
        self.assertEqual(after.pop(KEY), VALUE.encode("ascii"), (label, content, new))
        self.assertEqual(after, before, (label, content, new))
        self.assertEqual(rewrite(new, VALUE), new, (label, new))  # a second run changes nothing
        return True

    def test_real_world_files(self):
        checked = 0
        for name, content in corpus_files():
            refused = name.startswith("refuse-")
            self.assertEqual(self.check(name, content), not refused, name)
            checked += 1
        self.assertGreaterEqual(checked, 20)

    def test_generated_files(self):
        rng = random.Random(20261202)
        edited = refused = 0
        for i in range(GENERATED):
            content, unsafe = generate(rng)
            ok = self.check("generated #%d" % i, content)
            self.assertEqual(ok, not unsafe, (i, content))
            edited, refused = edited + ok, refused + (not ok)
        self.assertGreater(edited, GENERATED // 2)
        self.assertGreater(refused, 5)

    def test_random_shell_text(self):
        rng = random.Random(4242)
        edited = 0
        for i in range(RANDOM_FILES):
            content = b"".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 20)))
            if sh_accepts(self.dir, content):
                edited += self.check("random #%d" % i, content)
        self.assertGreater(edited, RANDOM_FILES // 20)

    def test_readonly_line_is_edited_in_place(self):
        # Appending a second assignment after `readonly` used to abort /bin/sh: CVMFS then read every
        # setting of the file as empty.
        content = b'CVMFS_QUOTA_LIMIT=20000\nreadonly CVMFS_HTTP_PROXY="http://x:3128;DIRECT"\n'
        new = rewrite(content, VALUE)
        self.assertEqual(new, b'CVMFS_QUOTA_LIMIT=20000\nreadonly CVMFS_HTTP_PROXY="' + VALUE.encode() + b'"\n')
        self.assertEqual(sh_values(self.dir, new, [b"CVMFS_QUOTA_LIMIT"]), {b"CVMFS_QUOTA_LIMIT": b"20000"})

    def test_crlf_value_has_no_cr(self):
        new = rewrite(b"CVMFS_QUOTA_LIMIT=1\r\nCVMFS_HTTP_PROXY=DIRECT\r\n", VALUE)
        self.assertEqual(sh_values(self.dir, new, [KEY])[KEY], VALUE.encode())

    def test_realistic_local_through_sh(self):
        self.assertTrue(self.check("REALISTIC_LOCAL", REALISTIC_LOCAL))


if __name__ == "__main__":
    unittest.main()
