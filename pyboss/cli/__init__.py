"""The `pyboss` command line (click): exec and the client commands, units, check and the
man pages rendered from the same definitions."""
from .main import cli, main  # noqa: F401  (the console script is pyboss.cli:main)
