"""Running systemd-analyze and the pyboss CLI on unit files, for the unit tests."""
import os
import re
import shutil
import subprocess
import sys

import pytest


def require_systemd_analyze():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed: cannot verify units")


def pyboss(*args, cwd=None):
    """Run the pyboss CLI as a real process; CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", "pyboss", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def verify_output(unit_files, executables=()):
    """Everything `systemd-analyze verify` prints about the files (stdout and stderr).

    executables: absolute paths (like /usr/bin/pyboss) made to exist for the check,
    through an overlay on their directory in a private mount namespace, so that
    templates naming the installed paths verify as they would once installed.
    """
    argv = ["systemd-analyze", "verify", *map(str, unit_files)]
    if executables:
        if os.geteuid() != 0:
            pytest.skip("verifying as installed needs root for a private mount namespace")
        mounts = []
        for directory in sorted({os.path.dirname(e) for e in executables}):
            fake = os.path.join(str(unit_files[0].parent.parent), "fake" + directory)
            os.makedirs(fake, exist_ok=True)
            for path in executables:
                if os.path.dirname(path) == directory:
                    stub = os.path.join(fake, os.path.basename(path))
                    with open(stub, "w") as f:
                        f.write("#!/bin/sh\nexit 0\n")
                    os.chmod(stub, 0o755)
            mounts.append('mount -t overlay overlay -o "ro,lowerdir=%s:%s" "%s"'
                          % (fake, directory, directory))
        argv = ["unshare", "--mount", "sh", "-c",
                " && ".join(mounts + ['exec "$@"']), "sh", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return (result.stdout + result.stderr).strip()


def exposure(service_file):
    """The overall exposure score of `systemd-analyze security --offline=yes`."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(service_file)],
                            capture_output=True, text=True, timeout=120)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))
