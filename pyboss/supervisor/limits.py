"""File descriptor limits: pyboss's own, its children's, and surviving their exhaustion.

pyboss raises its soft RLIMIT_NOFILE to the hard limit, as systemd advises daemons to do
(the soft limit of 1024 exists for select() users; pyboss uses epoll). Its children get
back the soft limit they would have had without pyboss: an app may use select().
"""
import os
import resource

_inherited = None     # (soft, hard) as pyboss found them, for the children


def raise_nofile():
    """Soft RLIMIT_NOFILE := hard; remembers the original for restore_for_child()."""
    global _inherited
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _inherited is None:
        _inherited = (soft, hard)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass         # then pyboss runs with what it was given


def restore_for_child():
    """In a forked child before exec: the soft limit it would have had without pyboss."""
    if _inherited is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, _inherited)


class FdReserve:
    """One fd kept open so that, out of fds, pyboss can still accept() and close a client
    instead of spinning on a listening socket that stays readable (EMFILE)."""

    def __init__(self):
        self.fd = None
        self.acquire()

    def acquire(self):
        if self.fd is None:
            try:
                self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self.fd = None
        return self.fd is not None

    def shed(self, listening):
        """Accept and close one pending connection with the reserved fd; False if the
        reserve itself is gone (the caller then pauses accepting)."""
        if self.fd is None:
            return self.acquire() and False
        os.close(self.fd)
        self.fd = None
        try:
            conn, _ = listening.accept()
            conn.close()
        except OSError:
            pass
        return self.acquire()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
