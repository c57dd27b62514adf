"""`pyboss sweep`: ExecStopPost= of units with KillMode=process.

KillMode=process keeps the app running when pyboss dies (systemd kills only the main
process), so that the pyboss Restart= starts adopts it. The price: when the unit is
stopped while pyboss is dead, systemd leaves the app behind. This command, run by
systemd after every stop of the main process, tells the two cases apart:

- $SERVICE_RESULT=success (pyboss stopped cleanly), or a stop job is queued for the
  unit: the unit is going down; whatever still runs in its cgroup gets SIGTERM, then
  SIGKILL after --timeout. Usually nothing is left: pyboss stopped its generations.
- otherwise pyboss died and Restart= is about to start the next one: leave the
  generations running for it to adopt. A stop can still come while systemd waits
  RestartSec= (state auto-restart); it then drops the restart and runs nothing more.
  So a watcher is left behind, in a transient unit of its own (systemd-run). That unit
  has StopPropagatedFrom= and After= the service: a stop of the service stops the
  watcher too, and first, so the watcher stops the app before the stop job of the
  service completes, and nothing is left once `systemctl stop` returns. Once the unit
  leaves auto-restart otherwise, the watcher exits if a pyboss started, and sweeps if
  the unit is dead.
"""
import os
import select
import signal
import subprocess
import sys
import time

import click


from ..errors import UserError
from ..options import SECONDS
from ..supervisor.adopt import ancestors
from ..systemd import cgroup


def unit_of(directory):
    return os.path.basename(directory.rstrip("/")) if directory else None


def stop_queued(unit):
    """Whether systemd has a stop job for unit (a stop that reached a dead pyboss)."""
    try:
        out = subprocess.run(["systemctl", "list-jobs", "--no-legend", "--plain", "--no-pager"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return True     # cannot ask: a stray app is worse than a restart without adoption
    return any(line.split()[1:3] == [unit, "stop"] for line in out.splitlines()
               if len(line.split()) >= 3)


def terminate(pids, timeout):
    """SIGTERM pids, SIGKILL what is left after timeout; returns how many were killed."""
    pidfds = {}
    for pid in pids:
        try:
            pidfds[pid] = os.pidfd_open(pid)
            signal.pidfd_send_signal(pidfds[pid], signal.SIGTERM)
        except OSError:
            pidfds.pop(pid, None)
    deadline = time.monotonic() + timeout
    while pidfds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pidfds.values()), [], [], deadline - time.monotonic())
        for pid in [p for p, fd in pidfds.items() if fd in ready]:
            os.close(pidfds.pop(pid))
    for pid, fd in pidfds.items():
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        os.close(fd)
    return len(pidfds)


WAITING_STATES = ("stop-sigterm", "stop-sigkill", "stop-post", "final-sigterm",
                  "final-sigkill", "auto-restart", "deactivating")
WATCH_POLL = 0.1
WATCH_LIMIT = 3600.0


