"""The control socket: JSON lines over a unix stream socket, owner (or root) only.

Requests: {"command": "reload", "wait": true} | {"command": "stop"} | {"command": "status"}.
Every request gets exactly one JSON line back. A request whose answer comes later (reload
--wait, stop) and that asks for it ("ack": true) first gets {"accepted": true, "wait":
SECONDS}: the client then knows the supervisor is alive and how long the work may take,
and never waits unbounded.
"""
import errno
import fcntl
import os
import re
import socket
import struct
import time

from .. import sd
from .control_wire import (MAX_REPLY, MAX_REQUEST, BadRequest, announced_wait, encode,
                           parse_reply, parse_request)
from ..listeners import remove_if_ours
from .limits import FdReserve
from .rundir import (DEFAULT_NAME, SHORTER_DIRECTORY, ControlError, NotRunning,
                     check_default_dir, check_socket_path, claim, in_directory_of, make_dirs,
                     make_private_dir, private_dir_pattern, remove_dirs, runtime_dir)

__all__ = ["ControlError", "NotRunning", "ControlServer", "control_path", "request", "runtime_dir",
           "open_notify_socket", "DEFAULT_TIMEOUT"]
NOTIFY_DIR_PREFIX = ".pyboss-"
NOTIFY_NAME = "notify"

_NAME = re.compile(r"^[A-Za-z0-9_@\-][A-Za-z0-9_.@\-]{0,63}$")
_PEERCRED = struct.Struct("3i")
DEFAULT_TIMEOUT = 10.0    # for the supervisor to answer, or to accept a longer request
MARGIN = 10.0             # beyond the time the supervisor announced for the work itself
MAX_READING = 64          # connections that have not sent their request yet
MAX_PARKED = 256          # connections waiting for the end of a reload or stop
IDLE_TIMEOUT = 10.0       # for a client to send its request


def valid_name(name):
    """Whether --name NAME can name a control socket (None: the default name)."""
    return name is None or bool(_NAME.match(name))


def control_path(name=None, control=None, client=False):
    """Where the control socket of pyboss NAME is (client=True: where to look for it).

    A client with neither --control nor $RUNTIME_DIRECTORY (an admin's root shell) also
    looks in <dir>/NAME/NAME.sock, where the shipped units put it (RuntimeDirectory=
    pyboss/%N), when <dir>/NAME.sock does not exist.
    """
    if control:
        return os.path.abspath(control)
    name = name or DEFAULT_NAME
    path = os.path.join(runtime_dir(), name + ".sock")
    if client and not os.environ.get("RUNTIME_DIRECTORY") and not os.path.exists(path):
        unit_path = os.path.join(runtime_dir(), name, name + ".sock")
        if os.path.exists(unit_path):
            return unit_path
    return path


def peer_uid(sock):
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _PEERCRED.size))[1]


class Connection:
    def __init__(self, sock, server):
        self.sock = sock
        self.server = server
        self.buffer = b""
        self.request = None     # the parsed request, for whoever answers it later

    def fileno(self):
        return self.sock.fileno()

    def send(self, obj):
        """Send one line; a client that went away is simply forgotten."""
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(5)
            self.sock.sendall(encode(obj))
        except OSError:
            pass

    def accepted(self, wait):
        """Tell a waiting client that asked for it ("ack") the supervisor has its request
        and the work may take up to wait seconds."""
        if (self.request or {}).get("ack"):
            self.send({"accepted": True, "wait": round(wait, 3)})

    def reply(self, obj):
        self.send(obj)
        self.close()

    def close(self):
        if self.server is not None:
            self.server.forget(self)
        self.sock.close()


