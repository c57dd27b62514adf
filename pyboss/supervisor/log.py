"""One line per event: journald fields when stderr is the journal, else plain stderr."""
import os
import sys

PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


def _journal():
    # Imported only when stderr is the journal: it brings logging, uuid and more, which
    # a supervisor that logs to a terminal or a file has no use for.
    try:
        from systemd import journal
    except ImportError:      # the optional extra pyboss[systemd] is not installed
        return None
    return journal


def _stderr_is_journal():
    # systemd sets JOURNAL_STREAM=dev:inode of the stream it connected to stderr.
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == "%d:%d" % (st.st_dev, st.st_ino)


class EventLog:
    def __init__(self, name, quiet=False):
        self.name = name
        self.quiet = quiet
        self.journal = _journal() if _stderr_is_journal() else None
        self.observers = []     # called with every event, also those --quiet leaves out

    def __call__(self, event, message, level="info", generation=None, pid=None, **fields):
        for observer in self.observers:
            observer(event)
        if self.quiet and level in ("info", "debug"):
            return
        if self.journal:
            extra = {"PYBOSS_EVENT": event, "PYBOSS_NAME": self.name,
                     "SYSLOG_IDENTIFIER": "pyboss"}
            if generation is not None:
                extra["PYBOSS_GENERATION"] = str(generation)
            if pid is not None:
                extra["PYBOSS_CHILD_PID"] = str(pid)
            for key, value in fields.items():
                extra["PYBOSS_" + key.upper()] = str(value)
            self.journal.send(message, PRIORITY=PRIORITY[level], **extra)
            return
        pairs = [("event", event)]
        if generation is not None:
            pairs.append(("generation", generation))
        if pid is not None:
            pairs.append(("pid", pid))
        pairs.extend(sorted(fields.items()))
        detail = " ".join("%s=%s" % (k, v) for k, v in pairs)
        try:
            sys.stderr.write("pyboss[%s]: %s (%s)\n" % (self.name, message, detail))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass     # a closed stderr must never take the supervisor down
