"""pyboss's own sockets in systemd's fd store, so that a pyboss killed and restarted by
Restart= gets them back: the listeners it bound itself, and its notify socket.

Stored fds come back in LISTEN_FDS/LISTEN_FDNAMES after the socket unit's, and nothing
else tells the two apart. So pyboss stores its own under names no socket unit uses and
no listener can have ('+' is not allowed in a listener name):

    pyboss+listener+NAME    a listener pyboss bound for --listen NAME=SPEC
    pyboss+notify           the NOTIFY_SOCKET pyboss gives its generations
    pyboss+state            a memfd with pyboss's state (supervisor/state.py)

A name without the "pyboss+" prefix is a socket unit's and is used as before. A stored
listener is reused when a --listen NAME= still asks for that very address and no socket
unit provides NAME; every other stored entry is stale: removed (FDSTOREREMOVE=1) and
closed. The name alone carries the meaning: no state file, and the order in which
systemd hands the fds back does not matter.
"""
import ipaddress
import os
import socket
import stat

from ..listeners import bind_address
from ..sd import address_text

PREFIX = "pyboss+"
LISTENER_PREFIX = PREFIX + "listener+"
NOTIFY_NAME = PREFIX + "notify"
STATE_NAME = PREFIX + "state"
FDNAME_MAX = 255        # systemd refuses longer FDNAME= values


