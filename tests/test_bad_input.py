"""Bad input: one line naming the problem and the fix, exit status 2, nothing left behind."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from other_user import pyboss_as
from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, pid_alive, wait_until


def run_exec(tmp_path, *args, user=None):
    pyboss = pyboss_as(user) if user else PYBOSS
    control = tmp_path / "run" / "c.sock"
    return subprocess.run(pyboss + ["exec", "--control", str(control)] + list(args),
                          capture_output=True, text=True, timeout=TIMEOUT,
                          cwd="/" if user else None, env=dict(os.environ, HOME="/"))


@pytest.mark.parametrize("args, message", [
    (["--listen", "tcp:/x", "--", "true"], "cannot parse listen spec 'tcp:/x': use PORT, "
     "HOST:PORT, [V6]:PORT, tcp://HOST:PORT, udp://HOST:PORT, unix:/PATH or unix:@NAME"),
    (["--listen", "99999", "--", "true"], "invalid port '99999' in '99999': use a number from 0 to 65535"),
    (["--listen", "127.0.0.1:8080"], "no COMMAND given: put the program to run after '--', "
     "e.g. pyboss exec --listen :8080 -- myapp"),
    (["--bogus", "--", "true"], "--bogus"),   # click's wording varies by version
    (["--drain-signal", "FOO", "--", "true"], "Invalid value for '--drain-signal': unknown "
     "signal 'FOO': use a name like TERM, INT, QUIT, HUP (with or without SIG, any case) or a "
     "number (see 'pyboss exec --help')"),
    (["--ready-after", "5", "--ready-timeout", "2", "--", "true"],
     "--ready-after 5 must be shorter than --ready-timeout 2"),
    (["--listen", "a=:0", "--listen", "a=:0", "--", "true"], "listener name 'a' given twice: names must be unique"),
    (["--ready-probe", "healthz", "--", "true"], "invalid --ready-probe 'healthz': give an "
     "HTTP path starting with '/', without spaces, e.g. --ready-probe /healthz"),
    (["--ready-probe", "/a b", "--", "true"], "invalid --ready-probe '/a b': give an "
     "HTTP path starting with '/', without spaces, e.g. --ready-probe /healthz"),
    (["--ready-after", "1", "--ready-probe", "/", "--", "true"], "--ready-after and "
     "--ready-probe exclude each other: the probe already tells when the app serves; drop "
     "--ready-after"),
    (["--ready-grace", "5000", "--", "true"], "invalid --ready-grace 5000: give seconds from "
     "0 to 3600"),
    (["--socket-mode", "rw", "--", "true"], "invalid --socket-mode 'rw': give an octal mode like 0660"),
    (["--name", "../x", "--", "true"], "invalid --name '../x': use up to 64 letters, digits, "
     "'_', '-', '.', '@', not starting with '.'"),
    (["--metrics", "unix:/tmp/m.sock", "--", "true"], "invalid --metrics 'unix:/tmp/m.sock': "
     "give HOST:PORT, e.g. 127.0.0.1:9100"),
    (["--metrics", "udp://127.0.0.1:9100", "--", "true"], "invalid --metrics "
     "'udp://127.0.0.1:9100': give HOST:PORT"),
    (["--metrics", "127.0.0.1:99999", "--", "true"], "invalid --metrics '127.0.0.1:99999'"),
    (["--metrics-textfile", "/nonexistent-pyboss-dir/m.prom", "--", "true"], "cannot write "
     "--metrics-textfile /nonexistent-pyboss-dir/m.prom: give a file in an existing, "
     "writable directory"),
    (["--metrics-textfile", "/tmp", "--", "true"], "cannot write --metrics-textfile /tmp: "
     "give a file"),
])
def test_bad_exec_arguments_give_one_line_and_exit_2(tmp_path, args, message):
    result = run_exec(tmp_path, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyboss exec: ")
    assert message in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, prefix", [("--listen", ""), ("--metrics", "--metrics: ")])
def test_address_in_use_is_one_line_and_leaves_nothing(tmp_path, option, prefix):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_exec(tmp_path, "--listen", "unix:%s" % (tmp_path / "a.sock"),
                          option, "127.0.0.1:%d" % port, "--", "true")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    # The holder is this very test process.
    assert line.startswith("pyboss exec: %scannot listen on tcp://127.0.0.1:%d: Address "
                           "already in use (held by pid %d (" % (prefix, port, os.getpid())), line
    assert line.endswith("); stop it or choose another port)"), line
    # The unix socket bound before the failure was removed again.
    assert os.listdir(tmp_path) == []


def test_permission_denied_is_one_line(tmp_path):
    os.chmod(tmp_path, 0o755)
    result = run_exec(tmp_path, "--control", "/tmp/pyboss-test-nobody-%d.sock" % os.getpid(),
                      "--listen", "80", "--", "true", user="nobody")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss exec: cannot listen on tcp://:80: Permission denied (ports below 1024 need root "
        "or CAP_NET_BIND_SERVICE; for a path, check the directory's permissions)"]
    assert not os.path.exists("/tmp/pyboss-test-nobody-%d.sock" % os.getpid())


def test_unix_path_that_is_not_a_socket_is_refused_and_kept(tmp_path):
    precious = tmp_path / "data"
    precious.write_text("keep me")
    result = run_exec(tmp_path, "--listen", "unix:%s" % precious, "--", "true")
    assert result.returncode == 2
    assert "the path exists and is not a socket; remove it or choose another path" in result.stderr
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize("directory_length, control, probe, message", [
    # the control socket itself
    (80, "c" * 27 + ".sock", False, "the control socket %(dir)s/%(name)s would be 113 bytes "
     "long, and a unix socket's path can be at most 107: choose a shorter --control PATH"),
    # pyboss's notify socket, in a private directory beside it
    (84, "c.sock", False, "pyboss's notify socket %(dir)s/.pyboss-XXXXXXXX/notify would be "
     "108 bytes long, and a unix socket's path can be at most 107: choose a --control PATH "
     "in a shorter directory"),
    # a probe socket in that directory: checked for generations up to 99,999 in the slots
    # of --workers (3 here)
    (83, "c.sock", True, "/99999-2 would be 108 bytes long, and a unix socket's "
     "path can be at most 107: choose a --control PATH in a shorter directory"),
])
def test_control_paths_too_long_for_a_unix_socket_are_refused_at_start(
        directory_length, control, probe, message):
    # Not in tmp_path: the lengths must not depend on where pytest keeps its files.
    base = tempfile.mkdtemp(prefix="pb-")
    try:
        directory = os.path.join(base, "d" * (directory_length - len(base) - 1))
        assert len(directory) == directory_length
        args = ["--listen", "127.0.0.1:0"] + \
            (["--ready-probe", "/", "--workers", "3"] if probe else [])
        result = subprocess.run(PYBOSS + ["exec", "--control", os.path.join(directory, control)]
                                + args + ["--", PYTHON, "-m", "pyboss.demo"],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert line.startswith("pyboss exec: ")
        assert message % {"dir": directory, "name": control} in line, line
        assert os.listdir(base) == []       # the directories pyboss made are gone again
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("command", ["reload", "stop", "status"])
def test_client_with_a_control_path_too_long_for_a_unix_socket_says_so(command):
    path = "/tmp/" + "d" * 100 + "/c.sock"
    result = subprocess.run(PYBOSS + [command, "--control", path], capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss: the control socket %s would be 112 bytes long, and a unix socket's path can "
        "be at most 107: choose a shorter --control PATH" % path]


@pytest.mark.parametrize("command", ["reload", "stop", "status"])
def test_control_commands_without_a_running_pyboss_say_so(tmp_path, command):
    result = subprocess.run(PYBOSS + [command, "--control", str(tmp_path / "none.sock")],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "pyboss: no pyboss is running with control socket %s (start it with 'pyboss exec', "
        "or pass the right --name/--control)" % (tmp_path / "none.sock")]


def test_unknown_subcommand_is_one_line():
    result = subprocess.run(PYBOSS + ["relaod"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "No such command 'relaod'" in result.stderr


def test_help_reads_like_a_man_page():
    result = subprocess.run(PYBOSS + ["exec", "--help"], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0
    for option in ("--listen", "--ready-after", "--ready-timeout", "--drain-signal",
                   "--drain-timeout", "--stop-signal", "--stop-timeout", "--socket-mode"):
        assert option in result.stdout
    assert "LISTEN_FDS" in result.stdout and "Exit status" in result.stdout


def test_port_held_by_a_dead_pybosss_generation_names_the_holder(start_pyboss, app, tmp_path):
    boss = start_pyboss([app[0]])
    host, port = boss.address()
    app_pid = boss.serving()["pid"]
    os.kill(boss.pid, signal.SIGKILL)      # pyboss gone; its generation keeps the port
    boss.proc.wait(TIMEOUT)
    try:
        result = run_exec(tmp_path, "--listen", "%s:%d" % (host, port), "--", app[0])
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "pyboss exec: cannot listen on tcp://%s:%d: Address already in use (held by pid %d "
            "(%s -m pyboss.demo, generation 1 of a pyboss that is no longer running); stop it "
            "or choose another port)" % (host, port, app_pid, PYTHON)]
    finally:
        os.kill(app_pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(app_pid), what="the orphaned generation to exit")
