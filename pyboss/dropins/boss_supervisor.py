"""--pyboss=start|reload|stop|status: the supervisor side of pyboss.Boss.

start runs the core supervisor with this very program (--pyboss=child) as its
generations. reload, run from any version of the program (another file too),
sends that version's command line and working directory with the reload
request; the supervisor starts it next to the serving one and retires the old
one only once the new one called handle.ready(). A new version that fails
leaves the old one serving, and the next crash respawn uses the old command.

Exit statuses: 0 done; 1 the reload failed or the supervisor gave up; 2 bad
usage or a socket that cannot be had; 3 no supervisor of that name is running
(reload, stop, status) or one already is (start).
"""
import os
import signal

from .boss_exits import EXIT_ALREADY_RUNNING, EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from ..supervisor.control import (ControlError, ControlServer, NotRunning, control_path,
                                  open_notify_socket, request)
from ..supervisor.status_text import format_status
from ..supervisor.core import Supervisor


class BossSupervisor(Supervisor):
    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)   # one worker: no TTIN/TTOU
    def __init__(self, settings, listeners, control, notify, log, cwd):
        super().__init__(settings, listeners, control, notify, log)
        self.command = (list(settings.argv), cwd)   # the serving version's; respawns use it
        self.requested = None         # the newest reload's (argv, cwd), until spawned
        self.spawned = None           # what the pending generation runs

    def request_reload(self, waiter=None):
        request_ = (waiter.request if waiter is not None else None) or {}
        argv, cwd = request_.get("argv"), request_.get("cwd")
        if argv is not None:
            if not (isinstance(argv, list) and argv and isinstance(cwd, str)
                    and all(isinstance(a, str) for a in argv)):
                return waiter.reply({"ok": False, "error": "malformed reload request: argv must "
                                     "be a list of strings and cwd a string"})
            self.requested = (argv, cwd)   # coalesced reloads run the newest version
        super().request_reload(waiter)

    def spawn(self, purpose):
        argv, cwd = self.requested or self.command
        self.requested = None
        self.spawned = (argv, cwd)
        self.settings.argv = argv
        here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                os.chdir(cwd)         # fork inherits it: the new version runs where it was run
            except OSError as e:
                self.log("chdir-failed", "cannot enter %s: %s" % (cwd, e.strerror), level="warning")
            super().spawn(purpose)
        finally:
            os.fchdir(here)
            os.close(here)

    def promote(self, gen):
        if gen is self.pending:
            self.command = self.spawned
        super().promote(gen)

    def pending_failed(self, gen):
        self.settings.argv = self.command[0]
        super().pending_failed(gen)


def _status(path):
    try:
        return request(path, {"command": "status"}, timeout=10)
    except ControlError:
        return None


def _ask(boss, message):
    path = control_path(boss.name)
    try:
        return request(path, message)
    except NotRunning:
        boss.fail("no supervisor named %r is running (control socket %s): start one with "
                  "--pyboss=start" % (boss.name, path), EXIT_NOT_RUNNING)
    except ControlError as e:
        boss.fail(str(e), EXIT_FAILED)


def start(boss):
    from ..listeners import ListenError, ListenerSet, parse_spec
    from ..supervisor.log import EventLog
    from .. import sd
    from ..supervisor.settings import Settings
    path = control_path(boss.name)
    running = _status(path)
    if running is not None:
        boss.fail("already running under supervisor pid %s (control socket %s): use "
                  "--pyboss=reload or --pyboss=stop" % (running.get("pid"), path),
                  EXIT_ALREADY_RUNNING)
    try:
        control = ControlServer(path)
    except ControlError as e:
        boss.fail(str(e), EXIT_ALREADY_RUNNING if "already running" in str(e) else EXIT_USAGE)
    try:
        inherited, specs = sd.listen_fds(unset=True), []
        for l in boss.listeners.values():
            if l.address.startswith("fd:") and l.address[3:].isdigit():
                inherited.append((int(l.address[3:]), l.name))
            else:
                specs.append(parse_spec(l.spec(), l.name))
        listeners = ListenerSet.open(specs, inherited)
    except ListenError as e:
        control.close()
        boss.fail(str(e), EXIT_USAGE)
    try:
        notify = open_notify_socket(os.path.dirname(path))
    except ControlError as e:
        listeners.close(final=True)
        control.close()
        boss.fail(str(e), EXIT_USAGE)
    settings = Settings(boss.child_command(), boss.name, ready_timeout=boss.ready_timeout,
                        drain_timeout=boss.drain_timeout, stop_timeout=boss.stop_timeout)
    supervisor = BossSupervisor(settings, listeners, control, notify, EventLog(boss.name),
                                os.getcwd())
    code = supervisor.run()
    if supervisor.fatal and code == EXIT_USAGE:
        boss.fail(supervisor.fatal, code)
    return code


def reload(boss):
    reply = _ask(boss, {"command": "reload", "wait": True, "argv": boss.child_command(),
                        "cwd": os.getcwd()})
    if not reply.get("ok"):
        boss.fail("reload failed: %s" % reply.get("error"), EXIT_FAILED)
    print("%s: reloaded: generation %d (pid %d) serving" % (boss.name, reply["generation"],
                                                             reply["pid"]))
    return EXIT_OK


def stop(boss):
    reply = _ask(boss, {"command": "stop"})
    if not reply.get("ok"):
        boss.fail("the supervisor exited with status %s: %s"
                  % (reply.get("exit_code"), reply.get("error")), EXIT_FAILED)
    return EXIT_OK


def status(boss):
    reply = _ask(boss, {"command": "status"})
    print(format_status(reply))
    return EXIT_OK
