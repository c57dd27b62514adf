"""What the supervisor keeps about itself and its generations for status, metrics and verdicts."""
import os
import time
from collections import deque

from .. import __version__
from .metrics import Counters
from .output import InheritedOutput, JournalOutput, one_line

FAILED_KEPT = 5


class Observations:
    def __init__(self, settings, loop):
        self.started = time.time()
        self.counters = Counters()      # plain (to_dict/from_dict): the next pyboss carries them
        self.output = choose_output(settings, loop)     # the generations' stdout and stderr
        self.failed = deque(maxlen=FAILED_KEPT)     # the last generations that failed
        self.metrics = {"address": None, "textfile": None}     # where they are exported
        loop.log.observers.append(self.on_event)

    def on_event(self, event):
        """Crashes and respawns are counted as the core logs them."""
        if event == "crash":
            self.counters.crashes += 1
        elif event == "respawn":
            self.counters.respawns += 1

    def reload(self, gen, outcome, reason, requested, started_mono):
        """Count a finished reload; its entry in status's reload history."""
        duration = time.monotonic() - started_mono
        self.counters.reload(outcome, duration)
        return {"generation": gen.number, "outcome": outcome, "reason": reason,
                "duration": round(duration, 3), "requested": round(requested, 3),
                "last_lines": gen.last_lines}

    def failure(self, gen):
        """Keep what gen wrote last (gen.last_lines, none if it never ran) for status and
        verdicts; the lines as a suffix for one-line messages (": a | b", or "")."""
        gen.last_lines = [] if gen.exec_failed else self.output.last_lines(gen)
        self.failed.append(gen)
        return one_line(gen.last_lines)

    def status(self):
        """pyboss status's fields about pyboss itself and its failed generations."""
        return {"version": __version__, "started": round(self.started, 3),
                "uptime": round(time.time() - self.started, 3), "output": self.output.kind,
                "metrics": dict(self.metrics), "failed": [g.as_dict() for g in self.failed]}


def choose_output(settings, loop):
    """Captured when asked for, journal streams under systemd, else inherited; only the
    one in use is imported."""
    if getattr(settings, "capture_output", False):
        from .capture import CapturedOutput
        return CapturedOutput(loop)
    if os.environ.get("JOURNAL_STREAM"):
        from ..systemd import journal
        streams = journal.journal_fds()
        if streams:
            return JournalOutput(journal, journal.identifier(settings), streams)
    return InheritedOutput()


def format_self(status):
    """pyboss status's line about pyboss itself (control.format_status)."""
    if "version" not in status:
        return []
    return ["  pyboss %s, up %s, generations' output: %s"
            % (status["version"], duration(status["uptime"]), status["output"])]


def format_failed(status):
    """pyboss status's lines about the last failed generations and what they wrote."""
    lines = ["  last failed generations:"] if status.get("failed") else []
    for g in status.get("failed", []):
        how = g["failure"] or g["exit"] or "killed"
        lines.append("    #%-4d pid %-8d %s after %s" % (g["number"], g["pid"], how,
                                                       duration(g["uptime"])))
        lines.extend("          | %s" % line for line in g["last_lines"] or [])
    return lines


def duration(seconds):
    """3.2s, 4m05s, 2h03m, 3d04h: how long, as an operator reads it."""
    if seconds < 60:
        return "%.1fs" % seconds
    seconds = int(seconds)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                     ("m", 60, "s", 1)):
        if seconds >= size:
            return "%d%s%02d%s" % (seconds // size, unit, seconds % size // subsize, sub)
