"""Listen specs, binding, and the set of listening sockets pyboss holds."""
import errno
import os
import re
import socket
import stat

from .portholders import describe_holders
from .sd import address_text

SPEC_FORMS = ("PORT, HOST:PORT, [V6]:PORT, tcp://HOST:PORT, udp://HOST:PORT, "
              "unix:/PATH or unix:@NAME")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")


class ListenError(Exception):
    """A listener cannot be had; the message names the problem and the fix."""


class ListenSpec:
    """What --listen asked for: kind tcp | udp | unix; host "" means every address;
    a unix path starting with "@" is abstract."""
    __slots__ = ("name", "kind", "host", "port", "path")

    def __init__(self, name, kind, host="", port=0, path=""):
        self.name, self.kind, self.host, self.port, self.path = name, kind, host, port, path

    def __eq__(self, other):
        return isinstance(other, ListenSpec) and all(
            getattr(self, a) == getattr(other, a) for a in self.__slots__)

    def __hash__(self):
        return hash(tuple(getattr(self, a) for a in self.__slots__))

    def __repr__(self):
        return "ListenSpec(%s)" % ", ".join("%s=%r" % (a, getattr(self, a)) for a in self.__slots__)

    def __str__(self):
        if self.kind == "unix":
            return "unix:" + self.path
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.kind, host, self.port)


def parse_spec(text, default_name):
    """'[NAME=]SPEC' -> ListenSpec, or ListenError saying what is accepted."""
    name, spec = default_name, text.strip()
    head, sep, tail = spec.partition("=")
    if sep and _NAME.match(head):
        name, spec = head, tail
    elif sep and not spec.startswith("unix:"):
        raise ListenError("invalid listener name %r in %r: use letters, digits, '_', '.', '-'"
                          % (head, text))
    if spec.startswith("unix:"):
        path = spec[len("unix:"):]
        if not path or path == "@":
            raise ListenError("empty unix socket path in %r: use unix:/PATH or unix:@NAME" % text)
        if not path.startswith("@"):
            path = os.path.abspath(path)
        return ListenSpec(name, "unix", path=path)
    kind = "tcp"
    m = re.match(r"^(tcp|udp)://(.*)$", spec)
    if m:
        kind, spec = m.groups()
    m = re.match(r"^(?:\[([0-9A-Fa-f:.%\w]*)\]|([^\[\]:]*)):(\w+)$", spec) or \
        re.match(r"^()()(\d+)$", spec)
    if not m:
        raise ListenError("cannot parse listen spec %r: use %s" % (text, SPEC_FORMS))
    host = m.group(1) or m.group(2) or ""
    if host == "*":
        host = ""
    port = m.group(3)
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ListenError("invalid port %r in %r: use a number from 0 to 65535" % (port, text))
    return ListenSpec(name, kind, host=host, port=int(port))


def describe(sock):
    """(kind, address) of a live socket, as status shows it."""
    family, kind = sock.family, sock.type
    addr = sock.getsockname()
    if family == socket.AF_UNIX:
        addr = address_text(addr)
        return ("unix" if kind == socket.SOCK_STREAM else "unix-dgram"), addr or "(unnamed)"
    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    if family == socket.AF_INET6:
        return proto, "[%s]:%d" % (addr[0], addr[1])
    return proto, "%s:%d" % (addr[0], addr[1])


class Listener:
    """One listening socket; origin is "bound" (by pyboss) or "inherited"."""

    def __init__(self, name, sock, origin, created_path=None, created_inode=None):
        self.name, self.sock, self.origin = name, sock, origin
        # A unix socket file pyboss created, removed on the final stop if still the same.
        self.created_path, self.created_inode = created_path, created_inode

    def fileno(self):
        return self.sock.fileno()

    def describe(self):
        return describe(self.sock)

    def as_dict(self):
        kind, address = self.describe()
        return {"name": self.name, "kind": kind, "address": address, "origin": self.origin}


def bind_address(spec):
    """(family, socktype, proto, sockaddr) that a tcp/udp spec binds; socket.gaierror if
    its host does not resolve. The fd store asks the same to recognise a stored socket."""
    socktype = socket.SOCK_DGRAM if spec.kind == "udp" else socket.SOCK_STREAM
    infos = socket.getaddrinfo(spec.host or None, spec.port, socket.AF_UNSPEC, socktype, 0,
                               socket.AI_PASSIVE)
    if not spec.host and socket.has_ipv6:
        # Every address, both families on one socket, as systemd's ListenStream=PORT does.
        infos.sort(key=lambda info: info[0] != socket.AF_INET6)
    family, _, proto, _, sockaddr = infos[0]
    return family, socktype, proto, sockaddr


