"""Numbers and signals as operators write them, checked once at the start.

Pure functions (no click): the command line wraps them as option types (options.py), and
the lean supervisor uses them for values it reads later (start_server's envdir).
"""
import math
import signal

# A week: longer than any sane drain or ready time, short enough for every timer and
# for systemd's usec fields. inf, nan and 1e10 are refused here, not at the first reload.
MAX_SECONDS = 7 * 24 * 3600

# What pyboss sends by name at stop time must have a name, and must be catchable by the
# app: SIGKILL and SIGSTOP would skip the app's own shutdown.
UNCATCHABLE = (signal.SIGKILL, signal.SIGSTOP)


def seconds(text, maximum=MAX_SECONDS):
    """'2.5' -> 2.5, or ValueError naming the accepted range."""
    try:
        value = float(text)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= maximum):
        raise ValueError("%r is not a number of seconds from 0 to %d" % (text, maximum))
    return value


def signal_number(text):
    """'TERM', 'SIGTERM', 'term', '15' -> 15, or ValueError saying what is accepted."""
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    else:
        name = str(text).strip().upper()
        if name.isdigit() and len(name) < 4:
            number = int(name)
        else:
            try:
                number = int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])
            except KeyError:
                raise ValueError("unknown signal %r: use a name like TERM, INT, QUIT, HUP (with "
                                 "or without SIG, any case) or a number" % str(text)) from None
    try:
        signum = signal.Signals(number)
    except ValueError:
        raise ValueError("signal %r has no name pyboss can send: use a name like TERM, INT, "
                         "QUIT, HUP" % str(text)) from None
    if signum in UNCATCHABLE:
        raise ValueError("%s cannot be caught: the app could not shut down cleanly; use TERM, "
                         "INT, QUIT or HUP" % signum.name)
    return int(signum)
