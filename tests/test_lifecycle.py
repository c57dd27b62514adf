"""Start, crash, respawn, stop: what pyboss leaves behind, and what it never leaves."""
import os
import signal
import socket
import stat
import subprocess
import sys

from other_user import pyboss_as
from pyboss_testing import (PYBOSS, TIMEOUT, Load, Pyboss, children, http_get, open_fds,
                            pid_alive, wait_until)

CHILD_REPORT = r"""
import json, os, sys
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
notify_dir = os.path.dirname(os.environ["NOTIFY_SOCKET"])
report = {"fds": fds, "pid": os.getpid(),
          "env": {k: os.environ.get(k) for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                                                   "PYBOSS_GENERATION", "NOTIFY_SOCKET")},
          "notify_dir_mode": oct(os.stat(notify_dir).st_mode & 0o777)}
import pyboss
report["names"] = [s.getsockname() for s in pyboss.listeners()]
report["web"] = pyboss.listener("web").getsockname()
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
pyboss.ready()
import time
time.sleep(3600)
"""


def test_child_gets_listeners_on_fd3_with_systemd_env_and_nothing_else(start_pyboss, tmp_path):
    import json
    script = tmp_path / "child.py"
    script.write_text(CHILD_REPORT)
    out = tmp_path / "report.json"
    boss = start_pyboss([sys.executable, str(script), str(out)],
                        listen=("web=127.0.0.1:0", "admin=unix:%s" % (tmp_path / "admin.sock")))
    report = json.loads(out.read_text())
    env = report["env"]
    assert env["LISTEN_FDS"] == "2"
    assert env["LISTEN_PID"] == str(report["pid"])
    assert env["LISTEN_FDNAMES"] == "web:admin"
    assert env["PYBOSS_GENERATION"] == "1"
    assert report["notify_dir_mode"] == "0o700"
    # stdin/out/err, the two listeners, and the one fd listdir itself opened: no pyboss fd leaked.
    assert report["fds"][:5] == [0, 1, 2, 3, 4] and len(report["fds"]) <= 6, report["fds"]
    assert report["web"][1] == boss.address()[1]
    assert report["names"][1] == str(tmp_path / "admin.sock")


