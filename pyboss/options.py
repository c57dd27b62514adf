"""Option types shared by pyboss's commands."""
import os
import signal

import click

from .errors import UserError

SECONDS = click.FloatRange(min=0)


class SignalType(click.ParamType):
    """A signal as operators write it: TERM, SIGTERM, term, or a number."""
    name = "SIGNAL"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper()
        if text.isdigit() and 0 < int(text) < signal.NSIG:
            return int(text)
        try:
            return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
        except KeyError:
            self.fail("unknown signal %r: use a name like TERM, INT, QUIT, HUP (with or "
                      "without SIG, any case) or a number" % value, param, ctx)


def check_executable(program):
    """Refuse a COMMAND that cannot run before binding anything (exec reports it again
    on every later spawn, when a new build may have broken it)."""
    if "/" in program:
        candidates = [program]
    else:
        candidates = [os.path.join(d or ".", program)
                      for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise UserError("cannot execute %s: No such file or directory" % program)
    if not any(os.access(c, os.X_OK) for c in found):
        raise UserError("cannot execute %s: Permission denied" % program)
