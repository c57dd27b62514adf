"""pyboss: a zero-downtime process supervisor, and the API for apps that run under it.

An app under pyboss (or under systemd socket activation directly) does::

    import pyboss
    sock = pyboss.listeners()[0]      # already bound and listening
    ...                               # start serving on it
    pyboss.ready()                    # now pyboss drains the previous generation
"""
import socket as _socket

from . import sd as _sd

__version__ = "0.1.0"
__all__ = ["listeners", "listener", "ready", "reloading", "stopping", "status",
           "NoListeners", "Boss"]

_inherited = None      # [(name, socket)], made once: two objects on one fd would close it twice


class NoListeners(LookupError):
    """The process was started without the listening sockets it asked for."""


def _sockets():
    global _inherited
    if _inherited is None:
        _inherited = [(name, _socket.socket(fileno=fd)) for fd, name in _sd.listen_fds()]
    return _inherited


def listeners(blocking=True):
    """The inherited listening sockets as socket.socket objects, in fd order (3, 4, ...).

    blocking=False makes them non-blocking first, as event loops such as Tornado's need:
    accept() then raises BlockingIOError when another generation took the connection
    instead of waiting. The flag belongs to the socket, so every process sharing it
    (every generation, pyboss) sees it; accepting code must expect BlockingIOError.
    Under pyboss --ready-probe the last one is the probe socket (named pyboss-probe):
    serve it like the others.
    """
    found = _sockets()
    if not found:
        raise NoListeners("no listening sockets were passed to this process: run it under "
                          "'pyboss exec --listen ...', from a systemd .socket unit, or with "
                          "systemd-socket-activate")
    if not blocking:
        for _, sock in found:
            sock.setblocking(False)
    return [sock for _, sock in found]


def listener(name):
    """The inherited listening socket called name (--listen NAME=..., FileDescriptorName=)."""
    found = _sockets()
    for sock_name, sock in found:
        if sock_name == name:
            return sock
    raise NoListeners("no listening socket named %r was passed to this process (passed: %s)"
                      % (name, ", ".join(n for n, _ in found) or "none"))


def _notify(message):
    # Like libsystemd's sd_notify(): a supervisor that went away is reported, never raised,
    # so an app keeps serving while pyboss restarts.
    try:
        return _sd.notify(message)
    except OSError:
        return False


def ready(status=None):
    """Tell the supervisor this process serves now.

    Returns True if the message was sent, False without NOTIFY_SOCKET or when the
    supervisor cannot be reached.
    """
    return _notify("READY=1" + ("\nSTATUS=" + status if status else ""))


def reloading():
    """Tell the supervisor this process is reloading its configuration."""
    return _notify("RELOADING=1\nMONOTONIC_USEC=%d" % _sd.monotonic_usec())


def stopping():
    """Tell the supervisor this process is shutting down."""
    return _notify("STOPPING=1")


def status(text):
    """A one-line status shown by 'pyboss status' (or systemctl status)."""
    return _notify("STATUS=" + text)


def __getattr__(name):
    # pyboss.Boss loads on first use: an app that only calls ready() imports nothing more.
    if name == "Boss":
        from .dropins.boss import Boss
        return Boss
    raise AttributeError("module 'pyboss' has no attribute %r" % name)
