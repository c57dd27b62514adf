"""Hand-off from the command line to a lean supervisor process.

`pyboss exec` parses its options with click and opens every socket, so that bad input
is reported before anything runs. It then exec()s this module in the same process
(the pid, and so systemd's MAINPID, stays) with the sockets inherited: the supervisor
that runs for months carries neither click nor the unit tools in its memory.
"""
import json
import os
import socket
import sys

from .control import ControlServer
from ..listeners import Listener, ListenerSet
from .log import EventLog
from ..sd import NotifyReceiver
from .core import Supervisor
from .settings import Settings

HANDOFF = "PYBOSS_HANDOFF"


def _inherit(sock):
    os.set_inheritable(sock.fileno(), True)
    return sock.fileno()


def hand_off(settings, listeners, control, notify, quiet, metrics=None):
    """exec() the supervisor; returns only if that is impossible (then run it here).

    metrics: the listening socket of --metrics, if any."""
    state = {
        "metrics": None if metrics is None else _inherit(metrics),
        "settings": settings.as_dict(), "quiet": quiet,
        "listeners": [{"fd": _inherit(l.sock), "name": l.name, "origin": l.origin,
                       "created_path": l.created_path, "created_inode": l.created_inode}
                      for l in listeners],
        "control": {"fd": _inherit(control.sock), "path": control.path,
                    "inode": control.inode, "created_dirs": control.created_dirs},
        "notify": {"fd": _inherit(notify.sock), "bound_path": notify.bound_path,
                   "private_dir": notify.private_dir},
    }
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ[HANDOFF] = json.dumps(state)
    code = "import sys; sys.path.insert(0, sys.argv.pop(1)); from pyboss.supervisor.supervise import main; main()"
    try:
        os.execv(sys.executable, [sys.executable, "-c", code, package_parent,
                                  "pyboss-exec", settings.name])
    except OSError:
        del os.environ[HANDOFF]
        return run(Supervisor(settings, listeners, control, notify,
                              EventLog(settings.name, quiet)), metrics)


def run(supervisor, metrics=None):
    """Run the supervisor, exporting its metrics if asked to."""
    export = None
    if metrics is not None or supervisor.settings.metrics_textfile:
        from .metrics_export import MetricsExport     # only then: the supervisor stays small
        export = MetricsExport(supervisor, metrics, supervisor.settings.metrics_textfile)
    try:
        return supervisor.run()
    finally:
        if export is not None:
            export.close()


def _adopt(fd):
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def main():
    state = json.loads(os.environ.pop(HANDOFF))
    listeners = ListenerSet([Listener(l["name"], _adopt(l["fd"]), l["origin"],
                                      l["created_path"], l["created_inode"])
                             for l in state["listeners"]])
    c = state["control"]
    control = ControlServer.adopt(_adopt(c["fd"]), c["path"], c["inode"], c["created_dirs"])
    n = state["notify"]
    notify = NotifyReceiver(sock=_adopt(n["fd"]), private_dir=n["private_dir"])
    notify.bound_path = n["bound_path"]
    settings = Settings(**state["settings"])
    supervisor = Supervisor(settings, listeners, control, notify,
                            EventLog(settings.name, state["quiet"]))
    metrics = None if state["metrics"] is None else _adopt(state["metrics"])
    code = run(supervisor, metrics)
    if supervisor.fatal and code == 2:
        sys.stderr.write("pyboss exec: %s\n" % supervisor.fatal)
    sys.exit(code)
