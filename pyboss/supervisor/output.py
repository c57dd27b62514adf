"""Where a generation's stdout and stderr go, and its last lines for a failure's verdict.

One of three, chosen once when the supervisor starts (choose_output):

- inherited (outside systemd, the default): the generation writes where pyboss writes;
  pyboss keeps nothing and so can name no last lines.
- journal streams (under systemd, pyboss/systemd/journal.py): every generation opens a
  journal stream of its own; its last lines are read back from the journal by its pid.
- captured (--capture-output): a pipe per stream per generation; pyboss relays each line
  with the generation's number in front and keeps the last few KiB. The app's output
  then passes through pyboss: if pyboss dies, the app's next write fails (EPIPE).
"""
import fcntl
import os

from ..systemd import journal

MAX_LINES = 5
MAX_BYTES = 1024
KEEP_BYTES = 8192          # enough raw output to cut MAX_LINES/MAX_BYTES from
PIPE_SIZE = 1 << 20        # a larger pipe: the app blocks less often while pyboss relays
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def last_lines(data, max_lines=MAX_LINES, max_bytes=MAX_BYTES):
    """The last non-blank lines of data (bytes): at most max_lines, at most max_bytes."""
    lines = [line.rstrip() for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line.strip()][-max_lines:]
    kept, size = [], 0
    for line in reversed(lines):
        size += len(line.encode()) + 1
        if size > max_bytes:
            if not kept:     # one huge line: its end, where the error usually is
                kept.append("..." + line.encode()[-(max_bytes - 4):].decode("utf-8", "ignore"))
            break
        kept.append(line)
    return kept[::-1]


def one_line(lines):
    """Last lines as a suffix for one-line messages (STATUS=, the event log): ": a | b"."""
    return ": " + " | ".join(lines) if lines else ""


class InheritedOutput:
    """The generation writes to pyboss's own stdout and stderr; nothing is kept."""
    kind = "inherited"

    def spawn(self, spawn_generation, number, *args):
        """spawn_generation(number, *args, output) with this strategy's part in the child."""
        child = self.prepare(number)
        try:
            gen = spawn_generation(number, *args, child)
        except BaseException:
            getattr(child, "close", lambda: None)()
            raise
        self.started(gen, child)
        return gen

    def prepare(self, number):
        return None          # nothing to do in the child

    def started(self, gen, child):
        pass

    def last_lines(self, gen):
        return []

    def exited(self, gen):
        pass


class _Pipes:
    """The pipes of one generation, made before the fork; the child keeps the write ends."""

    def __init__(self):
        self.ends = []       # (read end, write end, the fd it stands for: 1 or 2)
        try:
            for target in (1, 2):
                r, w = os.pipe2(os.O_CLOEXEC)
                self.ends.append((r, w, target))
                try:
                    fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
                except OSError:
                    pass     # above /proc/sys/fs/pipe-max-size: the default size works too
        except OSError:
            self.close()
            raise

    def in_child(self, env):
        for _r, w, target in self.ends:
            os.dup2(w, target)

    def close_write_ends(self):
        for _r, w, _target in self.ends:
            os.close(w)

    def close(self):
        for r, w, _target in self.ends:
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.ends = []


class _Relay:
    """Copies one pipe to pyboss's own fd, with "[gen N] " at the start of every line."""

    def __init__(self, fd, target, number, tail):
        self.fd, self.target, self.tail = fd, target, tail
        self.prefix = b"[gen %d] " % number
        self.at_line_start = True
        os.set_blocking(fd, False)

    def pump(self):
        """Relay what is there now; False at end of file."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self.tail.add(data)
            self.write(data)

    def write(self, data):
        body, newline = (data[:-1], b"\n") if data.endswith(b"\n") else (data, b"")
        out = body.replace(b"\n", b"\n" + self.prefix) + newline
        if self.at_line_start:
            out = self.prefix + out
        self.at_line_start = bool(newline)
        try:
            while out:
                out = out[os.write(self.target, out):]
        except OSError:
            pass     # pyboss's own output is gone: keep draining, or the app would block


class _Tail:
    def __init__(self):
        self.data = b""

    def add(self, data):
        self.data = (self.data + data)[-KEEP_BYTES:]


class CapturedOutput(InheritedOutput):
    """--capture-output: relay every generation's output through pyboss's event loop."""
    kind = "captured"

    def __init__(self, loop):
        self.loop = loop

    def prepare(self, number):
        return _Pipes()

    def started(self, gen, child):
        child.close_write_ends()
        gen.output_tail = _Tail()
        gen.relays = [_Relay(r, target, gen.number, gen.output_tail)
                      for r, _w, target in child.ends]
        for relay in gen.relays:
            self.loop.watch(relay.fd, lambda relay=relay: self.on_readable(relay))

    def on_readable(self, relay):
        if not relay.pump():
            self.close(relay)

    def close(self, relay):
        self.loop.unwatch(relay.fd)
        os.close(relay.fd)
        relay.fd = -1

    def last_lines(self, gen):
        for relay in getattr(gen, "relays", ()):
            if relay.fd >= 0:
                relay.pump()     # what the generation wrote just before it exited
        return last_lines(gen.output_tail.data) if hasattr(gen, "output_tail") else []

    def exited(self, gen):
        """Relay what is left; a pipe still held open by the app's own children stays."""
        for relay in getattr(gen, "relays", ()):
            if relay.fd >= 0 and not relay.pump():
                self.close(relay)
        gen.relays = [relay for relay in getattr(gen, "relays", ()) if relay.fd >= 0]


class _StreamInChild:
    def __init__(self, ident, fds):
        self.ident, self.fds = ident, fds

    def in_child(self, env):
        journal.stream_in_child(self.ident, self.fds, env)


class JournalOutput(InheritedOutput):
    """Under systemd: a journal stream per generation, last lines read back by its pid."""
    kind = "journal"

    def __init__(self, ident, fds):
        self.ident, self.fds = ident, fds

    def prepare(self, number):
        return _StreamInChild(self.ident, self.fds)

    def last_lines(self, gen):
        # Twice as many: blank lines do not count.
        return last_lines(journal.read_back(gen.pid, gen.started, self.ident, 2 * MAX_LINES))


def choose_output(settings, loop):
    """Captured when asked for, journal streams under systemd, else inherited."""
    if getattr(settings, "capture_output", False):
        return CapturedOutput(loop)
    streams = journal.journal_fds()
    if streams:
        return JournalOutput(journal.identifier(settings), streams)
    return InheritedOutput()