def _tcp_or_udp(spec, backlog):
    host = spec.host or None
    try:
        family, socktype, proto, sockaddr = bind_address(spec)
    except socket.gaierror as e:
        raise ListenError("cannot resolve %r for %s: %s" % (spec.host, spec, e.strerror))
    sock = socket.socket(family, socktype | socket.SOCK_CLOEXEC, proto)
    try:
        if family == socket.AF_INET6 and host is None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if socktype == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        if socktype == socket.SOCK_STREAM:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _clear_stale_unix(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError("cannot listen on unix:%s: the path exists and is not a socket; "
                          "remove it or choose another path" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)    # nobody listens there: a leftover from a crash
        return
    except OSError:
        return             # let bind() report what is wrong
    finally:
        probe.close()
    raise ListenError("cannot listen on unix:%s: another process is serving it; stop it "
                      "or choose another path" % path)


def _unix(spec, backlog, mode):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if spec.path.startswith("@"):
            sock.bind("\0" + spec.path[1:])
        else:
            _clear_stale_unix(spec.path)
            # Bind under a tight umask so the socket is never reachable with wider rights.
            old = os.umask(0o177) if mode is not None else None
            try:
                sock.bind(spec.path)
            finally:
                if old is not None:
                    os.umask(old)
            if mode is not None:
                os.chmod(spec.path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(spec, backlog=socket.SOMAXCONN, mode=None):
    """Bind and listen as spec says; errors become one-line ListenErrors."""
    try:
        if spec.kind == "unix":
            sock = _unix(spec, backlog, mode)
        else:
            sock = _tcp_or_udp(spec, backlog)
    except ListenError:
        raise
    except OSError as e:
        hint = {
            errno.EADDRINUSE: "another process is listening there; stop it or choose another port",
            errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE; for a path, "
                          "check the directory's permissions",
            errno.EADDRNOTAVAIL: "that address is not on this machine",
            errno.ENOENT: "the directory does not exist",
        }.get(e.errno, "check the address")
        if e.errno == errno.EADDRINUSE and spec.kind != "unix":
            held = describe_holders(spec.kind, spec.port)
            if held:
                hint = held + "; stop it or choose another port"
        raise ListenError("cannot listen on %s: %s (%s)" % (spec, e.strerror, hint))
    listener = Listener(spec.name, sock, "bound")
    if spec.kind == "unix" and not spec.path.startswith("@"):
        listener.created_path = spec.path
        listener.created_inode = os.stat(spec.path).st_ino
    return listener


def adopt(fd, name):
    """Wrap an inherited fd, refusing anything that is not a socket we can serve on."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ListenError("inherited fd %d (%s) is not a socket: check the socket unit or "
                              "the LISTEN_FDS of whoever started pyboss" % (fd, name))
    except OSError as e:
        raise ListenError("inherited fd %d (%s) is not open: %s" % (fd, name, e.strerror))
    return Listener(name, socket.socket(fileno=fd), "inherited")


class ListenerSet:
    """The sockets every generation gets, in the order they get them (fd 3, 4, ...)."""

    def __init__(self, listeners=None):
        self.listeners = list(listeners or [])

    @classmethod
    def open(cls, specs, inherited=(), backlog=socket.SOMAXCONN, mode=None):
        """Adopt inherited fds (a spec with the same name reuses one), bind the rest.

        On any error everything opened so far is closed again: nothing is left behind.
        """
        opened, by_name, claimed = [], {}, []
        try:
            for fd, name in inherited:
                listener = adopt(fd, name)
                by_name.setdefault(name, listener)
                opened.append(listener)
            for spec in specs:
                listener = by_name.pop(spec.name, None) or bind(spec, backlog, mode)
                if listener not in opened:
                    opened.append(listener)
                claimed.append(listener)
        except BaseException:
            cls(opened).close(final=True)
            raise
        # Unclaimed inherited sockets first (fd order), then the --listen ones in order.
        return cls([l for l in opened if l not in claimed] + claimed)

    def __iter__(self):
        return iter(self.listeners)

    def __len__(self):
        return len(self.listeners)

    @property
    def names(self):
        return [l.name for l in self.listeners]

    def fds(self):
        return [l.fileno() for l in self.listeners]

    def close(self, final=True):
        """Close every socket; on a final stop, remove the unix files pyboss created."""
        for listener in self.listeners:
            if final and listener.created_path:
                try:
                    if os.stat(listener.created_path).st_ino == listener.created_inode:
                        os.unlink(listener.created_path)
                except OSError:
                    pass
            listener.sock.close()
        self.listeners = []
