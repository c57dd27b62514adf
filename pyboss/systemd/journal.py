"""Per-generation journal streams, and a failed generation's last lines read back.

systemd connects a service's stdout and stderr to journald and says so in JOURNAL_STREAM
(device:inode of that stream). journald attributes every line of a stream to the process
that connected it, so if generations inherited pyboss's stream, all their lines would
carry pyboss's _PID. Instead each generation opens a stream of its own in the child,
after the fork and before the exec: its lines carry its own _PID (the pid the app keeps
after exec), pyboss can read them back by that pid, and the app's output never passes
through pyboss, so it survives pyboss's own crash.

The stream protocol's header carries only the identifier (SYSLOG_IDENTIFIER, here the
app's name), a unit name, the priority and three forwarding flags; the generation's
number is not a field of its lines. pyboss's own "spawn" event carries both
PYBOSS_GENERATION and PYBOSS_CHILD_PID, which ties a _PID to its generation.
"""
import os
import select
import signal
import socket
import time

STDOUT_SOCKET = "/run/systemd/journal/stdout"
PRIORITY_INFO = 6
READ_BACK_TIMEOUT = 2.0     # seconds pyboss waits for journalctl on a failure, at most


def journal_fds(environ=os.environ):
    """Which of fds 1 and 2 are the journal stream JOURNAL_STREAM names (a tuple)."""
    stream = environ.get("JOURNAL_STREAM", "")
    found = []
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stream == "%d:%d" % (st.st_dev, st.st_ino):
            found.append(fd)
    return tuple(found)


def identifier(settings):
    """The app's name: pyboss's --name when one was given, else the command's file name."""
    if settings.name and settings.name != "pyboss":
        return settings.name
    return os.path.basename(settings.argv[0]) or "app"


def open_stream(ident, path=STDOUT_SOCKET, priority=PRIORITY_INFO):
    """A connected journal stream socket, header sent; lines written to it become entries."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(5)      # journald is local; a stuck one must not stop the start
        sock.connect(path)
        sock.shutdown(socket.SHUT_RD)
        # identifier, unit (journald finds it from the cgroup), priority, level prefix
        # (<3> at a line's start sets its priority), to syslog, to kmsg, to console.
        # MSG_NOSIGNAL: in the child SIGPIPE is already back to its default, and a
        # journald gone away must mean "keep the inherited output", not death.
        sock.sendall(("%s\n\n%d\n1\n0\n0\n0\n" % (ident, priority)).encode(),
                     socket.MSG_NOSIGNAL)
        sock.settimeout(None)   # blocking again: the fd becomes the app's stdout
    except BaseException:
        sock.close()
        raise
    return sock


def stream_in_child(ident, fds, env):
    """In a forked child: fds (1, 2 or both) become a new journal stream of its own pid."""
    try:
        sock = open_stream(ident)
    except OSError:
        return           # journald unreachable: the inherited stream still works
    for fd in fds:
        os.dup2(sock.fileno(), fd)
    st = os.fstat(sock.fileno())
    env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    sock.close()


def read_back(pid, since, ident, count, timeout=READ_BACK_TIMEOUT):
    """The last count lines pid wrote to its journal stream since then, as bytes.

    journalctl in a child process, not systemd-python's reader in pyboss: the reader maps
    journal files into the supervisor, which must stay small for months. As root, pyboss
    first has journald take in everything already written (journalctl --sync), so that
    the lines the generation wrote just before it exited are there.
    """
    deadline = time.monotonic() + timeout
    if os.geteuid() == 0:
        _run(["journalctl", "--sync"], deadline)
    return _run(["journalctl", "--no-pager", "--quiet", "--output=cat", "--lines=%d" % count,
                 "--since=@%d" % int(since), "_PID=%d" % pid, "SYSLOG_IDENTIFIER=" + ident],
                deadline)


def _run(argv, deadline):
    """argv's stdout (bytes), or b"" if it cannot run or does not finish by the deadline."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 1),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)],
            setsigmask=(), setsigdef=(signal.SIGPIPE, signal.SIGHUP, signal.SIGTERM,
                                      signal.SIGINT))
    except OSError:
        os.close(r)
        return b""
    finally:
        os.close(w)
    chunks = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                chunks = []
                break
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return b"".join(chunks)
