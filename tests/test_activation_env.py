"""The socket-activation environment an app gets under pyboss is exactly what systemd's.

libsystemd >= 258 checks LISTEN_PIDFDID against the pidfd of the process itself; systemd
>= 258 sets it for pyboss. Passed through, it would make every libsystemd app under pyboss
find no sockets; each child gets its own value instead (where the kernel has pidfs).
"""
import json
import os
import socket
import subprocess
import sys

import pytest

from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, Notifications, terminate

from pyboss import sd

C_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "listen_report.c")

# Plays systemd >= 258 for pyboss: the socket at fd 3, LISTEN_FDS without names (as
# systemd-socket-activate without --fdname), LISTEN_PID and LISTEN_PIDFDID of its own.
AS_SYSTEMD_258 = r"""
import os, sys
from pyboss import sd
fd = int(sys.argv.pop(1))
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
own = sd.own_pidfd_id()
os.environ["LISTEN_PIDFDID"] = str(own if own is not None else 4242)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def compile_report(tmp_path):
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libsystemd"],
                           capture_output=True, text=True, check=True).stdout.split()
    binary = str(tmp_path / "listen_report")
    subprocess.run(["gcc", "-o", binary, C_PROGRAM] + flags, check=True, timeout=TIMEOUT)
    return binary


def test_libsystemd_program_gets_its_sockets_when_pyboss_has_a_listen_pidfdid(tmp_path):
    binary = compile_report(tmp_path)
    report = tmp_path / "report"
    inherited = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inherited.bind(str(tmp_path / "inherited.sock"))
    inherited.listen()
    upstream = Notifications(str(tmp_path))
    args = [PYTHON, "-c", AS_SYSTEMD_258, str(inherited.fileno())] + PYBOSS + [
        "exec", "--control", str(tmp_path / "c.sock"), "--listen", "web=127.0.0.1:0",
        "--", binary, str(report)]
    with open(tmp_path / "pyboss.log", "w") as log:
        proc = subprocess.Popen(args, pass_fds=[inherited.fileno()], stdout=log,
                                stderr=subprocess.STDOUT,
                                env=dict(os.environ, NOTIFY_SOCKET=upstream.path))
    inherited.close()
    try:
        upstream.wait_for("READY=1")
        lines = report.read_text().splitlines()
        # Both sockets, the unnamed one named as libsystemd names it.
        assert lines[:3] == ["fds 2", "name unknown", "name web"], lines
        _, pidfdid, _, own = lines[3].split()
        expected = own if sd.own_pidfd_id() is not None else "-"
        assert pidfdid == expected, lines[3]
    finally:
        terminate(proc)
        upstream.close()


CHECK_LISTENERS = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.dup2(s.fileno(), 3)
os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web:")
os.dup2(s.fileno(), 4)
from pyboss import sd
if sys.argv[1] == "other":
    os.environ["LISTEN_PIDFDID"] = "1"
elif sys.argv[1] == "own":
    os.environ["LISTEN_PIDFDID"] = str(sd.own_pidfd_id())
print(json.dumps([name for _, name in sd.listen_fds()]))
"""


@pytest.mark.parametrize("pidfdid, names", [
    ("absent", ["web", "unknown"]),
    ("own", ["web", "unknown"]),
    ("other", []),
])
def test_listen_fds_names_unnamed_unknown_and_honours_listen_pidfdid(pidfdid, names):
    if pidfdid == "other" and sd.own_pidfd_id() is None:
        pytest.skip("this kernel has no pidfs: LISTEN_PIDFDID cannot be checked")
    out = subprocess.run([sys.executable, "-c", CHECK_LISTENERS, pidfdid], capture_output=True,
                         text=True, check=True, timeout=TIMEOUT).stdout
    assert json.loads(out) == names
