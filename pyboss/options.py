"""Option types shared by pyboss's commands."""
import signal

import click

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
