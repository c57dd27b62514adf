"""One generation of the app: spawn it on the listeners, watch it, signal it, reap it."""
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


def _exec_child(argv, env, fds, error_fd):
    """Runs in the forked child: arrange fds 3.. and exec; never returns.

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
            env["LISTEN_PID"] = str(os.getpid())
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


class Generation:
    """A child process running the app, numbered from 1 in the order they start."""

    reaper = None       # the supervisor's Reaper, which signals whole process trees

    def __init__(self, number, pid, pidfd, exec_fd):
        self.number = number
        self.pid = pid
        self.pidfd = pidfd
        self.exec_fd = exec_fd        # readable once exec succeeded (EOF) or failed (text)
        self.state = STARTING
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.ready_after = None
        self.exit_status = None
        self.exit_reason = None
        self.deadline_timer = None    # the supervisor's pending timeout for this generation
        self.exec_failed = False
        self.failure = None           # why it never became ready, when pyboss knows better
        self.status_text = None       # the app's own STATUS=

    @classmethod
    def spawn(cls, number, argv, env, fds):
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except BaseException:
            os.close(error_r)
            os.close(error_w)
            raise
        if pid == 0:
            os.close(error_r)
            _exec_child(argv, env, fds, error_w)
        os.close(error_w)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # Out of fds: a child pyboss cannot watch must not run on unsupervised.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(error_r)
            raise
        return cls(number, pid, pidfd, error_r)

    def __repr__(self):
        return "generation %d (pid %d)" % (self.number, self.pid)

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
        if self.exit_reason is None:
            self.exit_reason = describe_status(status)
        self.state = EXITED
        return True

    def close(self):
        for fd in (self.pidfd, self.exec_fd):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.exec_fd = None

    def as_dict(self):
        return {"number": self.number, "pid": self.pid, "state": self.state,
                "started": round(self.started, 3),
                "ready_after": None if self.ready_after is None else round(self.ready_after, 3),
                "status": self.status_text}
