"""One generation of the app: its worker processes, spawned on the listeners, watched,
signalled and reaped.

A Generation holds worker slots 0..N-1 (`pyboss exec --workers N`); the usual generation is
N=1. A Worker is one process: the fork, the dup2 of the listeners onto fds 3.. and the exec.
"""
import fcntl
import os
import signal
import time

from .. import sd
from . import limits
from .reaper import proc_stat

STARTING, SERVING, DRAINING, EXITED = "starting", "serving", "draining", "exited"


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


def describe_status(status):
    """A wait status as an operator reads it: 'exited with status 1'."""
    if os.WIFSIGNALED(status):
        return "killed by %s" % signal_name(os.WTERMSIG(status))
    return "exited with status %d" % os.WEXITSTATUS(status)


def parent_pid(pid):
    fields = proc_stat(pid)
    return fields[1] if fields is not None else 0


def is_descendant(pid, ancestor, depth=32):
    while pid > 1 and depth > 0:
        if pid == ancestor:
            return True
        pid, depth = parent_pid(pid), depth - 1
    return False


def _exec_child(argv, env, fds, error_fd, output=None):
    """Runs in the forked child: arrange fds 3.. and exec; never returns.

    output, if any, points stdout and stderr elsewhere first (supervisor/output.py).

    fds is a list (placed at 3, 4, ... with LISTEN_PID set), or a dict
    {child fd: our fd} for layouts other programs expect (start_server's =FD);
    such a dict may name signals the child starts with ignored (ignored_signals).
    """
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)   # Python ignores SIGPIPE; exec keeps ignores
        for sig in getattr(fds, "ignored_signals", ()):
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        if output is not None:
            output.in_child(env)
        limits.restore_for_child()
        explicit = isinstance(fds, dict)
        layout = fds if explicit else {sd.SD_LISTEN_FDS_START + i: fd for i, fd in enumerate(fds)}
        count = 0 if explicit else len(layout)      # LISTEN_FDS only for the 3.. layout
        top = max(list(layout) + [sd.SD_LISTEN_FDS_START - 1])
        high = top + 2
        # Move everything above the target range first, so no dup2 clobbers a source.
        moved = {target: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high)
                 for target, fd in layout.items()}
        error_high = fcntl.fcntl(error_fd, fcntl.F_DUPFD_CLOEXEC, high)
        for target, fd in moved.items():
            os.dup2(fd, target, inheritable=True)
        error_fd = top + 1
        os.dup2(error_high, error_fd, inheritable=False)
        os.closerange(error_fd + 1, 1 << 20)
        if count:
            sd.child_identity(env)
        if "WATCHDOG_USEC" in env:      # the watchdog pyboss offers is the child's own
            env["WATCHDOG_PID"] = str(os.getpid())
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        try:
            os.write(error_fd, ("%s" % (e.strerror or e)).encode())
        except OSError:
            pass
    finally:
        os._exit(127)


