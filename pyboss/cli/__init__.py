"""The `pyboss` command line (click): exec and the client commands, units, check and the
man pages rendered from the same definitions.

The console script is pyboss.cli:main. The plain client commands run without click
(client.py); everything else goes to the click group, `cli`, loaded when asked for.
"""
import os
import sys

from .client import lean_command, say


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    link = os.path.basename(sys.argv[0]) == "start_server"
    command = lean_command(list(argv), start_server_link=link)
    if command is None:
        from .main import main as click_main
        return click_main(argv)
    try:
        code = command()
    except KeyboardInterrupt:
        say("", err=True)         # as click does on ^C
        code = 130
    sys.exit(code or 0)


def __getattr__(name):
    if name == "cli":
        from .main import cli
        return cli
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
