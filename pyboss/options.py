"""Option types shared by pyboss's commands: every value checked before anything runs."""
import os

import click

from . import values
from .errors import UserError


class Seconds(click.ParamType):
    """A finite number of seconds from 0 to values.MAX_SECONDS (inf, nan, 1e10 refused)."""
    name = "SECONDS"

    def __init__(self, maximum=values.MAX_SECONDS):
        self.maximum = maximum

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            text = value
        else:
            text = str(value)
        try:
            return values.seconds(text, self.maximum)
        except ValueError as e:
            self.fail(str(e), param, ctx)


SECONDS = Seconds()


class SignalType(click.ParamType):
    """A signal as operators write it: TERM, SIGTERM, term, or a number; one pyboss can
    name and send, and the app can catch."""
    name = "SIGNAL"

    def convert(self, value, param, ctx):
        try:
            return values.signal_number(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


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
