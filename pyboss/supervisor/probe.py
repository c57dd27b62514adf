"""--ready-probe: a listening socket of each generation's own, and the HTTP client that asks it.

The shared listeners cannot tell which generation answered: a probe through them may be
answered by the old generation while the new build is broken. So pyboss binds one unix
socket per generation in its private directory and passes it after the app's listeners,
named pyboss-probe in LISTEN_FDNAMES. Only that generation holds it: an answer there comes
from the new build. The client runs on the supervisor's event loop and never blocks it.
"""
import errno
import os
import re
import socket
import stat

from ..listeners import remove_if_ours
from .rundir import SHORTER_DIRECTORY, ControlError, check_socket_path

PROBE_NAME = "pyboss-probe"
RETRY_INTERVAL = 0.1       # between attempts: a refused or unanswered probe is retried soon
ATTEMPT_TIMEOUT = 5.0      # an accepted probe not answered by then is abandoned and retried
_STATUS_LINE = re.compile(rb"^HTTP/\d(?:\.\d)? (\d{3})\b")


def _name(number, slot, prefix=""):
    # Short: a unix socket's path has 107 bytes, and the directory takes most of them.
    return prefix + ("%d" % number if slot == 0 else "%d-%d" % (number, slot))


def longest_name(workers):
    """The name checked at pyboss's start: generations up to 99,999, in the slots of
    --workers. A later generation or slot whose path is too long fails to start, saying so."""
    return _name(99999, workers - 1)


class ProbeSocket:
    """The listening unix socket the worker of generation NUMBER in SLOT gets; pyboss
    removes its file."""

    def __init__(self, directory, number, slot=0):
        self.path = os.path.join(directory, _name(number, slot))
        try:
            check_socket_path(self.path, "its --ready-probe socket", SHORTER_DIRECTORY)
        except ControlError as e:
            raise OSError(errno.ENAMETOOLONG, str(e))    # a spawn that fails, saying why
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(self.path)
            self.inode = os.stat(self.path).st_ino
            self.sock.listen(16)
        except BaseException:
            self.sock.close()
            raise

    @classmethod
    def left_behind(cls, directory, number, slot=0):
        """The probe socket an earlier pyboss bound for this worker, which holds it; None
        if its file is not there ("probe-" in front: the name an earlier pyboss gave it)."""
        for prefix in ("", "probe-"):
            path = os.path.join(directory, _name(number, slot, prefix))
            try:
                info = os.stat(path)
            except OSError:
                continue
            if stat.S_ISSOCK(info.st_mode):
                break
        else:
            return None
        found = cls.__new__(cls)
        found.path, found.inode, found.sock = path, info.st_ino, None
        return found

    def fileno(self):
        return self.sock.fileno()

    def release(self):
        """After the fork: the generation holds the socket now, pyboss only its path."""
        if self.sock is not None:
            self.sock.close()

    def remove(self):
        self.release()
        remove_if_ours(self.path, self.inode)


def request_bytes(target):
    return ("GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: pyboss-probe\r\n"
            "Connection: close\r\n\r\n" % target).encode()


def answer_code(head):
    """The status code of an HTTP answer's first line, or None if it is not one."""
    match = _STATUS_LINE.match(head)
    return int(match.group(1)) if match else None


class HttpProbe:
    """Sends GET TARGET to the unix socket at path until the answer is 2xx or 3xx.

    loop is the supervisor's event loop (watch, unwatch, call_later); on_success runs once.
    `last` says what the latest failed attempt got, for the timeout message.
    """

    def __init__(self, loop, path, target, on_success):
        self.loop, self.path, self.on_success = loop, path, on_success
        self.request = request_bytes(target)
        self.sock = None
        self.timer = None
        self.head = b""
        self.attempts = 0
        self.last = "no attempt yet"

    def start(self):
        self.attempt()

    def attempt(self):
        self.timer = None
        self.attempts += 1
        sock = socket.socket(socket.AF_UNIX,
                             socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.connect(self.path)      # a unix connect completes at once, or EAGAIN
            sock.sendall(self.request)   # a few dozen bytes into an empty socket buffer
        except OSError as e:
            sock.close()
            return self.failed(e.strerror or str(e))
        self.sock, self.head = sock, b""
        self.last = "connected, no answer yet"
        self.loop.watch(sock, self.on_readable)
        self.timer = self.loop.call_later(ATTEMPT_TIMEOUT, lambda: self.failed(
            "no answer within %gs" % ATTEMPT_TIMEOUT))

    def on_readable(self):
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            return self.failed(e.strerror or str(e))
        self.head += data
        if b"\n" not in self.head and data and len(self.head) < 8192:
            return          # the status line is not complete yet
        code = answer_code(self.head)
        if code is None:
            return self.failed("not an HTTP answer: %r" % self.head[:60] if self.head
                               else "connection closed without an answer")
        if 200 <= code < 400:
            self.cancel()
            return self.on_success()
        self.failed("HTTP %d" % code)

    def failed(self, what):
        self.cancel()
        self.last = what
        self.timer = self.loop.call_later(RETRY_INTERVAL, self.attempt)

    def cancel(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sock is not None:
            self.loop.unwatch(self.sock)
            self.sock.close()
            self.sock = None
