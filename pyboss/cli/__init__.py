"""The `pyboss` command line (click): exec and the client commands, units, check and the
man pages rendered from the same definitions.

The console script is pyboss.cli:main. It does not import click for the plain client
commands (see client.py); `cli`, the click group, is loaded when asked for.
"""
from .client import run as main  # noqa: F401


def __getattr__(name):
    if name == "cli":
        from .main import cli
        return cli
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
