"""start_server's files: the pid file, the status file, the envdir, and the
--restart / --stop commands that work from a second process through them.

The pid file is locked (flock) for as long as start_server runs; the lock, not
the pid written in it, says whether a start_server is alive. So a second
instance refuses to start instead of overwriting a live one's pid, and --stop
waits for the lock to be released, which happens when start_server has exited.
"""
import errno
import fcntl
import os
import signal
import time


class StarterError(Exception):
    """One line for the user; the command exits non-zero."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class PidFile:
    def __init__(self, path):
        self.path = os.path.abspath(path)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise StarterError("cannot open --pid-file %s: %s" % (path, e.strerror), 2)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                raise StarterError("another start_server (pid %s) is running with --pid-file %s: "
                                   "stop it first (--stop) or choose another pid file"
                                   % (pid or "?", path), 2)
            # The previous owner may have unlinked the file between our open and our lock.
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fd = fd

    def write(self):
        """Record our pid; called once the process that stays (after --daemonize) is known."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, b"%d\n" % os.getpid(), 0)

    def remove(self):
        """Unlink; the lock stays until release() (or exit), and --stop waits for that."""
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass

    def release(self):
        """Let go of the lock: this start_server is done."""
        os.close(self.fd)


def write_status_file(path, generations):
    """'GEN:PID' lines, generations in numeric order, replacing the file atomically."""
    temporary = "%s.%d" % (path, os.getpid())
    with open(temporary, "w") as f:
        f.writelines("%d:%d\n" % (number, pid) for number, pid in sorted(generations))
    os.rename(temporary, path)


def read_status_file(path):
    """The generation numbers listed in a status file; [] if there is none yet."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StarterError("cannot read --status-file %s: %s" % (path, e.strerror))
    return sorted(int(line.split(":", 1)[0]) for line in lines
                  if line.split(":", 1)[0].isdigit())


def load_envdir(directory):
    """daemontools-style envdir as start_server reads it: one variable per file, its first
    line as the value; dot files and unreadable or empty files are skipped."""
    if not directory or not os.path.isdir(directory):
        return {}
    found = {}
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or "=" in name:
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                line = f.readline()
        except OSError:
            continue
        if line:
            found[name] = line.rstrip(b"\n").decode(errors="surrogateescape")
    return found


def _running_pid(pid_file):
    """(pid, fd holding the open pid file) of the start_server that owns pid_file."""
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise StarterError("cannot open --pid-file %s: %s (is start_server running?)"
                           % (pid_file, e.strerror))
    text = os.read(fd, 64).decode(errors="replace").strip()
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        if text.isdigit():
            return int(text), fd
    os.close(fd)
    raise StarterError("no start_server is running with --pid-file %s (it holds %r, and "
                       "nothing holds its lock)" % (pid_file, text))


def _still_running(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def stop_server(pid_file, say):
    """Send TERM to the start_server of pid_file; return once it has exited."""
    pid, fd = _running_pid(pid_file)
    try:
        say("stop_server (pid:%d) stopping now (pid:%d)..." % (os.getpid(), pid))
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            raise StarterError("start_server pid %d from %s is gone" % (pid, pid_file))
        fcntl.flock(fd, fcntl.LOCK_SH)      # granted when start_server has exited
    finally:
        os.close(fd)


def restart_server(pid_file, status_file, say, poll=0.1):
    """HUP the start_server of pid_file; return once only a newer generation is left.

    start_server 0.35 waits for exactly 'newest + 1' and hangs forever when that
    generation failed and a retry (newest + 2) took over; any newer one counts here.
    The status file is read every 5 ms for the first 0.2 s, then ever less often, up to
    every `poll` seconds: a quick restart is not kept waiting, a slow one costs little.
    """
    delay, quick_until = 0.005, time.monotonic() + 0.2
    pid, fd = _running_pid(pid_file)
    try:
        generations = read_status_file(status_file)
        if not generations:
            raise StarterError("no active process found in --status-file %s" % status_file)
        newest = generations[-1]
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise StarterError("start_server pid %d from %s is gone" % (pid, pid_file))
        while True:
            generations = read_status_file(status_file)
            if len(generations) == 1 and generations[0] > newest:
                say("restart_server: generation %d is serving alone" % generations[0])
                return
            if not _still_running(fd):
                raise StarterError("start_server (pid %d) exited during the restart" % pid)
            time.sleep(delay)
            if time.monotonic() > quick_until:
                delay = min(delay * 2, poll)
    finally:
        os.close(fd)


def ignore_enoent(func, *args):
    try:
        func(*args)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
