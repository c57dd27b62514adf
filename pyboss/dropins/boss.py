"""pyboss.Boss: a program that supervises itself (in the manner of littleboss).

    boss = pyboss.Boss("myblog")
    http = boss.listener("http", "tcp", ":8080", help="where to serve the blog")

    def main(handle):
        serve(http.socket())              # already bound and listening
        handle.ready()                    # pyboss retires the previous version now
        handle.wait()                     # until told to stop
        return 0

    boss.run(main)

The program gains --pyboss=bypass|start|reload|stop|status (bypass, the default,
runs main directly) and one option per listener (--http=127.0.0.1:9090, or
--http=fd:3 to adopt an inherited socket). Boss takes its options out of sys.argv
as they are declared, so declare the Boss and its listeners before the program
parses its own options with argparse or click.
"""
import os
import re
import signal
import socket
import sys
import threading

from .. import sd
from .boss_exits import EXIT_ALREADY_RUNNING, EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE  # noqa: F401

MODES = ("bypass", "start", "reload", "stop", "status")
KINDS = ("tcp", "udp", "unix")

class BossUsageError(Exception):
    """Bad --pyboss or listener option: one line, exit status 2."""


def _take_option(argv, name):
    """Remove --name=VALUE or --name VALUE from argv (before any '--'); the last value wins."""
    flag, value, i = "--" + name, None, 1
    while i < len(argv) and argv[i] != "--":
        arg = argv[i]
        if arg == flag:
            if i + 1 >= len(argv):
                del argv[i]           # reported by Boss.run, not by the program's own parser
                raise BossUsageError("%s needs a value" % flag)
            value = argv[i + 1]
            del argv[i:i + 2]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
            del argv[i]
        else:
            i += 1
    return value


class Listener:
    """A socket the program serves on; its address can be overridden by --NAME."""

    def __init__(self, name, kind, address, help):
        self.name, self.kind, self.address, self.help = name, kind, address, help
        self._socket = None

    def spec(self):
        """The listen spec pyboss binds: the address, in the listener's kind."""
        text = self.address
        if text.startswith(("tcp://", "udp://", "unix:")):
            return text
        if self.kind == "unix":
            return "unix:" + text
        return ("udp://" if self.kind == "udp" else "") + text

    def socket(self):
        """The listening socket (bound, or inherited from the supervisor or systemd)."""
        if self._socket is None:
            raise RuntimeError("listener %r has no socket before Boss.run() calls main"
                               % self.name)
        return self._socket


class Handle:
    """What main gets: when to stop, its sockets, and how to say it serves."""

    def __init__(self, boss, mode):
        self.boss = boss
        self.mode = mode            # "bypass" or "child" (a generation under pyboss)
        self.generation = int(os.environ.get("PYBOSS_GENERATION", "0") or 0)
        self.stop = threading.Event()
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def socket(self, name):
        return self.boss.listeners[name].socket()

    @property
    def stopping(self):
        return self.stop.is_set()

    def wait(self, timeout=None):
        """Block until the program should stop (True), or timeout passed (False)."""
        return self.stop.wait(timeout)

    def fileno(self):
        """Readable once the program should stop: put it in a selector with the sockets."""
        return self._stop_r

    def ready(self, status=None):
        """Serving now: the supervisor drains the previous version. A no-op in bypass."""
        return sd.notify("READY=1" + ("\nSTATUS=" + status if status else ""))

    def _request_stop(self):
        if not self.stop.is_set():
            self.stop.set()
            try:
                os.write(self._stop_w, b"x")
            except OSError:
                pass


def _watch_signals(handle):
    """Set handle.stop on SIGTERM/SIGINT, whichever thread the kernel picked.

    The main thread may sleep in handle.wait() (a lock): the Python-level handler
    would only run once it woke. The wakeup fd is written by the C-level handler
    at once, and a thread reading it sets the event, which wakes any waiter.
    """
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(wake_w, False)
    stopping = {signal.SIGTERM, signal.SIGINT}
    for signum in stopping:
        signal.signal(signum, lambda *_: handle._request_stop())
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    def watch():
        while True:
            data = os.read(wake_r, 64)
            if not data or any(b in stopping for b in data):
                handle._request_stop()
                return
    threading.Thread(target=watch, name="pyboss-signals", daemon=True).start()


