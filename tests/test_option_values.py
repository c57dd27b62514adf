"""Every value is checked at the start: one line naming it, exit status 2, nothing left."""
import os
import subprocess

import pytest

from other_user import pyboss_as
from pyboss_testing import PYBOSS, TIMEOUT

BAD_SECONDS = ["inf", "-inf", "nan", "1e10", "-1", "604801", "ten"]


def run(args, env=None, cwd=None, user=None, **kw):
    # Another user runs pyboss from a copy it can read (the clone may sit under /root).
    argv = pyboss_as(user) + args if user else PYBOSS + args
    return subprocess.run(argv, capture_output=True, text=True,
                          timeout=TIMEOUT, env=dict(os.environ, HOME="/", **(env or {})),
                          cwd=cwd, **kw)


def assert_one_line_exit_2(result, command, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyboss %s: " % command), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--ready-after", "--ready-timeout", "--drain-timeout",
                                    "--stop-timeout"])
@pytest.mark.parametrize("value", BAD_SECONDS)
def test_exec_refuses_seconds_that_are_not_finite_and_in_range(tmp_path, option, value):
    control = tmp_path / "run" / "c.sock"
    result = run(["exec", "--control", str(control), option, value, "--", "true"])
    assert_one_line_exit_2(result, "exec", option, "is not a number of seconds from 0 to 604800")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["--drain-signal", "--stop-signal"])
@pytest.mark.parametrize("value, message", [
    ("40", "signal '40' has no name pyboss can send"),
    ("KILL", "SIGKILL cannot be caught"),
    ("9", "SIGKILL cannot be caught"),
    ("SIGSTOP", "SIGSTOP cannot be caught"),
    ("0", "signal '0' has no name pyboss can send"),
    ("99999999999999999999", "unknown signal"),
])
def test_exec_refuses_signals_it_cannot_name_or_the_app_cannot_catch(tmp_path, option, value,
                                                                     message):
    result = run(["exec", "--control", str(tmp_path / "c.sock"), option, value, "--", "true"])
    assert_one_line_exit_2(result, "exec", option, message)


@pytest.mark.parametrize("option, value", [("--max-draining", "1001"), ("--crash-limit", "0"),
                                           ("--backlog", "1e10")])
def test_exec_refuses_counts_out_of_range(tmp_path, option, value):
    result = run(["exec", "--control", str(tmp_path / "c.sock"), option, value, "--", "true"])
    assert_one_line_exit_2(result, "exec", option)


@pytest.mark.parametrize("args, fragment", [
    (["--kill-old-delay", "inf"], "'inf' is not a number of seconds"),
    (["--interval", "nan"], "'nan' is not a number of seconds"),
    (["--ready-timeout", "1e10"], "'1e10' is not a number of seconds"),
    (["--auto-restart-interval", "-5"], "'-5' is not a number of seconds"),
    (["--signal-on-hup", "40"], "signal '40' has no name pyboss can send"),
    (["--signal-on-term", "KILL"], "SIGKILL cannot be caught"),
    (["--backlog", "99999999999"], "--backlog"),
])
def test_start_server_refuses_bad_values(tmp_path, args, fragment):
    result = run(["start-server", "--port", "127.0.0.1:0"] + args + ["--", "true"], cwd=tmp_path)
    assert_one_line_exit_2(result, "start-server", fragment)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("variable", ["KILL_OLD_DELAY", "AUTO_RESTART_INTERVAL"])
def test_start_server_refuses_bad_seconds_in_its_environment(tmp_path, variable):
    result = run(["start-server", "--port", "127.0.0.1:0", "--", "true"], cwd=tmp_path,
                 env={variable: "inf"})
    assert_one_line_exit_2(result, "start-server", "invalid $%s: 'inf'" % variable)


@pytest.mark.parametrize("args, fragment", [
    (["--drain-timeout", "inf"], "'inf' is not a number of seconds"),
    (["--ready-timeout", "nan"], "'nan' is not a number of seconds"),
    (["--stop-signal", "40"], "signal '40' has no name pyboss can send"),
    (["--drain-signal", "STOP"], "SIGSTOP cannot be caught"),
    (["--backlog", "70000"], "--backlog"),
])
def test_units_refuses_bad_values(tmp_path, args, fragment):
    result = run(["units", "myapp", "--listen", ":8080", "--output", str(tmp_path)] + args
                 + ["--", "/bin/true"])
    assert_one_line_exit_2(result, "units", fragment)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["status", "stop", "reload"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e10"])
def test_clients_refuse_a_timeout_that_is_not_finite_and_in_range(tmp_path, command, value):
    result = run([command, "--control", str(tmp_path / "c.sock"), "--timeout", value])
    assert_one_line_exit_2(result, command, "--timeout", "is not a number of seconds from 0 "
                           "to 86400")


LISTEN_FDS_EXEC = """
import os, sys
pid = os.fork()
if pid:
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
os.closerange(3, 64)
if sys.argv[1] == "file":
    fd = os.open("/etc/hostname", os.O_RDONLY)
    if fd != 3:
        os.dup2(fd, 3)
    os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS=sys.argv[2], LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "pyboss", "exec", "--control", sys.argv[3],
                          "--", "true"])
"""


@pytest.mark.parametrize("what, count, message", [
    ("nothing", "5", "LISTEN_FDS=5 names fd 3, which is not open: check the socket unit, or "
     "whoever set LISTEN_FDS and LISTEN_PID"),
    ("file", "1", "inherited fd 3"),
])
def test_listen_fds_naming_fds_that_are_not_open_sockets_is_an_error(tmp_path, what, count,
                                                                     message):
    import sys
    control = tmp_path / "run" / "c.sock"
    result = subprocess.run([sys.executable, "-c", LISTEN_FDS_EXEC, what, count, str(control)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert_one_line_exit_2(result, "exec", message)
    assert not (tmp_path / "run").exists()


def test_non_root_control_under_run_is_one_line(tmp_path):
    result = run(["exec", "--control", "/run/pyboss/x.sock", "--", "true"], user="nobody")
    assert_one_line_exit_2(result, "exec", "/run/pyboss", "Permission denied",
                           "use --control PATH in a directory you may write to")
