"""The pure CVMFS_HTTP_PROXY edit and the crash-safe file replacement."""
import fcntl
import os
import stat
import subprocess
import sys
import time
import unittest

from _helpers import REALISTIC_LOCAL, TempDir, read_bytes, raises_with, write_bytes
from shoal_client.cvmfsconf import (TEMP_SUFFIX, ConfigFileError, FileLock, LockTimeout, UnsafePath,
                                    current_values, resolve_path, rewrite, update_file)

VALUE = "http://a.example.org:3128;http://[2a00:1450:4001::1]:3128;DIRECT"
LINE = b'CVMFS_HTTP_PROXY="' + VALUE.encode("ascii") + b'"'


class RewriteTest(unittest.TestCase):
    def test_realistic_file_only_proxy_line_changes(self):
        new = rewrite(REALISTIC_LOCAL, VALUE)
        old_lines, new_lines = REALISTIC_LOCAL.splitlines(True), new.splitlines(True)
        self.assertEqual(len(old_lines), len(new_lines))
        changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
        self.assertEqual(changed, [6])
        self.assertEqual(new_lines[6], LINE + b"  # shoal\n")
        self.assertEqual(current_values(new), [VALUE.encode("ascii")])
        self.assertEqual(current_values(b"CVMFS_HTTP_PROXY=a\nexport CVMFS_HTTP_PROXY='b' # c\n"), [b"a", b"b"])

    def test_append_when_missing(self):
        self.assertEqual(rewrite(b"A=1\n", VALUE), b"A=1\n" + LINE + b"\n")

    def test_append_after_last_line_without_newline(self):
        self.assertEqual(rewrite(b"A=1", VALUE), b"A=1\n" + LINE + b"\n")

    def test_empty_file(self):
        self.assertEqual(rewrite(b"", VALUE), LINE + b"\n")

    def test_crlf_file(self):
        # /bin/sh keeps the CR in the value ("DIRECT\r"): a comment after the value swallows it
        self.assertEqual(rewrite(b"A=1\r\nCVMFS_HTTP_PROXY=DIRECT\r\nB=2\r\n", VALUE),
                         b"A=1\r\n" + LINE + b" #\r\nB=2\r\n")
        self.assertEqual(rewrite(b"A=1\r\n", VALUE), b"A=1\r\n" + LINE + b" #\r\n")
        self.assertEqual(rewrite(b"CVMFS_HTTP_PROXY='x' # site\r\n", VALUE),
                         b"CVMFS_HTTP_PROXY='" + VALUE.encode() + b"' # site\r\n")

    def test_styles(self):
        for old, new in (
                (b"CVMFS_HTTP_PROXY=DIRECT\n", LINE + b"\n"),
                (b"CVMFS_HTTP_PROXY=\n", LINE + b"\n"),
                (b"CVMFS_HTTP_PROXY=http://x:3128;DIRECT\n", LINE + b"\n"),
                (b"CVMFS_HTTP_PROXY='DIRECT'\n", b"CVMFS_HTTP_PROXY='" + VALUE.encode() + b"'\n"),
                (b"export CVMFS_HTTP_PROXY=\"x\"\n", b"export " + LINE + b"\n"),
                (b"  CVMFS_HTTP_PROXY=\"x\"\t# comment \"q\"\n", b"  " + LINE + b"\t# comment \"q\"\n"),
                (b"CVMFS_HTTP_PROXY=\"a\\\"b\"\n", LINE + b"\n"),
                (b"CVMFS_HTTP_PROXY=\"${SITE};DIRECT\"\n", LINE + b"\n")):
            self.assertEqual(rewrite(old, VALUE), new, old)

    def test_lines_that_are_not_assignments_stay(self):
        text = (b"#CVMFS_HTTP_PROXY=\"x\"\nMY_CVMFS_HTTP_PROXY=x\nCVMFS_HTTP_PROXY_X=1\n"
                b"echo CVMFS_HTTP_PROXY=x\nCVMFS_HTTP_PROXY =x\n")
        self.assertEqual(rewrite(text, VALUE), text + LINE + b"\n")

    def test_every_assignment_is_set(self):
        self.assertEqual(rewrite(b"CVMFS_HTTP_PROXY=a\nB=1\nCVMFS_HTTP_PROXY='b'\n", "DIRECT"),
                         b"CVMFS_HTTP_PROXY=\"DIRECT\"\nB=1\nCVMFS_HTTP_PROXY='DIRECT'\n")

    def test_bytes_that_are_not_utf8_are_kept(self):
        text = b"# caf\xe9 \xff\xfe\nCVMFS_HTTP_PROXY=DIRECT\n\x00\x01 raw\n"
        self.assertEqual(rewrite(text, VALUE), b"# caf\xe9 \xff\xfe\n" + LINE + b"\n\x00\x01 raw\n")

    def test_unchanged_value_gives_identical_bytes(self):
        once = rewrite(REALISTIC_LOCAL, VALUE)
        self.assertEqual(rewrite(once, VALUE), once)

    def test_refuses_what_it_cannot_parse(self):
        for text in (b"CVMFS_HTTP_PROXY=\"a;\nb\"\n", b"CVMFS_HTTP_PROXY='a\n", b"CVMFS_HTTP_PROXY=\"a\";b\n",
                     b"CVMFS_HTTP_PROXY=$(cat /x)\n", b"CVMFS_HTTP_PROXY=\"a\";echo\n",
                     b"CVMFS_HTTP_PROXY=\"a\\\"\n"):
            self.assertRaises(ConfigFileError, rewrite, text, VALUE)

    def test_refuses_unsafe_values(self):
        for value in ("", "a b", "a\"b", "$(x)", "a\nb", "`x`", "a'b", "a\\b", u"\u00e9"):
            self.assertRaises(ValueError, rewrite, b"", value)


