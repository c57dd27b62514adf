"""A pyboss that starts where another one left off: what it may adopt, and how.

The state (state.py) names each worker of each generation by pid and start time. A
worker is adopted only if /proc still shows that very process; it is then watched
through a pidfd like one pyboss started itself (restore.py puts the generations back
together). An in-place upgrade never carries a reload: it waits until the reload is over.

Outside systemd nobody kept the listeners: the orphaned workers hold them on fds
3, 4, ... (where pyboss put them), and pidfd_getfd() copies them back, so nothing is
bound twice and not one connection is refused.
"""
import os
import time

from .. import sd
from ..systemd.fdstore import matches
from .generation import EXITED, Generation, Worker, parent_pid
from .state import same_process

SYS_PIDFD_GETFD = 438           # the same number on every architecture


class AdoptError(Exception):
    """The orphaned generations cannot be adopted; the message says what runs there."""


def pidfd_getfd(pidfd, target_fd):
    """A copy of another process's fd (Linux >= 5.6; python 3.11 has no os.pidfd_getfd)."""
    import ctypes       # only here: `pyboss exec` needs it, the supervisor image does not
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0)
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return fd


class AdoptedWorker(Worker):
    """A worker this pyboss did not fork. After a crash it is no longer pyboss's child
    (init or systemd reaps it), so its exit status is not pyboss's to know."""

    def reap(self):
        try:
            return super().reap()
        except ChildProcessError:
            pass
        self.exit_status = -1
        self.exit_reason = self.exit_reason or "exited (status unknown: it was adopted " \
                                               "from an earlier pyboss)"
        self.state = EXITED
        self.ended_mono = time.monotonic()
        return True


def live_generations(state):
    """The recorded generations that still have a worker that is the very same process,
    each with those workers only."""
    found = []
    for gen in (state or {}).get("generations", []):
        workers = [w for w in gen["workers"] if same_process(w["pid"], w["start_time"])]
        if workers:
            found.append(dict(gen, workers=workers))
    return found


def supervisor_alive(state):
    sup = state.get("supervisor") or {}
    return bool(sup.get("pid")) and sup["pid"] != os.getpid() and \
        same_process(sup["pid"], sup.get("start_time"))


def live_pids(live):
    return [w["pid"] for g in live for w in g["workers"]]


def what_runs(state, live):
    gens = ", ".join("generation %d (pid%s %s, %s)" % (
        g["number"], "s" if len(g["workers"]) > 1 else "",
        ", ".join(str(w["pid"]) for w in g["workers"]), g["state"]) for g in live)
    listeners = ", ".join("%s=%s" % (l["name"], l["address"]) for l in state["listeners"])
    return "%s of an earlier pyboss %r still run%s %r on %s" % (
        gens, state["name"], "s" if len(live_pids(live)) == 1 else "", " ".join(state["argv"]),
        listeners or "no listeners")


def difference(state, argv, names):
    """Why a pyboss with argv and listener names cannot adopt state's generations, or None."""
    if list(state["argv"]) != list(argv):
        return "the command differs"
    recorded = sorted(l["name"] for l in state["listeners"])
    if recorded != sorted(names):
        return "the listeners differ (%s there, %s asked)" % (
            ", ".join(recorded) or "none", ", ".join(sorted(names)) or "none")
    return None


def take_listeners(state, live, specs):
    """[(fd, name)]: the orphans' listeners, copied out of a live generation with
    pidfd_getfd. Each is checked against what --listen asks for."""
    holder = next((g for g in live if g["role"] == "current"), live[0])["workers"][0]
    pidfd = os.pidfd_open(holder["pid"])
    taken = []
    try:
        by_name = {spec.name: spec for spec in specs}
        for index, recorded in enumerate(state["listeners"]):
            target = sd.SD_LISTEN_FDS_START + index
            try:
                fd = pidfd_getfd(pidfd, target)
            except OSError as e:
                raise AdoptError("cannot take listener %s back from pid %d (its fd %d): %s"
                                 % (recorded["name"], holder["pid"], target, e.strerror))
            taken.append((fd, recorded["name"]))
            spec = by_name.get(recorded["name"])
            if spec is not None and not matches(spec, fd):
                raise AdoptError("pid %d's fd %d is not listener %s (%s) any more"
                                 % (holder["pid"], target, recorded["name"], spec))
    except BaseException:
        for fd, _ in taken:
            os.close(fd)
        raise
    finally:
        os.close(pidfd)
    return taken


def mark_taken(listeners, state):
    """Listeners copied from the orphans are pyboss's own, as they were before."""
    recorded = {l["name"]: l for l in state["listeners"]}
    for listener in listeners:
        mine = recorded.get(listener.name)
        if mine is not None:
            listener.origin = mine["origin"]
            listener.created_path = mine.get("created_path")
            listener.created_inode = mine.get("created_inode")


def notify_receiver(state):
    """The orphans' NOTIFY_SOCKET path, bound again (their messages reach this pyboss)."""
    notify = state.get("notify") or {}
    path, private = notify.get("path"), notify.get("private_dir")
    if not path or not private or not os.path.isdir(private):
        return None
    try:
        os.unlink(path)         # the earlier pyboss's socket file: nobody reads it
    except FileNotFoundError:
        pass
    try:
        return sd.NotifyReceiver(path, private_dir=private)
    except OSError:
        return None


def ancestors():
    """This process and the processes it descends from."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        pid = parent_pid(pid)
    return found


def strays(supervisor, pids):
    """Processes of this unit that no state names (a stop reached a dead pyboss): each is
    stopped like a draining generation, with the stop signal and then SIGKILL."""
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        worker = AdoptedWorker(0, 0, pid, pidfd, None)
        supervisor.watch(pidfd, lambda worker=worker: supervisor.on_worker_exit(worker))
        supervisor.log("stray", "pid %d runs in this unit but no saved state names it: "
                       "stopping it" % pid, level="warning", pid=pid)
        supervisor.retire(Generation(0, {0: worker}), supervisor.settings.stop_signal,
                          supervisor.settings.stop_timeout)