def _is_socket_file(path):
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _peek(fd):
    """(family, type, address) of the socket on fd, or None; fd stays open and ours."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return sock.family, sock.type, sock.getsockname()
    except OSError:
        return None
    finally:
        sock.detach()


def matches(spec, fd):
    """Whether the stored socket on fd is what --listen spec asks for, and still reachable."""
    found = _peek(fd)
    if found is None:
        return False
    family, socktype, address = found
    if spec.kind == "unix":
        path = address_text(address)
        if family != socket.AF_UNIX or socktype != socket.SOCK_STREAM or path != spec.path:
            return False
        # A clean stop unlinks the file, and systemd removes a RuntimeDirectory= on
        # restart: a stored socket whose file is gone is unreachable, so bind again.
        return path.startswith("@") or _is_socket_file(path)
    want = socket.SOCK_DGRAM if spec.kind == "udp" else socket.SOCK_STREAM
    if family not in (socket.AF_INET, socket.AF_INET6) or socktype != want:
        return False
    if spec.port and address[1] != spec.port:
        return False        # port 0 (ephemeral): any port pyboss got last time will do
    try:
        bind_family, _, _, (host, *_) = bind_address(spec)
    except (OSError, UnicodeError):
        return False
    return bind_family == family and \
        ipaddress.ip_address(host.split("%")[0]) == ipaddress.ip_address(address[0].split("%")[0])


class FdStore:
    """Sorts what came in LISTEN_FDS, reuses pyboss's own stored sockets, stores the rest."""

    def __init__(self, upstream, log):
        self.upstream = upstream
        self.log = log
        self.stored = {}        # FDNAME -> [fd, ...] as systemd handed them back
        self.used = set()       # stored fds now owned by a listener or the notify socket

    def split(self, inherited):
        """[(fd, name)] from LISTEN_FDS -> the socket unit's; pyboss's own are kept aside."""
        theirs = []
        for fd, name in inherited:
            if name.startswith(PREFIX):
                self.stored.setdefault(name, []).append(fd)
            else:
                theirs.append((fd, name))
        return theirs

    def reusable(self, specs, theirs):
        """[(fd, NAME)] of stored listeners that --listen specs still ask for."""
        provided = {name for _, name in theirs}
        found = []
        for spec in specs:
            if spec.name in provided:
                continue        # the socket unit's wins; a stored one is stale
            stored = self.stored.get(LISTENER_PREFIX + spec.name, [])
            for fd in stored:
                if matches(spec, fd):
                    found.append((fd, spec.name))
                    self.used.add(fd)
                    break
            else:
                if stored:
                    self.log("fdstore-stale", "listener %s: the socket in the fd store is not "
                             "%s (any more), or its file is gone: binding again"
                             % (spec.name, spec), listener=spec.name)
        return found

    def adopt(self, listeners, specs):
        """Mark listeners that came back from the store as pyboss's own (origin bound)."""
        by_name = {spec.name: spec for spec in specs}
        for listener in listeners:
            if listener.fileno() not in self.used:
                continue
            listener.origin = "bound"
            spec = by_name[listener.name]
            if spec.kind == "unix" and not spec.path.startswith("@"):
                # pyboss created the file (an earlier pyboss, that is): a final stop removes it.
                listener.created_path = spec.path
                listener.created_inode = os.stat(spec.path).st_ino
            kind, address = listener.describe()
            self.log("fdstore-reused", "listener %s (%s %s) is back from the fd store"
                     % (listener.name, kind, address), listener=listener.name)

    def notify_receiver(self, receiver_class):
        """The stored notify socket, if its path still leads to it; else None."""
        for fd in self.stored.get(NOTIFY_NAME, []):
            found = _peek(fd)
            if not found or found[:2] != (socket.AF_UNIX, socket.SOCK_DGRAM):
                continue
            path = address_text(found[2])
            if not path or not (path.startswith("@") or _is_socket_file(path)):
                continue
            self.used.add(fd)
            receiver = receiver_class(sock=socket.socket(fileno=fd))
            if not path.startswith("@"):
                receiver.bound_path = path
                directory = os.path.dirname(path)
                if os.path.basename(directory).startswith(".pyboss-"):
                    receiver.private_dir = directory
            self.log("fdstore-reused", "notify socket %s is back from the fd store" % path)
            return receiver
        return None

    def state_fd(self):
        """The stored state memfd, or None."""
        for fd in self.stored.get(STATE_NAME, []):
            self.used.add(fd)
            return fd
        return None

    def drain(self, receiver, generations=()):
        """Read what queued while no pyboss ran; accept nothing from a stranger's pid."""
        ours = {gen.pid for gen in generations}
        for pid, fields, fds in receiver.receive():
            for fd in fds:
                os.close(fd)
            if pid not in ours:
                self.log("notify-rejected", "dropped a notify message queued from pid %d before "
                         "this pyboss started (%s): not one of its generations"
                         % (pid, " ".join(sorted(fields)) or "empty"), level="warning", pid=pid)

    def sync(self, listeners, notify, state_fd=None):
        """Remove stale entries, then store every listener pyboss bound, the notify socket
        and the state memfd."""
        wanted = {}
        for listener in listeners:
            if listener.origin == "bound":
                wanted[LISTENER_PREFIX + listener.name] = listener.fileno()
        if notify is not None:
            wanted[NOTIFY_NAME] = notify.fileno()
        if state_fd is not None:
            wanted[STATE_NAME] = state_fd
        for name, fds in self.stored.items():
            if fds != [wanted.get(name)]:
                # One entry under name, and the one in use: keep it (storing it again
                # below is a no-op). Anything else: FDSTOREREMOVE drops every entry
                # under that name, and what is still wanted is stored again below.
                self.upstream.send("FDSTOREREMOVE=1", "FDNAME=" + name)
                if name not in wanted:
                    self.log("fdstore-removed", "removed %s from the fd store: no --listen "
                             "asks for it any more" % name, level="warning")
            for fd in fds:
                if fd not in self.used:
                    os.close(fd)
        self.stored = {}
        if not self.upstream.active:
            return
        for name, fd in wanted.items():
            if len(name) > FDNAME_MAX:
                self.log("fdstore-skipped", "%s not stored: its name is longer than %d "
                         "characters" % (name, FDNAME_MAX), level="warning")
                continue
            self.upstream.send("FDSTORE=1", "FDNAME=" + name, fds=[fd])
