"""Where a generation's stdout and stderr go, and its last lines for a failure's verdict.

One of three, chosen once when the supervisor starts (observe.choose_output):

- inherited (outside systemd, the default): the generation writes where pyboss writes;
  pyboss keeps nothing and so can name no last lines.
- journal streams (under systemd, pyboss/systemd/journal.py): every generation opens a
  journal stream of its own; its last lines are read back from the journal by its pid.
- captured (--capture-output, supervisor/capture.py): a pipe per stream per generation;
  pyboss relays each line with the generation's number in front and keeps the last few
  KiB. The app's output then passes through pyboss: if pyboss dies, the app's next write
  fails (EPIPE).

Only the strategy in use is imported: the supervisor stays small.
"""
MAX_LINES = 5
MAX_BYTES = 1024


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


class _StreamInChild:
    def __init__(self, stream_in_child, ident, fds):
        self.stream_in_child, self.ident, self.fds = stream_in_child, ident, fds

    def in_child(self, env):
        self.stream_in_child(self.ident, self.fds, env)


class JournalOutput(InheritedOutput):
    """Under systemd: a journal stream per generation, last lines read back by its pid."""
    kind = "journal"

    def __init__(self, journal, ident, fds):
        self.journal, self.ident, self.fds = journal, ident, fds

    def prepare(self, number):
        return _StreamInChild(self.journal.stream_in_child, self.ident, self.fds)

    def last_lines(self, gen):
        # Twice as many: blank lines do not count.
        return last_lines(self.journal.read_back(gen.pid, gen.started, self.ident,
                                                 2 * MAX_LINES))
