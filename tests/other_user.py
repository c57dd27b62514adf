"""pyboss run as another user (nobody), from wherever the checkout is.

A clone under /root (mode 0700) and its venv cannot be read by nobody: the venv's
interpreter would start without its site-packages and say "No module named pyboss".
So the pyboss package and click (all that `pyboss exec` and the client need) are copied
once per test run into a world-readable directory, and run by the interpreter the venv
was made from, which is outside the checkout.
"""
import atexit
import os
import shutil
import sys
import tempfile

_copy = None


def readable_copy():
    """A directory holding pyboss and click, readable by every user; removed at exit."""
    global _copy
    if _copy is None:
        import click
        import pyboss
        directory = tempfile.mkdtemp(prefix="pyboss-for-other-users-")
        atexit.register(shutil.rmtree, directory, True)
        for package in (pyboss, click):
            source = os.path.dirname(package.__file__)
            shutil.copytree(source, os.path.join(directory, os.path.basename(source)),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for path, dirs, files in os.walk(directory):
            os.chmod(path, 0o755)
            for name in files:
                os.chmod(os.path.join(path, name), 0o644)
        _copy = directory
    return _copy


# The interpreter the venv was made from, outside the checkout.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def pyboss_argv():
    """argv prefix: `pyboss` from the readable copy, for any user to run."""
    start = ("import runpy, sys; sys.path.insert(0, %r); sys.argv[0] = 'pyboss'; "
             "runpy.run_module('pyboss', run_name='__main__')" % readable_copy())
    return [BASE_PYTHON, "-s", "-c", start]


def pyboss_as(user, group="nogroup"):
    """argv prefix: `pyboss` as USER:GROUP with no supplementary groups."""
    return ["setpriv", "--reuid=%s" % user, "--regid=%s" % group, "--clear-groups"] + \
        pyboss_argv()