class Worker:
    """One process of generation `number` (numbered from 1 in the order they start),
    in worker slot `slot`."""

    reaper = None       # the supervisor's Reaper, which signals whole process trees

    def __init__(self, number, slot, pid, pidfd, exec_fd, named_slot=False):
        self.number = number
        self.slot = slot
        self.named_slot = named_slot  # in logs: "generation 3 worker 1 (pid ..)" when N > 1
        self.pid = pid
        self.pidfd = pidfd
        self.exec_fd = exec_fd        # readable once exec succeeded (EOF) or failed (text)
        self.state = STARTING
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.ready_after = None
        self.ended_mono = None
        self.exit_status = None
        self.exit_reason = None
        self.deadline_timer = None    # the supervisor's pending timeout for this worker
        self.exec_failed = False
        self.failure = None           # why it never became ready, when pyboss knows better
        self.status_text = None       # the app's own STATUS=
        self.last_lines = None        # what it wrote last, once it failed
        self.on_close = []            # what else to do once it is gone (output relays)

    @classmethod
    def spawn(cls, number, slot, argv, env, fds, named_slot=False, output=None):
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except BaseException:
            os.close(error_r)
            os.close(error_w)
            raise
        if pid == 0:
            os.close(error_r)
            _exec_child(argv, env, fds, error_w, output)
        os.close(error_w)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # Out of fds: a child pyboss cannot watch must not run on unsupervised.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(error_r)
            raise
        return cls(number, slot, pid, pidfd, error_r, named_slot)

    def __repr__(self):
        if self.named_slot:
            return "generation %d worker %d (pid %d)" % (self.number, self.slot, self.pid)
        return "generation %d (pid %d)" % (self.number, self.pid)

    @property
    def ready(self):
        return self.ready_after is not None

    @property
    def alive(self):
        return self.exit_status is None

    def read_exec_result(self):
        """None when exec succeeded; the error text ("No such file or directory") if not."""
        data = os.read(self.exec_fd, 4096)
        os.close(self.exec_fd)
        self.exec_fd = None
        return data.decode(errors="replace") if data else None

    def mark_ready(self):
        self.state = SERVING
        self.ready_after = time.monotonic() - self.started_mono

    def signal(self, signum):
        """Signal the generation: its whole process tree once a Reaper is attached."""
        if self.reaper is not None:
            return self.reaper.signal_tree(self, signum)
        if self.alive:
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except ProcessLookupError:
                pass

    def reap(self):
        """Collect the exit status once the pidfd says the process is gone."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return False
        self.exit_status = status
        self.ended_mono = time.monotonic()
        if self.exit_reason is None:
            self.exit_reason = describe_status(status)
        self.state = EXITED
        return True

    def close(self):
        hooks, self.on_close = self.on_close, []
        for hook in hooks:
            hook()
        for fd in (self.pidfd, self.exec_fd):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.exec_fd = None

    def as_dict(self):
        ended = time.monotonic() if self.ended_mono is None else self.ended_mono
        return {"slot": self.slot, "number": self.number, "pid": self.pid,
                "state": self.state, "started": round(self.started, 3),
                "uptime": round(ended - self.started_mono, 3),
                "exit": self.exit_reason, "failure": self.failure, "last_lines": self.last_lines,
                "ready_after": None if self.ready_after is None else round(self.ready_after, 3),
                "status": self.status_text}


class Generation:
    """The workers of one generation, by slot. A rolling reload moves workers of the next
    generation into the serving one slot by slot, so its workers may carry two numbers."""

    def __init__(self, number, workers=None):
        self.number = number
        self.workers = dict(workers or {})    # slot -> Worker
        self._state = STARTING
        self.created = time.time()
        self.created_mono = time.monotonic()
        self.ready_after = None
        self.deadline_timer = None    # the supervisor's timer for the group (drain SIGKILL)
        self.failure = None           # why it never became ready
        self.exec_failed = False      # ... because a worker could not be executed
        self.exited_pid = 0           # the last worker forgotten, for reports after it
        self.failed_worker = None     # the worker whose failure failed the generation
        self.last_lines = None        # what that worker wrote last

    def __repr__(self):
        pids = [w.pid for w in self.by_slot()] or [self.exited_pid]
        if len(pids) == 1:
            return "generation %d (pid %d)" % (self.number, pids[0])
        return "generation %d (pids %s)" % (self.number, ", ".join(map(str, pids)))

    def forget(self, worker):
        """An exited worker leaves its slot."""
        del self.workers[worker.slot]
        self.exited_pid = worker.pid

    def by_slot(self):
        return [self.workers[slot] for slot in sorted(self.workers)]

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        self._state = value
        for worker in self.workers.values():
            if worker.alive:
                worker.state = value

    @property
    def pid(self):
        """The first worker's pid: the generation's pid when it has one worker."""
        workers = self.by_slot()
        return workers[0].pid if workers else self.exited_pid

    @property
    def alive(self):
        return any(w.alive for w in self.workers.values())

    @property
    def started(self):
        return min([w.started for w in self.workers.values()] or [self.created])

    @property
    def started_mono(self):
        """When its newest worker started: what a deadline for the group counts from."""
        return max([w.started_mono for w in self.workers.values()] or [self.created_mono])

    @property
    def status_text(self):
        texts = [w.status_text for w in self.by_slot() if w.status_text]
        return texts[0] if texts else None

    def all_ready(self, count):
        return len(self.workers) == count and all(w.ready for w in self.workers.values())

    def mark_ready(self):
        self.state = SERVING
        self.ready_after = max(w.ready_after for w in self.workers.values())

    def signal(self, signum):
        for worker in self.workers.values():
            worker.signal(signum)

    def as_dict(self):
        return {"number": self.number, "pid": self.pid, "state": self.state,
                "started": round(self.started, 3),
                "uptime": round(time.monotonic() - self.created_mono, 3),
                "exit": None, "failure": self.failure, "last_lines": self.last_lines,
                "ready_after": None if self.ready_after is None else round(self.ready_after, 3),
                "status": self.status_text,
                "workers": [w.as_dict() for w in self.by_slot()]}
