"""An overall deadline for a block of blocking I/O, from SIGALRM.

Socket timeouts bound each read, not the whole fetch: a server that sends one byte a second
never trips them. ``Deadline(seconds)`` arms a real-time interval timer whose handler raises
``DeadlineExceeded`` in the main thread, wherever the fetch is blocked (connect, TLS handshake,
status line, headers or body). Outside the main thread (signals cannot be used there) it does
nothing and ``check()`` is the only bound, called between body reads.
"""
import signal

from ._compat import is_main_thread, monotonic


class DeadlineExceeded(Exception):
    """The block did not finish within its deadline."""


class Deadline(object):
    """``with Deadline(3.0) as d: ...`` raises DeadlineExceeded once 3 s have passed."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = None
        self._armed = False
        self._old_handler = None

    def _expired(self, signum, frame):
        raise DeadlineExceeded("no complete answer within %g s" % self.seconds)

    def remaining(self):
        """Seconds left (> 0), or raise DeadlineExceeded."""
        left = self.end - monotonic()
        if left <= 0:
            raise DeadlineExceeded("no complete answer within %g s" % self.seconds)
        return left

    check = remaining

    def __enter__(self):
        self.end = monotonic() + self.seconds
        if is_main_thread() and hasattr(signal, "setitimer"):
            self._old_handler = signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
            self._armed = True
        return self

    def __exit__(self, *exc):
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old_handler if self._old_handler is not None else signal.SIG_DFL)
            self._armed = False
        return False