class UpdateFileTest(unittest.TestCase):
    def setUp(self):
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.path = os.path.join(self.dir, "default.local")
        self.lockdir = TempDir()
        self.lock = os.path.join(self.lockdir.__enter__(), "shoal-client.lock")

    def tearDown(self):
        self.tmp.__exit__(None, None, None)
        self.lockdir.__exit__(None, None, None)

    def test_replaces_and_keeps_mode(self):
        write_bytes(self.path, REALISTIC_LOCAL)
        os.chmod(self.path, 0o640)
        inode = os.stat(self.path).st_ino
        self.assertTrue(update_file(self.path, VALUE, lock_path=self.lock))
        self.assertEqual(read_bytes(self.path), rewrite(REALISTIC_LOCAL, VALUE))
        st = os.stat(self.path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertNotEqual(st.st_ino, inode)  # replaced by rename, not rewritten in place
        self.assertEqual(sorted(os.listdir(self.dir)), ["default.local"])

    def test_keeps_owner(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to give the file another owner")
        write_bytes(self.path, b"A=1\n")
        os.chown(self.path, 4321, 4322)
        update_file(self.path, VALUE, lock_path=self.lock)
        st = os.stat(self.path)
        self.assertEqual((st.st_uid, st.st_gid), (4321, 4322))

    def test_unchanged_file_is_not_touched(self):
        write_bytes(self.path, rewrite(REALISTIC_LOCAL, VALUE))
        os.utime(self.path, (1000000000, 1000000000))
        inode = os.stat(self.path).st_ino
        self.assertFalse(update_file(self.path, VALUE, lock_path=self.lock))
        st = os.stat(self.path)
        self.assertEqual((st.st_mtime, st.st_ino), (1000000000, inode))

    def test_creates_missing_file(self):
        self.assertTrue(update_file(self.path, VALUE, lock_path=self.lock))
        self.assertEqual(read_bytes(self.path), LINE + b"\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)

    def test_follows_symlink(self):
        real = os.path.join(self.dir, "real.local")
        write_bytes(real, b"A=1\n")
        os.symlink("real.local", self.path)
        update_file(self.path, VALUE, lock_path=self.lock)
        self.assertTrue(os.path.islink(self.path))
        self.assertEqual(read_bytes(real), b"A=1\n" + LINE + b"\n")

    def test_failure_before_rename_leaves_original_and_no_temp(self):
        write_bytes(self.path, REALISTIC_LOCAL)
        seen = []

        def hook(temp):
            seen.append(read_bytes(temp))
            raise RuntimeError("crash")

        self.assertRaises(RuntimeError, update_file, self.path, VALUE, before_rename=hook, lock_path=self.lock)
        self.assertEqual(seen, [rewrite(REALISTIC_LOCAL, VALUE)])  # the temp file was complete
        self.assertEqual(read_bytes(self.path), REALISTIC_LOCAL)
        self.assertEqual(os.listdir(self.dir), ["default.local"])

    def test_stale_temp_files_are_removed(self):
        write_bytes(self.path, b"A=1\n")
        stale = os.path.join(self.dir, ".default.local.abc123" + TEMP_SUFFIX)
        other = os.path.join(self.dir, "unrelated" + TEMP_SUFFIX)
        write_bytes(stale, b"half")
        write_bytes(other, b"keep")
        update_file(self.path, VALUE, lock_path=self.lock)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(other))

    def test_refused_file_is_left_alone(self):
        write_bytes(self.path, b"CVMFS_HTTP_PROXY=\"unterminated\n")
        raises_with(self, ConfigFileError, "unterminated", update_file, self.path, VALUE, lock_path=self.lock)
        self.assertEqual(read_bytes(self.path), b"CVMFS_HTTP_PROXY=\"unterminated\n")

    @unittest.skipUnless(os.access("/bin/sh", os.X_OK), "needs /bin/sh")
    def test_file_sh_cannot_parse_is_refused(self):
        write_bytes(self.path, b"if true; then\nCVMFS_QUOTA_LIMIT=1\n")  # no fi
        raises_with(self, ConfigFileError, "unterminated if", update_file, self.path, VALUE, lock_path=self.lock)
        write_bytes(self.path, b"X=1\nx) y\n")  # a lexer sees words; /bin/sh -n sees a syntax error
        raises_with(self, ConfigFileError, "/bin/sh cannot parse this file", update_file, self.path, VALUE,
                    lock_path=self.lock)
        self.assertEqual(read_bytes(self.path), b"X=1\nx) y\n")
        write_bytes(self.path, b"X=\\")
        raises_with(self, ConfigFileError, "ends with a backslash", update_file, self.path, VALUE,
                    lock_path=self.lock)

    def test_missing_directory(self):
        self.assertRaises(OSError, update_file, os.path.join(self.dir, "nope", "default.local"), VALUE)

    def hold_flock(self, path, as_user=None):
        """A child process holding an exclusive flock on ``path`` (as uid ``as_user`` if given)."""
        code = ("import fcntl, os, sys, time\n"
                "uid = int(sys.argv[2])\n"
                "if uid >= 0: os.setgid(uid); os.setuid(uid)\n"
                "fd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                "sys.stdout.write('locked\\n'); sys.stdout.flush(); time.sleep(30)\n")
        holder = subprocess.Popen([sys.executable, "-c", code, path, str(-1 if as_user is None else as_user)],
                                  stdout=subprocess.PIPE)
        self.assertEqual(holder.stdout.readline().strip(), b"locked")
        return holder

    def stop(self, holder):
        holder.kill()
        holder.wait()
        holder.stdout.close()

    def test_lock_held_by_another_process(self):
        write_bytes(self.path, b"A=1\n")
        lock = os.path.join(self.dir, "run", "shoal-client.lock")
        os.mkdir(os.path.dirname(lock), 0o700)
        self.assertTrue(update_file(self.path, "DIRECT", lock_path=lock))
        holder = self.hold_flock(lock)
        try:
            start = time.time()
            self.assertRaises(LockTimeout, update_file, self.path, VALUE, lock_timeout=0.5, lock_path=lock)
            self.assertLess(time.time() - start, 10)
            self.assertEqual(read_bytes(self.path), b"A=1\nCVMFS_HTTP_PROXY=\"DIRECT\"\n")
        finally:
            self.stop(holder)
        self.assertTrue(update_file(self.path, VALUE, lock_timeout=5, lock_path=lock))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to act as another user")
    def test_unprivileged_flock_of_the_config_directory_does_not_block(self):
        # issue 14: `flock -x /etc/cvmfs` by any user used to stop root's client (exit 9) while held.
        os.chmod(self.dir, 0o755)
        write_bytes(self.path, b"A=1\n")
        lock = os.path.join(self.dir, "private.lock")
        holder = self.hold_flock(self.dir, as_user=65534)
        try:
            start = time.time()
            self.assertTrue(update_file(self.path, VALUE, lock_timeout=2, lock_path=lock))
            self.assertLess(time.time() - start, 1.5)
        finally:
            self.stop(holder)
        self.assertEqual(stat.S_IMODE(os.lstat(lock).st_mode), 0o600)

    def test_lock_file_is_private_and_never_a_link(self):
        secret = os.path.join(self.dir, "secret")
        write_bytes(secret, b"root only\n")
        link = os.path.join(self.dir, "planted.lock")
        os.symlink(secret, link)
        raises_with(self, UnsafePath, "symbolic link", update_file, self.path, VALUE, lock_path=link)
        self.assertEqual(read_bytes(secret), b"root only\n")
        loose = os.path.join(self.dir, "loose.lock")
        write_bytes(loose, b"")
        os.chmod(loose, 0o666)
        raises_with(self, UnsafePath, "writable by others", update_file, self.path, VALUE, lock_path=loose)
        if os.geteuid() == 0:
            theirs = os.path.join(self.dir, "theirs.lock")
            write_bytes(theirs, b"")
            os.chown(theirs, 65534, 65534)
            raises_with(self, UnsafePath, "belongs to uid 65534", update_file, self.path, VALUE, lock_path=theirs)
        self.assertFalse(os.path.exists(self.path))

    def test_lock_waits_for_release(self):
        sleeps = []
        lock_path = os.path.join(self.dir, "x.lock")
        with FileLock(lock_path, 5):
            fd = os.open(lock_path, os.O_RDONLY)
            try:
                self.assertRaises((IOError, OSError), fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        lock = FileLock(lock_path, 5, sleep=sleeps.append)
        with lock:
            pass
        self.assertEqual(sleeps, [])


@unittest.skipUnless(os.geteuid() == 0, "needs root to plant links owned by another user")
class ProtectedSymlinkTest(unittest.TestCase):
    """Links in world-writable directories are followed only as the kernel's protected_symlinks allows."""

    def setUp(self):
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.shared = os.path.join(self.dir, "tmp")
        os.mkdir(self.shared)
        os.chmod(self.shared, 0o1777)
        self.secret = os.path.join(self.dir, "shadow")
        write_bytes(self.secret, b"root:x:0:0\n")
        os.chmod(self.secret, 0o600)
        self.lock = os.path.join(self.dir, "lock")

    def tearDown(self):
        self.tmp.__exit__(None, None, None)

    def plant(self, name, target, uid):
        link = os.path.join(self.shared, name)
        os.symlink(target, link)
        os.lchown(link, uid, uid)
        return link

    def test_link_planted_by_another_user_in_sticky_dir_is_refused(self):
        link = self.plant("default.local", self.secret, 65534)
        raises_with(self, UnsafePath, "protected_symlinks", update_file, link, VALUE, lock_path=self.lock)
        self.assertEqual(read_bytes(self.secret), b"root:x:0:0\n")
        self.assertFalse([n for n in os.listdir(self.dir) if n.endswith(TEMP_SUFFIX)])

    def test_link_in_a_directory_path_component_is_refused_too(self):
        real = os.path.join(self.dir, "etc-cvmfs")
        os.mkdir(real)
        link = self.plant("cvmfs", real, 65534)
        raises_with(self, UnsafePath, "protected_symlinks", update_file, os.path.join(link, "default.local"),
                    VALUE, lock_path=self.lock)
        self.assertEqual(os.listdir(real), [])

    def test_world_writable_without_sticky_bit_is_also_protected(self):
        os.chmod(self.shared, 0o777)
        link = self.plant("default.local", self.secret, 65534)
        raises_with(self, UnsafePath, "protected_symlinks", update_file, link, VALUE, lock_path=self.lock)

    def test_links_owned_by_root_or_the_dir_owner_are_followed(self):
        link = self.plant("default.local", self.secret, 0)
        self.assertTrue(update_file(link, VALUE, lock_path=self.lock))
        self.assertTrue(os.path.islink(link))
        self.assertIn(b"CVMFS_HTTP_PROXY", read_bytes(self.secret))
        os.chown(self.shared, 65534, 65534)
        other = os.path.join(self.dir, "other.local")
        link2 = self.plant("other.local", other, 65534)  # owner of the link == owner of the directory
        self.assertTrue(update_file(link2, VALUE, lock_path=self.lock))
        self.assertIn(b"CVMFS_HTTP_PROXY", read_bytes(other))

    def test_resolve_path_matches_realpath_where_allowed(self):
        inner = os.path.join(self.dir, "a", "b")
        os.makedirs(inner)
        os.symlink("a/b", os.path.join(self.dir, "ab"))
        os.symlink("../b/../b/x", os.path.join(inner, "rel"))
        for path in (os.path.join(self.dir, "ab", "rel"), os.path.join(self.dir, "ab", "..", "b", "x"),
                     os.path.join(self.dir, "a", ".", "b", "new")):
            self.assertEqual(resolve_path(path), os.path.realpath(path))


if __name__ == "__main__":
    unittest.main()
