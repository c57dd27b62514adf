"""The control socket: JSON lines over a unix stream socket, owner (or root) only.

Requests: {"command": "reload", "wait": true} | {"command": "stop"} | {"command": "status"}.
Every request gets exactly one JSON line back; a waiting request gets it later.
"""
import errno
import fcntl
import json
import os
import socket
import struct
import tempfile
import time

from .. import sd

DEFAULT_NAME = "pyboss"
_PEERCRED = struct.Struct("3i")


class ControlError(Exception):
    """The control socket cannot be used; the message says why and what to do."""


def runtime_dir():
    if os.environ.get("RUNTIME_DIRECTORY"):
        return os.environ["RUNTIME_DIRECTORY"].split(":")[0]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "pyboss")
    if os.geteuid() == 0:
        return "/run/pyboss"
    return "/tmp/pyboss-%d" % os.geteuid()


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


class Connection:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.request = None     # the parsed request, for whoever answers it later

    def fileno(self):
        return self.sock.fileno()

    def reply(self, obj):
        """Send one line; a client that went away is simply forgotten."""
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(5)
            self.sock.sendall(json.dumps(obj).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.close()

    def close(self):
        self.sock.close()


class ControlServer:
    """Listens on the control socket; refuses to displace a live supervisor."""

    def __init__(self, path):
        self.path = path
        directory = os.path.dirname(path)
        self.created_dir = not os.path.isdir(directory)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ControlError("cannot create %s: %s (use --control PATH in a writable "
                               "directory)" % (directory, e.strerror))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        lock = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Two pyboss starting at once must not both decide the socket is stale.
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._claim(path)
            old = os.umask(0o177)
            try:
                self.sock.bind(path)
            finally:
                os.umask(old)
            self.sock.listen(64)
        except OSError as e:
            self.sock.close()
            raise ControlError("cannot create control socket %s: %s (use --control PATH "
                               "in a writable directory)" % (path, e.strerror))
        except BaseException:
            self.sock.close()
            raise
        finally:
            os.close(lock)
        self.inode = os.stat(path).st_ino
        self.sock.setblocking(False)

    @classmethod
    def adopt(cls, sock, path, inode, created_dir):
        """The same server in a new process image (see supervise.py)."""
        server = cls.__new__(cls)
        server.sock, server.path, server.inode, server.created_dir = sock, path, inode, created_dir
        sock.setblocking(False)
        return server

    def _claim(self, path):
        if not os.path.lexists(path):
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)     # left behind by a pyboss that was killed
            return
        finally:
            probe.close()
        raise ControlError("another pyboss is already running with control socket %s: "
                           "stop it first, or give this one another --name" % path)

    def fileno(self):
        return self.sock.fileno()

    def accept(self):
        """Accept one client if it is our own user or root, else None."""
        try:
            sock, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        _pid, uid, _gid = _PEERCRED.unpack(creds)
        if uid not in (0, os.geteuid()):
            sock.close()
            return None
        sock.setblocking(False)
        return Connection(sock)

    @staticmethod
    def read_request(conn):
        """A parsed request once a full line arrived; None while waiting; raises EOFError."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        if not data:
            raise EOFError
        conn.buffer += data
        if b"\n" not in conn.buffer:
            if len(conn.buffer) > 65536:
                raise EOFError
            return None
        line = conn.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            request = {"command": None}
        conn.request = request
        return request

    def close(self):
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        if self.created_dir:
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass


def request(path, obj, timeout=None):
    """Send one request and return the supervisor's reply (a dict)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError("no pyboss is running with control socket %s (start it with "
                               "'pyboss exec', or pass the right --name/--control)" % path)
        except PermissionError:
            raise ControlError("permission denied on %s: only the user running pyboss, or "
                               "root, may control it" % path)
        sock.sendall(json.dumps(obj).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise ControlError("no answer from pyboss on %s within %ss" % (path, timeout))
    except OSError as e:
        if e.errno in (errno.ECONNRESET, errno.EPIPE):
            data = b""
        else:
            raise ControlError("control socket %s: %s" % (path, e.strerror))
    finally:
        sock.close()
    if not data:
        return None      # the supervisor closed the connection: it exited
    return json.loads(data)


def open_notify_socket(directory):
    """pyboss's own NOTIFY_SOCKET, in a private 0700 directory beside the control socket."""
    private = tempfile.mkdtemp(prefix=".pyboss-", dir=directory)
    try:
        return sd.NotifyReceiver(os.path.join(private, "notify"), private_dir=private)
    except OSError as e:
        os.rmdir(private)
        raise ControlError("cannot create the notify socket in %s: %s"
                           % (private, e.strerror or e))


def _clock(timestamp):
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def _ready(ready_after):
    return "ready after %.3fs" % ready_after if ready_after is not None else "not ready"


def format_status(status):
    """A status reply as the lines `pyboss status` prints."""
    lines = []
    lines.append("pyboss %r (pid %d): %s" % (status["name"], status["pid"], status["state"]))
    lines.append("  command: %s" % " ".join(status["command"]))
    if status.get("workers", 1) != 1 or status.get("reload_strategy", "all") != "all":
        lines.append("  workers: %d, reload strategy %s" % (status["workers"],
                                                             status["reload_strategy"]))
    lines.append("  listeners:")
    for l in status["listeners"]:
        lines.append("    %-12s %-6s %-28s %s" % (l["name"], l["kind"], l["address"], l["origin"]))
    lines.append("  generations:")
    for g in status["generations"]:
        workers = g.get("workers", [])
        if status.get("workers", 1) == 1 and len(workers) <= 1:
            lines.append("    #%-4d pid %-8d %-9s started %s  %s%s" % (
                g["number"], g["pid"], g["state"], _clock(g["started"]),
                _ready(g["ready_after"]), "  (%s)" % g["status"] if g.get("status") else ""))
            continue
        lines.append("    #%-4d %-9s started %s  %s" % (
            g["number"], g["state"], _clock(g["started"]), _ready(g["ready_after"])))
        for w in workers:
            lines.append("      slot %-3d pid %-8d %-9s %s%s%s" % (
                w["slot"], w["pid"], w["state"], _ready(w["ready_after"]),
                "  generation %d" % w["generation"] if w["generation"] != g["number"] else "",
                "  (%s)" % w["status"] if w.get("status") else ""))
    if status["reloads"]:
        lines.append("  last reloads:")
    for r in status["reloads"]:
        lines.append("    #%-4d %-7s %.3fs at %s%s" % (
            r["generation"], r["outcome"], r["duration"],
            time.strftime("%H:%M:%S", time.localtime(r["requested"])),
            ": " + r["reason"] if r["reason"] else ""))
    changes = status.get("reload_on_change")
    if changes:
        lines.append("  reload on change: %s" % ", ".join(changes["paths"]))
        lines.append("    %d change(s): %d reloaded, %d failed%s" % (
            changes["changes"], changes["reloaded"], changes["failed"],
            " (last: %s)" % changes["last_error"] if changes["failed"] else ""))
    if status.get("orphans", {}).get("reaped"):
        lines.append("  orphans reaped: %d" % status["orphans"]["reaped"])
    return "\n".join(lines)
