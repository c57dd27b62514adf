"""start_server's --port and --path: parsing, binding, and SERVER_STARTER_PORT.

A program written for Server::Starter finds its sockets through
SERVER_STARTER_PORT="HOST:PORT=FD;PATH=FD;..." and expects each FD to be open
in its process at exactly that number; this module keeps both promises.
"""
import errno
import os
import re
import resource
import signal
import socket
from dataclasses import dataclass
from typing import Optional

from ..listeners import ListenError, ListenerSet, ListenSpec, Listener, bind

PORT_FORMS = "PORT, HOST:PORT or [V6]:PORT, 'u' before PORT for UDP, '=FD' after it to choose the fd"
_PORT_ONLY = re.compile(r"^\s*(u?)(\d+)(?:\s*=(\d+))?\s*$")
_HOST_PORT = re.compile(r"^\s*(?:\[\s*|)([^\]]*?)\s*(?:\]\s*|):\s*(u?)(\d+)(?:\s*=(\d+))?\s*$")


@dataclass
class PortSpec:
    text: str                  # as given, for messages
    kind: str                  # tcp | udp | unix
    host: str = ""             # tcp/udp
    port: int = 0
    path: str = ""             # unix, as given (SERVER_STARTER_PORT shows it so)
    fd: Optional[int] = None   # the child's fd number, when chosen with =FD
    port_only: bool = False    # '8080': bound on 0.0.0.0, named just '8080'

    @property
    def v6(self):
        return ":" in self.host

    def key(self, bound_port=None):
        """The name start_server gives the socket in SERVER_STARTER_PORT."""
        if self.kind == "unix":
            return self.path
        port = self.port or bound_port or 0     # port 0: name the one the kernel chose
        if self.port_only:
            return str(port)
        return "[%s]:%d" % (self.host, port) if self.v6 else "%s:%d" % (self.host, port)


def parse_port(text):
    m = _PORT_ONLY.match(text)
    port_only = bool(m)
    if m:
        udp, port, fd = m.groups()
        host = ""
    else:
        m = _HOST_PORT.match(text)
        if not m:
            raise ListenError("invalid --port %r: use %s" % (text, PORT_FORMS))
        host, udp, port, fd = m.groups()
    if int(port) > 65535:
        raise ListenError("invalid --port %r: the port must be 0 to 65535" % text)
    return PortSpec(text, "udp" if udp else "tcp", host, int(port),
                    fd=None if fd is None else int(fd), port_only=port_only)


def parse_path(text):
    if not text.strip():
        raise ListenError("empty --path: give the file name of a unix socket")
    return PortSpec(text, "unix", path=text)


def _bind_inet(spec, backlog):
    """Bind as start_server does: IPv4 unless the host is a bracketed IPv6 address."""
    socktype = socket.SOCK_DGRAM if spec.kind == "udp" else socket.SOCK_STREAM
    if spec.v6:
        family = socket.AF_INET6
        try:
            socket.inet_pton(family, spec.host)
        except OSError:
            raise ListenError("invalid --port %r: %r is not an IPv6 address" % (spec.text, spec.host))
        address = (spec.host, spec.port)
    else:
        family = socket.AF_INET
        try:
            host = socket.gethostbyname(spec.host) if spec.host else "0.0.0.0"
        except OSError as e:
            raise ListenError("invalid --port %r: cannot resolve %r: %s"
                              % (spec.text, spec.host, e.strerror or e))
        address = (host, spec.port)
    sock = socket.socket(family, socktype | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if spec.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if socktype == socket.SOCK_STREAM:
            sock.listen(backlog)
    except OSError as e:
        sock.close()
        hint = {errno.EADDRINUSE: "another process is listening there",
                errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
                errno.EADDRNOTAVAIL: "that address is not on this machine"}.get(e.errno, "check it")
        raise ListenError("cannot listen on --port %s: %s (%s)" % (spec.text.strip(), e.strerror, hint))
    return Listener(spec.key(sock.getsockname()[1]), sock, "bound")


def child_fd_numbers(specs):
    """The fd each socket gets in the child: =FD where chosen, else the lowest free from 3."""
    chosen = [s.fd for s in specs if s.fd is not None]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    for spec in specs:
        if spec.fd is not None and chosen.count(spec.fd) > 1:
            raise ListenError("fd %d chosen twice (--port %s): every socket needs its own fd"
                              % (spec.fd, spec.text.strip()))
        if spec.fd is not None and spec.fd >= limit - 2:
            raise ListenError("fd %d (--port %s) is above the open-files limit %d"
                              % (spec.fd, spec.text.strip(), limit))
    numbers, taken, candidate = [], set(chosen), 3
    for spec in specs:
        if spec.fd is not None:
            numbers.append(spec.fd)
            continue
        while candidate in taken:
            candidate += 1
        numbers.append(candidate)
        taken.add(candidate)
    return numbers


class ChildFds(dict):
    """{child fd: our fd}, and what else start_server's children inherit: SIGPIPE
    ignored (start_server ignores it, and an ignored signal stays so across exec)."""
    ignored_signals = (signal.SIGPIPE,)


class StarterListeners(ListenerSet):
    """Listeners laid out in the child at start_server's fd numbers, not at 3, 4, ..."""

    def __init__(self, listeners=None, targets=None):
        super().__init__(listeners)
        self.targets = list(targets or [])

    @classmethod
    def open_specs(cls, specs, backlog):
        targets = child_fd_numbers(specs)
        opened = cls([], targets)
        try:
            for spec in specs:
                if spec.kind == "unix":
                    path = os.path.abspath(spec.path)
                    # mode 0777: start_server binds under umask 0, so anyone may connect.
                    listener = bind(ListenSpec(spec.path, "unix", path=path), backlog, 0o777)
                else:
                    listener = _bind_inet(spec, backlog)
                opened.listeners.append(listener)
        except BaseException:
            opened.close(final=True)
            raise
        return opened

    @property
    def names(self):
        return []         # no LISTEN_FDS: start_server's children read SERVER_STARTER_PORT

    def fds(self):
        return ChildFds((target, l.fileno()) for target, l in zip(self.targets, self.listeners))

    def server_starter_port(self):
        return ";".join("%s=%d" % (l.name, target) for target, l in zip(self.targets, self.listeners))
