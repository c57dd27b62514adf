"""Hand-off from the command line to a lean supervisor process, and from one supervisor
image to the next.

`pyboss exec` parses its options with click and opens every socket, so that bad input
is reported before anything runs. It then exec()s this module in the same process
(the pid, and so systemd's MAINPID, stays) with the sockets inherited: the supervisor
that runs for months carries neither click nor the unit tools in its memory.

`pyboss upgrade` (upgrade.py) goes through the same door: the running supervisor
exec()s this module of the pyboss installed now, handing over its generations too.
"""
import json
import os
import signal
import socket
import sys

from .. import __version__
from . import state as saved
from .control import Connection, ControlServer
from ..listeners import Listener, ListenerSet
from .log import EventLog
from ..sd import NotifyReceiver
from .core import Supervisor
from .settings import Settings
from .reaper import become_subreaper, inherited_subreaper
from .upgrade import Upgrader, package_parent

HANDOFF = "PYBOSS_HANDOFF"
CODE = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from pyboss.supervisor.supervise import main; main()")


def _inherit(sock):
    os.set_inheritable(sock.fileno(), True)
    return sock.fileno()


def handoff_state(settings, listeners, control, notify, quiet, store=None, adopt=None,
                  upstream=None, metrics=None):
    """Everything the next supervisor image needs, as JSON-able data (fds inherited);
    metrics: the listening socket of --metrics, if any."""
    return {
        "metrics": None if metrics is None else _inherit(metrics),
        "settings": settings.as_dict(), "quiet": quiet,
        "listeners": [{"fd": _inherit(l.sock), "name": l.name, "origin": l.origin,
                       "created_path": l.created_path, "created_inode": l.created_inode}
                      for l in listeners],
        "control": {"fd": _inherit(control.sock), "path": control.path,
                    "inode": control.inode, "created_dirs": control.created_dirs},
        "notify": {"fd": _inherit(notify.sock), "bound_path": notify.bound_path,
                   "private_dir": notify.private_dir},
        "store": store.handoff() if store is not None else None,
        "adopt": adopt, "upstream": upstream,
        # Made so here, before the exec(): the kernel keeps it, and the image need not
        # load ctypes to make it so again.
        "subreaper": become_subreaper(),
    }


def exec_supervisor(state):
    """exec() this module's main() with state; returns only if exec() failed."""
    os.environ[HANDOFF] = json.dumps(state)
    had_notify = "NOTIFY_SOCKET" in os.environ
    if state.get("upstream"):
        os.environ["NOTIFY_SOCKET"] = state["upstream"]
    try:
        os.execv(sys.executable, [sys.executable, "-c", CODE, package_parent(),
                                  "pyboss-exec", state["settings"]["name"]])
    finally:
        del os.environ[HANDOFF]
        if not had_notify:
            os.environ.pop("NOTIFY_SOCKET", None)


def hand_off(settings, listeners, control, notify, quiet, store=None, adopt=None,
             after_crash=False, sweep=False, metrics=None):
    """exec() the supervisor; returns only if that is impossible (then run it here)."""
    state = handoff_state(settings, listeners, control, notify, quiet, store, adopt,
                          metrics=metrics)
    state.update(after_crash=after_crash, sweep=sweep)
    try:
        exec_supervisor(state)
    except OSError:
        return supervise(settings, listeners, control, notify, EventLog(settings.name, quiet),
                         quiet, store, adopt, after_crash, sweep, metrics=metrics).exit_code