class Boss:
    def __init__(self, name, ready_timeout=60.0, drain_timeout=30.0, stop_timeout=30.0,
                 argv=None):
        if not re.match(r"^[A-Za-z0-9_@\-][A-Za-z0-9_.@\-]{0,63}$", name or ""):
            raise ValueError("Boss name %r: use up to 64 letters, digits, '_', '-', '.', '@', "
                             "not starting with '.' (it names the control socket)" % name)
        self.name = name
        self.ready_timeout, self.drain_timeout, self.stop_timeout = \
            ready_timeout, drain_timeout, stop_timeout
        self.argv = sys.argv if argv is None else argv     # edited in place
        self.original_argv = list(self.argv)
        self.listeners = {}
        self.errors = []
        self._bound = []
        try:
            self.mode = _take_option(self.argv, "pyboss") or "bypass"
        except BossUsageError as e:
            self.errors.append(str(e))
            self.mode = "bypass"
        if self.mode not in MODES + ("child",):
            self.errors.append("invalid --pyboss %r: use %s" % (self.mode, ", ".join(MODES)))

    def listener(self, name, kind, address, help=None):
        """Declare a socket; --NAME=ADDRESS on the command line overrides address."""
        if kind not in KINDS:
            raise ValueError("listener kind must be one of %s, not %r" % (", ".join(KINDS), kind))
        if name in self.listeners or name == "pyboss":
            raise ValueError("listener name %r is taken" % name)
        try:
            address = _take_option(self.argv, name) or address
        except BossUsageError as e:
            self.errors.append(str(e))
        listener = Listener(name, kind, address, help)
        self.listeners[name] = listener
        return listener

    def usage(self):
        """The options Boss adds, for an argparse epilog or a --help text."""
        lines = ["pyboss options:",
                 "  --pyboss=MODE   bypass (default: run directly), start (run supervised),",
                 "                  reload (replace the running one with this program),",
                 "                  stop, status"]
        for l in self.listeners.values():
            lines.append("  --%s=ADDRESS   %s (default %s; fd:N adopts an inherited socket)"
                         % (l.name, l.help or "%s listener" % l.kind, l.address))
        return "\n".join(lines)

    def fail(self, message, code):
        sys.stderr.write("%s: %s\n" % (self.name, message))
        sys.stderr.flush()
        raise SystemExit(code)

    def run(self, main):
        """Run main as --pyboss says; never returns (raises SystemExit with the status)."""
        if self.errors:
            self.fail(self.errors[0], EXIT_USAGE)
        if self.mode in ("bypass", "child"):
            raise SystemExit(self.run_main(main))
        from . import boss_supervisor
        raise SystemExit(getattr(boss_supervisor, self.mode)(self))

    def run_main(self, main):
        handle = Handle(self, self.mode)
        try:
            self.open_sockets()
        except BossUsageError as e:
            self.fail(str(e), EXIT_USAGE)
        _watch_signals(handle)
        try:
            code = main(handle)
        finally:
            for bound in self._bound:
                bound.close(final=True)       # unix socket files this process created
        return EXIT_OK if code is None else code

    def open_sockets(self):
        """Bypass: bind (or adopt fd:N / systemd's named fds). Child: the supervisor's fds."""
        from ..listeners import ListenError, ListenerSet, adopt, parse_spec
        inherited = {name: fd for fd, name in sd.listen_fds(unset=True)}
        for l in self.listeners.values():
            try:
                if l.name in inherited:
                    l._socket = socket.socket(fileno=inherited.pop(l.name))
                elif self.mode == "child":
                    raise BossUsageError("the supervisor passed no socket named %r" % l.name)
                elif l.address.startswith("fd:") and l.address[3:].isdigit():
                    l._socket = adopt(int(l.address[3:]), l.name).sock
                else:
                    bound = ListenerSet.open([parse_spec(l.spec(), l.name)])
                    self._bound.append(bound)
                    l._socket = bound.listeners[0].sock
            except ListenError as e:
                raise BossUsageError("--%s: %s" % (l.name, e))

    def child_command(self, mode="child"):
        """How to run this very program again, as a child of the supervisor."""
        args = self.argv[1:]
        orig = getattr(sys, "orig_argv", None)
        if orig and len(orig) >= len(self.original_argv):
            prefix = list(orig[:len(orig) - (len(self.original_argv) - 1)])
            prefix[0] = sys.executable
        else:
            prefix = [sys.executable, os.path.abspath(self.original_argv[0])]
        # Right after the program's name: an argument '--' of the program ends option parsing.
        return prefix + ["--pyboss=" + mode] + list(args)
