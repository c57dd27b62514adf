"""Find the peers, or install them the ordinary way: apt for start_server (Debian's
libserver-starter-perl), pip into this interpreter for Python packages.

Each function returns None when the thing is there, or the reason it cannot be had.
"""
import importlib.util
import os
import shutil
import subprocess
import sys


def _run(argv):
    sys.stderr.write("benchmark: installing: %s\n" % " ".join(argv))
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def ensure_start_server():
    if shutil.which("start_server"):
        return None
    if not shutil.which("apt-get"):
        return "start_server not found and no apt-get to install libserver-starter-perl"
    if os.geteuid() != 0:
        return ("start_server not found; install it with "
                "`sudo apt-get install libserver-starter-perl`")
    install = ["apt-get", "install", "-y", "-q", "libserver-starter-perl"]
    if _run(install).returncode != 0:
        _run(["apt-get", "update", "-q"])
        done = _run(install)
        if done.returncode != 0:
            return "apt-get install libserver-starter-perl failed: %s" % (
                done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
    return None if shutil.which("start_server") else "start_server still not on PATH"


def ensure_python_package(module, requirement):
    if importlib.util.find_spec(module) is not None:
        return None
    done = _run([sys.executable, "-m", "pip", "install", "-q", requirement])
    importlib.invalidate_caches()
    if done.returncode != 0 or importlib.util.find_spec(module) is None:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        return "pip install %s failed: %s" % (requirement, last)
    return None
