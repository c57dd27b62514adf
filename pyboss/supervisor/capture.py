"""--capture-output: every generation's stdout and stderr through pyboss's event loop.

Each generation gets a pipe for stdout and one for stderr (made before the fork, the
write ends dup'ed onto fds 1 and 2 in the child). pyboss copies what arrives to its own
stdout and stderr with "[gen N] " in front of every line, and keeps the last KEEP_BYTES
for a failure's last lines. The cost: every byte is copied twice more (into pyboss and
out again) and pyboss's CPU follows the app's log volume. If pyboss dies, the read ends
close with it and the app's next write to stdout or stderr fails: a C program is killed
by SIGPIPE, Python raises BrokenPipeError. Journal streams (under systemd) have neither
cost.
"""
import fcntl
import os
import time

from .output import InheritedOutput, last_lines

KEEP_BYTES = 8192          # enough raw output to cut MAX_LINES/MAX_BYTES from
PIPE_SIZE = 1 << 20        # a larger pipe: the app blocks less often while pyboss relays
READ_SIZE = 256 << 10
# glibc's malloc serves a block of 128 KiB or more with an mmap() of its own, unmapped on
# free, and trims the heap's top once 128 KiB of it is free: either way every chunk
# relayed faulted its pages in afresh, which was most of the relay's cost (measured).
# Once a block served by mmap() is freed, glibc raises the first limit to its size and
# the second to twice that, so one such block freed at the start keeps the READ_SIZE
# buffers on the heap, reused. Other allocators see a block allocated and freed.
MMAP_THRESHOLD = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
# When a wake-up found little to relay, pyboss waits up to BATCH_SECONDS before it looks
# again: an app writing line by line then puts many lines in the pipe per wake-up instead
# of waking pyboss for every line. Lines are relayed this much later, at most. The pause
# is shortened to what fills a quarter of the pipe at the rate the app wrote since the last
# wake-up, so that a fast writer never waits on a full pipe; below the event loop's
# millisecond it is skipped.
BATCH_SECONDS = 0.005
BATCH_MIN_SECONDS = 0.001


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
        self.relayed = 0          # bytes the last pump() relayed
        self.pumped_at = time.monotonic()
        try:
            self.capacity = fcntl.fcntl(fd, F_GETPIPE_SZ)
        except OSError:
            self.capacity = 1 << 16       # Linux's default
        os.set_blocking(fd, False)

    def pump(self):
        """Relay what is there now; False at end of file."""
        self.relayed = 0
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self.tail.add(data)
            self.write(data)
            self.relayed += len(data)
            if len(data) < READ_SIZE:
                return True      # most likely all there was; if not, the loop calls again

    def write(self, data):
        ends_line = data.endswith(b"\n")
        out = data.replace(b"\n", b"\n" + self.prefix)
        if ends_line:
            # the next line's prefix comes with it; a view, as a slice would copy
            out = memoryview(out)[:-len(self.prefix)]
        parts = [self.prefix, out] if self.at_line_start else [out]
        self.at_line_start = ends_line
        try:
            written = os.writev(self.target, parts)
            rest = b"".join(parts)[written:] if written < sum(map(len, parts)) else b""
            while rest:
                rest = rest[os.write(self.target, rest):]
        except OSError:
            pass     # pyboss's own output is gone: keep draining, or the app would block


class _Tail:
    def __init__(self):
        self.data = b""

    def add(self, data):
        if len(data) >= KEEP_BYTES:
            self.data = data[-KEEP_BYTES:]
        else:
            self.data = self.data[len(data) - KEEP_BYTES:] + data


class CapturedOutput(InheritedOutput):
    """--capture-output: relay every generation's output through pyboss's event loop."""
    kind = "captured"

    def __init__(self, loop):
        self.loop = loop
        bytes(MMAP_THRESHOLD)      # see MMAP_THRESHOLD

    def prepare(self, number):
        return _Pipes()

    def started(self, gen, child):
        child.close_write_ends()
        gen.output_tail = _Tail()
        gen.relays = [_Relay(r, target, gen.number, gen.output_tail)
                      for r, _w, target in child.ends]
        for relay in gen.relays:
            self.rewatch(relay)
        gen.on_close.append(lambda: self.exited(gen))

    def on_readable(self, relay):
        if not relay.pump():
            self.close(relay)
            return
        now = time.monotonic()
        rate = relay.relayed / max(now - relay.pumped_at, 1e-6)    # bytes per second
        relay.pumped_at = now
        pause = min(BATCH_SECONDS, relay.capacity / 4 / rate) if rate else BATCH_SECONDS
        if pause >= BATCH_MIN_SECONDS:
            self.loop.unwatch(relay.fd)
            self.loop.call_later(pause, lambda: self.rewatch(relay))

    def rewatch(self, relay):
        if relay.fd >= 0:
            self.loop.watch(relay.fd, lambda: self.on_readable(relay))

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
