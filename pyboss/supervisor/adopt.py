"""A pyboss that starts where another one left off: it adopts the live generations.

The state (state.py) names each generation by pid and start time. A generation is
adopted only if /proc still shows that very process; it is then watched through a
pidfd like one pyboss started itself. Draining generations keep their SIGKILL deadline.

After a crash, a reload that was under way is settled at once: the new generation is
promoted if its READY=1 waited in the notify socket (kept in the fd store), else it is
killed and the old one keeps serving. An in-place upgrade never carries a reload: it
waits until the reload is over.

Outside systemd nobody kept the listeners: the orphaned generation holds them on fds
3, 4, ... (where pyboss put them), and pidfd_getfd() copies them back, so nothing is
bound twice and not one connection is refused.
"""
import os
import signal
import time

from .. import sd
from ..systemd.fdstore import matches
from .generation import DRAINING, EXITED, Generation, parent_pid
from .metrics import Counters
from .readiness import SETTLING
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


class AdoptedGeneration(Generation):
    """A generation this pyboss did not fork. After a crash it is no longer pyboss's
    child (init or systemd reaps it), so its exit status is not pyboss's to know."""

    def reap(self):
        try:
            return super().reap()
        except ChildProcessError:
            pass
        self.exit_status = -1
        self.exit_reason = self.exit_reason or "exited (status unknown: it was adopted " \
                                               "from an earlier pyboss)"
        self.state = EXITED
        return True


def live_generations(state):
    """The recorded generations that are still the very same processes."""
    return [g for g in (state or {}).get("generations", [])
            if same_process(g["pid"], g["start_time"])]


def supervisor_alive(state):
    sup = state.get("supervisor") or {}
    return bool(sup.get("pid")) and sup["pid"] != os.getpid() and \
        same_process(sup["pid"], sup.get("start_time"))


def what_runs(state, live):
    gens = ", ".join("generation %d (pid %d, %s)" % (g["number"], g["pid"], g["state"])
                     for g in live)
    listeners = ", ".join("%s=%s" % (l["name"], l["address"]) for l in state["listeners"])
    return "%s of an earlier pyboss %r still run%s %r on %s" % (
        gens, state["name"], "s" if len(live) == 1 else "", " ".join(state["argv"]),
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
    holder = next((g for g in live if g["role"] == "current"), live[0])
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


def _adopt_one(supervisor, record):
    pidfd = os.pidfd_open(record["pid"])
    gen = AdoptedGeneration(record["number"], record["pid"], pidfd, None)
    gen.reaper = supervisor.reaper      # its signals reach its whole process tree
    gen.start_time = record["start_time"]
    gen.state = record["state"]
    gen.started, gen.started_mono = record["started"], record["started_mono"]
    gen.ready_after, gen.status_text = record["ready_after"], record["status"]
    supervisor.watch(gen.pidfd, lambda: supervisor.on_exit(gen))
    return gen


def _later(supervisor, deadline, callback):
    return supervisor.call_later(max(0.0, deadline - time.monotonic()), callback)


def restore(supervisor, state, after_crash, command_changed=False):
    """Make supervisor carry on with state's live generations; returns how many."""
    supervisor.number = max(supervisor.number, state["number"])
    supervisor.history.extend(state["history"])
    supervisor.failures = state["counters"]["failures"]
    supervisor.crashes = state["counters"]["crashes"]
    if state.get("metrics"):        # the exported counters go on from where they were
        carried = Counters.from_dict(state["metrics"])
        vars(supervisor.observed.counters).update(vars(carried))
    supervisor.reload_requested_at = state["reload_requested_at"]
    supervisor.pending_purpose = state["pending_purpose"]
    supervisor.upstream.ready_sent = state.get("ready_sent", False)
    if not after_crash:
        # The same process after an upgrade: its children are generations and their
        # orphans, not helpers of its own that the reaper must leave alone.
        supervisor.reaper.helpers.clear()
    adopted = []
    for record in state["generations"]:
        if not same_process(record["pid"], record["start_time"]):
            supervisor.log("adopt-gone", "generation %d (pid %d) is gone: not adopted"
                           % (record["number"], record["pid"]), level="warning",
                           generation=record["number"], pid=record["pid"])
            continue
        gen = _adopt_one(supervisor, record)
        adopted.append(gen)
        supervisor.log("adopted", "%s adopted (%s)" % (gen, gen.state),
                       generation=gen.number, pid=gen.pid)
        if command_changed:
            supervisor.retire(gen, supervisor.settings.drain_signal,
                              supervisor.settings.drain_timeout)
        elif record["role"] == "current":
            supervisor.current = gen
        elif record["role"] == "pending":
            supervisor.pending = gen
            gen.deadline_timer = _later(supervisor, record["deadline"] or 0.0,
                                        lambda gen=gen: supervisor.on_ready_timeout(gen))
            supervisor.readiness.adopted(gen)
            if record["state"] == SETTLING:
                supervisor.readiness.resume_settling(gen)
        else:
            gen.state = DRAINING
            supervisor.old.append(gen)
            if record["deadline"] is not None:
                gen.deadline_timer = _later(supervisor, record["deadline"],
                                            lambda gen=gen: gen.signal(signal.SIGKILL))
    if after_crash:
        settle_reload(supervisor)
    if supervisor.current is not None and supervisor.pending is None:
        supervisor.upstream.ready(supervisor.status_line())
    return adopted


def settle_reload(supervisor):
    """A reload cut short by pyboss's death: promote the new generation if it said READY=1
    meanwhile (queued on the notify socket), else kill it; the old one keeps serving."""
    supervisor.on_notify()      # messages that waited for this pyboss
    gen = supervisor.pending
    if gen is None or gen.state == SETTLING:
        return                  # none, or it had reported ready: it settles anew
    settings = supervisor.settings
    if settings.ready_after is not None and \
            time.monotonic() - gen.started_mono >= settings.ready_after:
        return supervisor.promote(gen)
    if supervisor.current is None:
        return                  # the first generation: nothing else serves, keep waiting
    gen.failure = "pyboss restarted during the reload and %s was not ready yet" % gen
    supervisor.pending_failed(gen)


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
        gen = AdoptedGeneration(0, pid, pidfd, None)
        supervisor.watch(pidfd, lambda gen=gen: supervisor.on_exit(gen))
        supervisor.log("stray", "pid %d runs in this unit but no saved state names it: "
                       "stopping it" % pid, level="warning", pid=pid)
        supervisor.retire(gen, supervisor.settings.stop_signal, supervisor.settings.stop_timeout)