class ControlServer:
    """Listens on the control socket; refuses to displace a live supervisor or to remove
    anything it did not create."""

    def __init__(self, path):
        check_socket_path(path, "the control socket", "choose a shorter --control PATH")
        self.path = path
        directory = os.path.dirname(path)
        self.created_dirs = make_dirs(directory)
        if not self.created_dirs:       # not made by us just now: is it private?
            check_default_dir(directory)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        lock = None
        try:
            lock = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
            # Two pyboss starting at once must not both decide the socket is stale.
            fcntl.flock(lock, fcntl.LOCK_EX)
            claim(path)
            old = os.umask(0o177)
            try:
                self.sock.bind(path)
            finally:
                os.umask(old)
            self.sock.listen(64)
            self.inode = os.stat(path).st_ino
        except BaseException as e:
            self.sock.close()
            remove_dirs(self.created_dirs)
            if isinstance(e, OSError):
                raise ControlError("cannot create control socket %s: %s (use --control PATH "
                                   "in a directory you may write to)" % (path, e.strerror or e))
            raise
        finally:
            if lock is not None:
                os.close(lock)
        self.sock.setblocking(False)
        self._connections()

    def _connections(self):
        self.loop = self.handler = self.log = None
        self.reading = {}      # connection -> its idle timer, oldest first
        self.parked = set()
        self.reserve = None

    @classmethod
    def adopt(cls, sock, path, inode, created_dirs):
        """The same server in a new process image (see supervise.py)."""
        server = cls.__new__(cls)
        server.sock, server.path, server.inode = sock, path, inode
        server.created_dirs = list(created_dirs)
        sock.setblocking(False)
        server._connections()
        return server

    def fileno(self):
        return self.sock.fileno()

    # -- serving, within bounds ------------------------------------------------------

    def serve(self, loop, handler, log):
        """Accept clients in loop; handler(conn, request) gets every valid request."""
        self.loop, self.handler, self.log = loop, handler, log
        self.reserve = FdReserve()
        loop.watch(self, self.on_accept)

    def on_accept(self):
        sock = self._accept()
        if sock is None:
            return
        if peer_uid(sock) not in (0, os.geteuid()):
            return sock.close()
        if len(self.reading) >= MAX_READING:
            next(iter(self.reading)).close()      # the oldest idle client makes room
        sock.setblocking(False)
        conn = Connection(sock, self)
        self.reading[conn] = self.loop.call_later(IDLE_TIMEOUT, conn.close)
        self.loop.watch(conn, lambda: self.on_readable(conn))

    def _accept(self):
        try:
            return self.sock.accept()[0]
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            if self.reading:
                next(iter(self.reading)).close()  # an fd for the client that waits
                return None
            self.log("fd-exhausted", "out of file descriptors: a control client was turned "
                     "away", level="warning")
            if not self.reserve.shed(self.sock):
                # Not even one fd: stop polling the socket for a moment, not at 100% CPU.
                self.loop.unwatch(self)
                self.loop.call_later(0.1, lambda: self.loop.watch(self, self.on_accept))
            return None

    def on_readable(self, conn):
        try:
            request = self.read_request(conn)
        except (EOFError, OSError):
            return conn.close()
        except BadRequest as e:
            return conn.reply({"ok": False, "error": str(e)})
        if request is None:
            return
        self.forget(conn)
        if len(self.parked) >= MAX_PARKED:
            return conn.reply({"ok": False, "error": "too many clients waiting (%d): try "
                               "again later" % MAX_PARKED})
        self.parked.add(conn)
        self.handler(conn, request)

    @staticmethod
    def read_request(conn):
        """The parsed request once a full line arrived; None while waiting; raises
        EOFError when the client went away, BadRequest when the request is bad."""
        try:
            data = conn.sock.recv(MAX_REQUEST + 1)
        except (BlockingIOError, InterruptedError):
            return None
        if not data:
            raise EOFError
        conn.buffer += data
        if b"\n" not in conn.buffer:
            if len(conn.buffer) > MAX_REQUEST:
                raise BadRequest("request longer than %d bytes" % MAX_REQUEST)
            return None
        conn.request = parse_request(conn.buffer.split(b"\n", 1)[0])
        return conn.request

    def forget(self, conn):
        timer = self.reading.pop(conn, None)
        if timer is not None:
            timer.cancel()
            self.loop.unwatch(conn)
        self.parked.discard(conn)

    def close(self):
        for conn in list(self.reading):
            conn.close()     # parked ones still get their answer from the supervisor
        if self.reserve is not None:
            self.reserve.close()
        self.sock.close()
        remove_if_ours(self.path, self.inode)
        remove_dirs(self.created_dirs)


# -- the client side --------------------------------------------------------------------

