"""The systemd protocols, implemented once: sd_notify and socket activation.

Used in both directions: pyboss talks to systemd with them, and pyboss's
children talk to pyboss with them (pyboss plays systemd's part for its app).
"""
import array
import os
import socket
import struct
import time

SD_LISTEN_FDS_START = 3
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def monotonic_usec():
    """CLOCK_MONOTONIC in microseconds, for RELOADING=1's MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def address_text(addr):
    """A unix socket address as operators write it: a path, or "@name" if abstract."""
    if isinstance(addr, bytes):
        return "@" + addr[1:].decode(errors="replace") if addr[:1] == b"\0" else \
            addr.decode(errors="replace")
    return addr


def _address(path):
    # '@' marks the abstract namespace, which the kernel spells with a NUL.
    return "\0" + path[1:] if path.startswith("@") else path


def notify(message, fds=(), socket_path=None, block=True):
    """Send one notify datagram ("READY=1\\nSTATUS=..."), with fds if given.

    Returns False when there is nobody to tell (NOTIFY_SOCKET unset), so
    callers never need to check the environment themselves. With block=False
    a receiver whose queue is full raises BlockingIOError instead of stalling
    the sender (a supervisor must never hang on its manager).
    """
    path = socket_path or os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if isinstance(message, str):
        message = message.encode()
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        # sendmsg with an address: socket.send_fds() drops it on unconnected sockets.
        sock.sendmsg([message], ancillary, 0 if block else socket.MSG_DONTWAIT, _address(path))
    return True


def _int(text):
    try:
        return int(text)
    except ValueError:
        return -1


def _pidfd_inode(pid):
    fd = os.pidfd_open(pid)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def own_pidfd_id():
    """This process's LISTEN_PIDFDID: its pidfs inode number, which (unlike a pid) is never
    reused; None where the kernel has no pidfs. Without pidfs every pidfd shares one
    anonymous inode, so a pidfd of ours and one of our parent's look the same."""
    try:
        own, parent = _pidfd_inode(os.getpid()), _pidfd_inode(os.getppid())
    except (OSError, AttributeError):
        return None
    return own if own != parent else None


def listen_fds(unset=False):
    """Return [(fd, name)] passed by socket activation, or [] if none are ours."""
    env = os.environ
    try:
        count = int(env.get("LISTEN_FDS", "0"))
        pid = int(env.get("LISTEN_PID", "0") or 0)
    except ValueError:
        count, pid = 0, -1
    # LISTEN_PID may be absent (some activators omit it) but never someone else's.
    if count <= 0 or (pid and pid != os.getpid()) or pid < 0:
        count = 0
    pidfd_id = env.get("LISTEN_PIDFDID")
    if count and pidfd_id and own_pidfd_id() not in (None, _int(pidfd_id)):
        count = 0         # systemd >= 258 meant them for another process with our pid
    names = env.get("LISTEN_FDNAMES", "").split(":") if count else []
    if len(names) != count:
        names = ["unknown"] * count
    names = [name or "unknown" for name in names]    # as libsystemd names unnamed fds
    if unset:
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID"):
            env.pop(key, None)
    result = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError:
            raise ListenFdsError("LISTEN_FDS=%d names fd %d, which is not open: check the "
                                 "socket unit, or whoever set LISTEN_FDS and LISTEN_PID"
                                 % (count, fd)) from None
        result.append((fd, names[i]))
    return result


class ListenFdsError(ValueError):
    """LISTEN_FDS names fds this process does not have."""


# What systemd told pyboss is pyboss's own business, not the app's.
# LISTEN_PIDFDID above all: libsystemd in the child compares it with its own pidfd.
_NOT_INHERITED = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
                  "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "FDSTORE")


def child_env(base, names, notify_socket=None, extra=None):
    """The environment for a socket-activated child; LISTEN_PID (and LISTEN_PIDFDID) are
    set after fork (see child_identity)."""
    env = {k: v for k, v in base.items()
           if k not in _NOT_INHERITED}
    if names:
        env["LISTEN_FDS"] = str(len(names))
        env["LISTEN_FDNAMES"] = ":".join(names)
    if notify_socket:
        env["NOTIFY_SOCKET"] = notify_socket
    env.update(extra or {})
    return env


def child_identity(env):
    """In a forked child before exec: LISTEN_PID and, with pidfs, LISTEN_PIDFDID of its own."""
    env["LISTEN_PID"] = str(os.getpid())
    pidfd_id = own_pidfd_id()
    if pidfd_id is not None:
        env["LISTEN_PIDFDID"] = str(pidfd_id)


def parse_message(data):
    """'READY=1\\nSTATUS=x' -> {'READY': '1', 'STATUS': 'x'}; junk lines are dropped."""
    fields = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifyReceiver:
    """A NOTIFY_SOCKET of our own: datagrams carry the sender's pid (SO_PASSCRED)."""

    def __init__(self, path=None, sock=None, private_dir=None):
        self.private_dir = private_dir   # removed with the socket file on close
        self.bound_path = None
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.bind(_address(path))
            if not path.startswith("@"):
                self.bound_path = path
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self.sock = sock
        self.path = address_text(sock.getsockname())

    def fileno(self):
        return self.sock.fileno()

    def receive(self):
        """Yield (pid, fields, fds) for every queued datagram, without blocking."""
        space = socket.CMSG_SPACE(_CRED.size) + socket.CMSG_SPACE(253 * 4)
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, space)
            except (BlockingIOError, InterruptedError):
                return
            pid, fds = 0, []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CRED.unpack(payload[:_CRED.size])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            yield pid, parse_message(data), fds

    def close(self):
        self.sock.close()
        for remove, path in ((os.unlink, self.bound_path), (os.rmdir, self.private_dir)):
            if path:
                try:
                    remove(path)
                except OSError:
                    pass