def supervise(settings, listeners, control, notify, log, quiet, store=None, adopt=None,
              after_crash=False, sweep=False, upgrade=None, metrics=None):
    """Run the supervisor to the end (saving its state, adopting, upgradable); returns it."""
    supervisor = Supervisor(settings, listeners, control, notify, log)
    if store is not None:
        supervisor.idle_hooks.append(saved.Persistence(supervisor, store))
        shutdown = supervisor.shutdown

        def forget_then_shut_down(**how):
            # Stopped for good: nothing to adopt, and the control socket's directory, if
            # pyboss made it, must be empty. Generations abandoned by a failing pyboss
            # stay recorded: the next pyboss adopts them.
            if not supervisor.generations():
                store.remove()
            shutdown(**how)
        supervisor.shutdown = forget_then_shut_down

    def next_image():
        return handoff_state(settings, supervisor.listeners, control, notify, quiet, store,
                             saved.snapshot(supervisor), supervisor.upstream.socket_path,
                             metrics)
    upgrader = Upgrader(supervisor, next_image, exec_supervisor)
    serve = supervisor.on_request               # `pyboss upgrade` comes in beside the rest
    control.handler = lambda conn, request: upgrader.request(conn) \
        if request["command"] == "upgrade" else serve(conn, request)
    supervisor.SIGNALS += (signal.SIGUSR2,)             # the same, as with nginx and HAProxy
    supervisor.handle_SIGUSR2 = lambda: upgrader.request(None)
    supervisor.idle_hooks.append(upgrader)
    adopted = []
    if adopt is not None or sweep:
        # Only then: a supervisor that adopts nothing does not carry the code for it.
        from . import adopt as adoption
        from .restore import restore
        from ..systemd import cgroup
    if adopt is not None:
        changed = adoption.difference(adopt, settings.argv, listeners.names)
        if changed:
            log("adopt-changed", "%s: draining what the earlier pyboss left, starting afresh"
                % changed, level="warning")
        adopted = restore(supervisor, adopt, after_crash, bool(changed))
    if sweep:
        # Not pyboss, nor what started it (a shell ExecStart=), nor what it adopted.
        ours = adoption.ancestors() | {worker.pid for worker in adopted}
        adoption.strays(supervisor, [pid for pid in cgroup.processes() if pid not in ours
                                     and supervisor.owner_of(pid)[0] is None])
    if upgrade is not None:
        replies = [Connection(socket.socket(fileno=fd), None) for fd in upgrade["replies"]]
        for conn in replies:
            os.set_inheritable(conn.fileno(), False)
        log("upgraded", "pyboss %s took over from pyboss %s" % (__version__, upgrade["from"]))
        answer = {"ok": True, "version": __version__, "previous": upgrade["from"],
                  "pid": os.getpid()}
        supervisor.call_later(0, lambda: [conn.reply(answer) for conn in replies])
    export = None
    if metrics is not None or settings.metrics_textfile:
        from .metrics_export import MetricsExport     # only then: the supervisor stays small
        export = MetricsExport(supervisor, metrics, settings.metrics_textfile)
    try:
        supervisor.run()
    finally:
        if export is not None:
            export.close()
    return supervisor


def _adopt(fd):
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def check_handoff():
    """The trial run of `pyboss upgrade`: can this pyboss take over from the state on
    stdin? Exit status 0 and the version on stdout if so."""
    state = json.load(sys.stdin)
    snapshot = state.get("adopt") or {}
    if saved.readable(snapshot) is None:
        sys.exit("state format %r, this pyboss reads %s" % (
            snapshot.get("format"), " and ".join(map(str, saved.READABLE))))
    Settings(**state["settings"])
    print(__version__)


def main():
    state = json.loads(os.environ.pop(HANDOFF))
    if state.get("subreaper"):
        inherited_subreaper()
    listeners = ListenerSet([Listener(l["name"], _adopt(l["fd"]), l["origin"],
                                      l["created_path"], l["created_inode"])
                             for l in state["listeners"]])
    c = state["control"]
    control = ControlServer.adopt(_adopt(c["fd"]), c["path"], c["inode"], c["created_dirs"])
    n = state["notify"]
    notify = NotifyReceiver(sock=_adopt(n["fd"]), private_dir=n["private_dir"])
    notify.bound_path = n["bound_path"]
    settings = Settings(**state["settings"])
    log = EventLog(settings.name, state["quiet"])
    supervisor = supervise(settings, listeners, control, notify, log, state["quiet"],
                           saved.from_handoff(state.get("store")),
                           saved.readable(state.get("adopt")),
                           state.get("after_crash", False), state.get("sweep", False),
                           state.get("upgrade"),
                           None if state.get("metrics") is None else _adopt(state["metrics"]))
    if supervisor.fatal and supervisor.exit_code == 2:
        sys.stderr.write("pyboss exec: %s\n" % supervisor.fatal)
    sys.exit(supervisor.exit_code)