def test_crashed_generation_is_respawned_on_the_same_socket(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--crash-after 5")       # well after its settle period: a crash while serving
    boss = start_pyboss([app[0]], "--ready-grace", "0.5")
    address = boss.address()
    first = boss.serving()["pid"]
    with open(app[1], "w") as f:
        f.write("")                 # the respawned generation runs fine
    wait_until(lambda: (boss.serving() or {"pid": first})["pid"] != first,
               what="a respawned generation")
    assert boss.address() == address
    assert http_get(address)["generation"] == 2
    assert "generation 1 (pid %d) exited with status 3 while serving" % first in boss.output()


def test_crash_loop_that_never_gets_ready_ends_pyboss_with_status_1(tmp_path, app):
    with open(app[1], "w") as f:
        f.write("--exit-code 4")
    boss = Pyboss(tmp_path, [app[0]], "--crash-limit", "3", wait_ready=False)
    try:
        assert boss.proc.wait(TIMEOUT) == 1
        out = boss.output()
        assert ("giving up: %s failed 3 times in a row without becoming ready (last: "
                "generation 3 (pid" % app[0]) in out
        assert not os.path.exists(boss.control)
    finally:
        boss.close()


def test_exec_failure_is_one_line_at_once_not_a_readiness_timeout(tmp_path):
    missing = str(tmp_path / "no-such-app")
    result = subprocess.run(PYBOSS + ["exec", "--control", str(tmp_path / "c.sock"),
                                      "--ready-timeout", "600", "--listen", "127.0.0.1:0",
                                      "--", missing], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss exec: cannot execute %s: No such file or directory" % missing]
    assert sorted(os.listdir(tmp_path)) == []


def test_command_that_is_not_executable_is_one_line_and_leaves_nothing(tmp_path):
    script = tmp_path / "app"
    script.write_text("#!/bin/sh\n")
    result = subprocess.run(PYBOSS + ["exec", "--control", str(tmp_path / "run" / "c.sock"),
                                      "--listen", "unix:%s" % (tmp_path / "s.sock"),
                                      "--", str(script)], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["pyboss exec: cannot execute %s: Permission denied"
                                          % script]
    assert sorted(os.listdir(tmp_path)) == ["app"]


def test_stop_leaves_no_process_socket_file_or_control_socket(tmp_path, app):
    unix = tmp_path / "app.sock"
    boss = Pyboss(tmp_path, [app[0]], listen=("127.0.0.1:0", "unix:%s" % unix))
    try:
        assert stat.S_ISSOCK(os.stat(unix).st_mode)
        assert boss.reload().returncode == 0
        generation_pids = [pid for pid, _ in children(boss.pid)]
        result = boss.stop()
        assert result.returncode == 0, result.stderr
        assert boss.proc.returncode == 0
        assert not any(pid_alive(pid) for pid in generation_pids)
        # Only what the test itself put there is left: no socket, control socket, notify dir.
        assert sorted(os.listdir(tmp_path)) == ["app", "flags", "t.log", "upstream.notify"]
    finally:
        boss.close()


def test_unix_socket_file_is_the_same_across_reloads(start_pyboss, app, tmp_path):
    unix = str(tmp_path / "app.sock")
    boss = start_pyboss([app[0]], listen=("unix:" + unix,), )
    inode = os.stat(unix).st_ino
    for _ in range(3):
        assert boss.reload().returncode == 0
    assert os.stat(unix).st_ino == inode
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(unix)
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b'"generation": 4' in conn.makefile("rb").read()


def test_sigterm_stops_gracefully_and_sighup_reloads(start_pyboss, app):
    boss = start_pyboss([app[0]])
    boss.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: boss.serving()["number"] == 2, what="the SIGHUP reload")
    pid = boss.serving()["pid"]
    boss.proc.send_signal(signal.SIGTERM)
    assert boss.proc.wait(TIMEOUT) == 0
    assert not pid_alive(pid)
    assert boss.upstream.wait_for("STOPPING=1")


def test_demo_app_stops_at_once_on_sigterm_under_heavy_load(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--work-ms 2")
    boss = start_pyboss([app[0]], "--stop-timeout", "30")
    with Load(boss.address(), threads=16, path="/sleep?ms=5"):
        pid = boss.serving()["pid"]
        boss.proc.send_signal(signal.SIGTERM)
        assert boss.proc.wait(TIMEOUT) == 0
    # Exited by itself (status 0) rather than being SIGKILLed at the stop timeout.
    assert "generation 1 (pid %d) exited with status 0" % pid in boss.output()


def test_app_stuck_on_stop_is_killed_after_stop_timeout(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ignore-term")
    boss = start_pyboss([app[0]], "--stop-timeout", "1")
    pid = boss.serving()["pid"]
    result = boss.stop()
    assert result.returncode == 0
    assert not pid_alive(pid)
    assert "generation 1 (pid %d) killed by SIGKILL" % pid in boss.output()


def test_second_pyboss_with_the_same_control_socket_is_refused_and_first_unharmed(
        start_pyboss, app, tmp_path):
    boss = start_pyboss([app[0]])
    result = subprocess.run(PYBOSS + ["exec", "--control", boss.control, "--", app[0]],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip() == ("pyboss exec: another pyboss is already running with "
                                     "control socket %s: stop it first, or give this one "
                                     "another --name" % boss.control)
    assert boss.status()["state"] == "serving"
    assert boss.reload().returncode == 0


def test_control_socket_refuses_other_users(start_pyboss, app):
    boss = start_pyboss([app[0]])
    result = subprocess.run(pyboss_as("nobody") + ["reload", "--control", boss.control],
                            capture_output=True, text=True, timeout=TIMEOUT, cwd="/",
                            env=dict(os.environ, HOME="/"))
    assert result.returncode == 1
    assert "permission denied" in result.stderr
    assert boss.serving()["number"] == 1


def test_no_zombies_and_no_fd_leak_across_a_thousand_reloads(start_pyboss, tmp_path):
    from pyboss.supervisor.control import request
    # No settle period: a thousand reloads at the default would take an hour.
    boss = start_pyboss(["sleep", "3600"], "--ready-after", "0", "--drain-timeout", "5",
                        "--ready-grace", "0",
                        listen=("127.0.0.1:0", "unix:%s" % (tmp_path / "s.sock")))
    for _ in range(20):          # warm up: the first reloads may allocate for good
        assert request(boss.control, {"command": "reload", "wait": True})["ok"]
    wait_until(lambda: len(children(boss.pid)) == 1, what="drained generations to be reaped")
    fds_before = open_fds(boss.pid)
    for _ in range(1000):
        assert request(boss.control, {"command": "reload", "wait": True}, timeout=TIMEOUT)["ok"]
    wait_until(lambda: len(children(boss.pid)) == 1, what="drained generations to be reaped")
    assert children(boss.pid) == [(boss.serving()["pid"], "S")]
    # The connection of the last request is closed once pyboss sees the client's end.
    wait_until(lambda: len(open_fds(boss.pid)) == len(fds_before),
               what="pyboss's fds to be as before: %s" % fds_before)
    assert boss.serving()["number"] == 1021


def test_exec_failure_at_spawn_time_ends_pyboss_with_one_error_line(tmp_path):
    script = tmp_path / "app"
    script.write_text("#!/no/such/interpreter\n")       # executable, yet execve fails
    script.chmod(0o755)
    result = subprocess.run(PYBOSS + ["exec", "--quiet", "--control", str(tmp_path / "c.sock"),
                                      "--ready-timeout", "600", "--", str(script)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss exec: cannot execute %s: No such file or directory" % script]
    assert sorted(os.listdir(tmp_path)) == ["app"]


def test_supervisor_hands_off_to_a_lean_process_image_keeping_its_pid(start_pyboss, app):
    boss = start_pyboss([app[0]])
    with open("/proc/%d/cmdline" % boss.pid, "rb") as f:
        cmdline = f.read().split(b"\0")
    # The pid that was started is the supervisor (systemd's MAINPID never changes), but
    # its image is pyboss.supervisor.supervise: click parsed the options and was left behind.
    assert boss.status()["pid"] == boss.pid
    assert b"from pyboss.supervisor.supervise import main" in cmdline[2]
    assert cmdline[4:6] == [b"pyboss-exec", b"pyboss"]