def request(path, obj, timeout=DEFAULT_TIMEOUT):
    """Send one request and return the supervisor's answer (a dict), or raise ControlError
    saying why there is none: nobody there, an impostor, no answer within timeout
    (for work the supervisor accepted: within the time it announced, plus a margin)."""
    if os.path.dirname(path) == os.path.normpath(runtime_dir()):
        check_default_dir(os.path.dirname(path))
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        _connect(sock, path, timeout)
        uid = peer_uid(sock)
        if uid not in (0, os.geteuid()) and \
                not (os.geteuid() == 0 and in_directory_of(path, uid)):
            raise ControlError("refusing %s: it is served by uid %d, not by you (uid %d) or "
                               "root; another user may be impersonating pyboss"
                               % (path, uid, os.geteuid()))
        _send(sock, encode(dict(obj, ack=True)), path, timeout, deadline)
        buffer = bytearray()
        reply = _read_reply(sock, buffer, path, timeout, deadline)
        if reply.get("accepted"):
            limit = announced_wait(reply, 10 * 365 * 86400)
            wait = max(timeout, limit + MARGIN)
            reply = _read_reply(sock, buffer, path, wait, time.monotonic() + wait, accepted=True)
        return reply
    finally:
        sock.close()


def _connect(sock, path, timeout):
    # Blocking with SO_SNDTIMEO: connect() then waits for room in a full backlog (a
    # non-blocking one would fail at once with EAGAIN while pyboss works through it).
    timeout = max(timeout, 0.001)     # SO_SNDTIMEO 0 would mean "forever"
    seconds = int(timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("ll", seconds, int((timeout - seconds) * 1e6)))
    try:
        sock.connect(path)
    except BlockingIOError:
        raise ControlError(_no_answer(path, timeout))
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning("no pyboss is running with control socket %s (start it with "
                           "'pyboss exec', or pass the right --name/--control)" % path)
    except PermissionError:
        raise ControlError("permission denied on %s: only the user running pyboss, or "
                           "root, may control it" % path)
    except socket.timeout:
        raise ControlError(_no_answer(path, timeout))
    except OSError as e:
        raise ControlError("control socket %s: %s" % (path, e.strerror))


def _no_answer(path, timeout, accepted=False):
    what = "did not finish within %g s after accepting the request" if accepted else \
        "did not answer within %g s"
    return ("pyboss " + what + " (control socket %s): it may be stopped or overloaded; "
            "try again with a longer --timeout") % (timeout, path)


def _send(sock, data, path, timeout, deadline):
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(data)
    except socket.timeout:
        raise ControlError(_no_answer(path, timeout))
    except OSError as e:
        if e.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise ControlError("control socket %s: %s" % (path, e.strerror))
        # Closed on us: the read below reports it as an exit before answering.


def _read_reply(sock, buffer, path, timeout, deadline, accepted=False):
    """The next line, parsed; ControlError on timeout, EOF or garbage."""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ControlError(_no_answer(path, timeout, accepted))
        try:
            sock.settimeout(left)
            chunk = sock.recv(65536)
        except socket.timeout:
            raise ControlError(_no_answer(path, timeout, accepted))
        except OSError as e:
            if e.errno != errno.ECONNRESET:
                raise ControlError("control socket %s: %s" % (path, e.strerror))
            chunk = b""
        if not chunk:
            raise ControlError("pyboss closed the connection on %s without answering: it "
                               "exited or failed before the work was done (see its log)" % path)
        buffer += chunk
        if len(buffer) > MAX_REPLY:
            raise ControlError("the answer on %s is longer than %d bytes" % (path, MAX_REPLY))
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    try:
        return parse_reply(line)
    except ValueError:
        raise ControlError("the answer on %s is not a pyboss reply: %r" % (path, line[:80]))


def open_notify_socket(directory):
    """pyboss's own NOTIFY_SOCKET, in a private 0700 directory beside the control socket."""
    check_socket_path(os.path.join(private_dir_pattern(directory, NOTIFY_DIR_PREFIX),
                                   NOTIFY_NAME), "pyboss's notify socket", SHORTER_DIRECTORY)
    private = make_private_dir(directory, NOTIFY_DIR_PREFIX)
    try:
        return sd.NotifyReceiver(os.path.join(private, NOTIFY_NAME), private_dir=private)
    except OSError as e:
        os.rmdir(private)
        raise ControlError("cannot create the notify socket in %s: %s"
                           % (private, e.strerror or e))