def sub_state(unit):
    try:
        return subprocess.run(["systemctl", "show", "-P", "SubState", unit], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def exec_line(argv):
    """argv as one command line of a unit file (as systemd-run's --property= parses it)."""
    return " ".join('"%s"' % a.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
                    for a in argv)


def start_watcher(unit, directory, timeout):
    """A transient unit that sweeps directory if unit ends up dead instead of restarted."""
    parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = "import sys; sys.path.insert(0, sys.argv.pop(1)); from pyboss.cli import main; main()"
    command = [os.path.realpath(sys.executable), "-c", code, parent, "sweep",
               "--cgroup", directory, "--timeout", str(timeout)]
    subprocess.run(["systemd-run", "--quiet", "--no-block", "--collect", "--nice=19",
                    "--description=pyboss sweep after %s" % unit,
                    # Stopped with the unit and before it (stops run in reverse order), and
                    # the stop runs ExecStop= to its end, however far the watcher got.
                    "--property=StopPropagatedFrom=%s" % unit, "--property=After=%s" % unit,
                    "--property=ExecStop=%s" % exec_line(command + ["--stop-of", unit]),
                    "--property=TimeoutStopSec=%d" % (timeout + 30),
                    "--"] + command + ["--watch", unit],
                   capture_output=True, timeout=30)


def stopped_with(unit, directory, timeout):
    """ExecStop= of the watcher: its unit is stopped, or restarted, or the watcher is done.
    Only a stop job for the unit means that its app is to go."""
    if stop_queued(unit):
        sweep_left(unit, directory, timeout)
    return 0


def sweep_left(unit, directory, timeout):
    left = cgroup.processes(directory)
    if left:
        terminate(left, timeout)
        click.echo("pyboss sweep: %s was stopped while pyboss was dead: stopped %s"
                   % (unit, " ".join(map(str, left))))


def watch(unit, directory, timeout):
    """The watcher's main process: sweeps once the unit is dead (and not through a stop job,
    which ExecStop= handles)."""
    deadline = time.monotonic() + WATCH_LIMIT
    state = sub_state(unit)
    while state in WAITING_STATES and time.monotonic() < deadline:
        time.sleep(WATCH_POLL)       # systemd announces no state change we could await here
        state = sub_state(unit)
    if state not in ("dead", "failed"):
        return 0        # a pyboss was started again: it adopts the app
    sweep_left(unit, directory, timeout)
    return 0


@click.command("sweep")
@click.option("--timeout", type=SECONDS, default=10, show_default=True, metavar="SECONDS",
              help="SIGKILL what is still running this long after SIGTERM.")
@click.option("--watch", "watch_unit", metavar="UNIT", hidden=True)
@click.option("--cgroup", "cgroup_dir", metavar="DIR", hidden=True)
@click.option("--stop-of", "stopped_unit", metavar="UNIT", hidden=True)
def sweep_command(timeout, watch_unit, cgroup_dir, stopped_unit):
    """Leave no process behind when the unit stops (ExecStopPost= of pyboss's units).

    \b
    KillMode=process
    ExecStopPost=+/usr/bin/pyboss sweep

    With KillMode=process, systemd kills only pyboss: should pyboss die, its app keeps
    serving and the pyboss that Restart= starts adopts it. When the unit is stopped
    while pyboss is dead, nothing would stop the app: this does. If the stop was
    clean ($SERVICE_RESULT=success) or a stop job is queued, every process left in the
    unit's cgroup gets SIGTERM, then SIGKILL after --timeout. If pyboss died and a
    restart follows, the app is left running for the next pyboss. The '+' runs it
    with full privileges, so that the unit's sandbox does not stop it from reading the
    cgroup and signalling the app. A stop that comes while systemd waits to restart
    pyboss (RestartSec=) is caught by a watcher this leaves in a transient unit.
    """
    # Runs while the app serves on without pyboss: take no CPU time from it.
    os.nice(19 - os.nice(0))
    if stopped_unit and cgroup_dir:
        return stopped_with(stopped_unit, cgroup_dir, timeout)
    if watch_unit and cgroup_dir:
        return watch(watch_unit, cgroup_dir, timeout)
    result = os.environ.get("SERVICE_RESULT")
    if result is None:
        raise UserError("pyboss sweep belongs in ExecStopPost= of a systemd service "
                        "($SERVICE_RESULT is not set): it stops everything in its cgroup")
    directory = cgroup.own_cgroup()
    unit = unit_of(directory)
    if result != "success" and not stop_queued(unit):
        click.echo("pyboss sweep: %s ended with result %s; a restart follows: its app is "
                   "left running for the next pyboss to adopt" % (unit, result))
        start_watcher(unit, directory, timeout)
        return 0
    mine = ancestors()
    left = [pid for pid in cgroup.processes(directory) if pid not in mine]
    if not left:
        return 0
    killed = terminate(left, timeout)
    click.echo("pyboss sweep: %s stopped with pyboss gone: stopped %d left-over process%s "
               "(%s)%s" % (unit, len(left), "" if len(left) == 1 else "es",
                           " ".join(map(str, left)),
                           ", %d of them with SIGKILL" % killed if killed else ""))
    return 0
