"""`pyboss start-server` behaves as start_server 0.35 for a program written for it."""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from pyboss_testing import PYBOSS, TIMEOUT, pid_alive, wait_until
from starter_testing import (StartServer, ports_of, request_tcp, request_udp,
                             request_unix)


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(*args, **kw):
        server = StartServer(tmp_path, *args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_child_finds_tcp_udp_chosen_fd_and_unix_sockets_in_server_starter_port(start_server):
    server = start_server("--port", "127.0.0.1:0", "--port", "127.0.0.1:u0",
                          "--port", "127.0.0.1:0=9", "--port", "[::1]:0", "--path", "app.sock",
                          "--backlog", "77", "--interval", "0.2")
    reply = server.get()
    env = reply["env"]
    ports = ports_of(env["SERVER_STARTER_PORT"])
    tcp, udp, chosen, v6 = [k for k in ports if k != "app.sock"]
    # start_server's layout: ports first (fds 3, 4, the chosen 9, 5), then paths (6);
    # the path as given, the hosts and the real ports of port 0.
    assert list(ports.values()) == [3, 4, 9, 5, 6]
    assert reply["key"] == "app.sock"
    assert all(k.startswith("127.0.0.1:") and not k.endswith(":0") for k in (tcp, udp, chosen))
    assert v6.startswith("[::1]:") and not v6.endswith(":0")
    assert env["SERVER_STARTER_GENERATION"] == "1"
    assert "LISTEN_FDS" not in env and "LISTEN_PID" not in env
    assert {3, 4, 5, 6, 9} <= set(reply["fds"])

    def address(key):
        host, _, port = key.rpartition(":")
        return host.strip("[]"), int(port)
    assert request_tcp(address(tcp))["key"] == tcp
    assert request_tcp(address(v6))["key"] == v6
    assert request_tcp(address(chosen))["key"] == chosen
    assert request_udp(address(udp))["key"] == udp
    listening = subprocess.run(["ss", "-ltnH", "sport", "=", str(address(tcp)[1])],
                               capture_output=True, text=True).stdout.split()
    assert listening[:3] == ["LISTEN", "0", "77"], listening      # --backlog
    assert oct(os.stat(server.sock).st_mode & 0o777) == "0o777"  # as start_server's umask 0


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not shutil.which("start_server"), reason="Perl's start_server is not "
                    "installed (apt-get install libserver-starter-perl)")
def test_children_see_what_perl_start_server_gives_them(tmp_path):
    tcp, udp = free_port(), free_port()
    seen = {}
    for which in ("perl", "pyboss"):
        d = tmp_path / which
        d.mkdir()
        server = StartServer(d, "--port", "127.0.0.1:%d=7" % tcp, "--port", "u%d" % udp,
                             "--path", "app.sock", "--status-file", "app.status", wait=False,
                             perl=which == "perl")
        try:
            server.wait_status([1])
            reply = server.get()
        finally:
            assert server.term() == 0
        ports = ports_of(reply["env"]["SERVER_STARTER_PORT"])
        assert set(ports.values()) <= set(reply["fds"])
        seen[which] = (reply["env"]["SERVER_STARTER_GENERATION"], list(ports), ports["127.0.0.1:%d" % tcp])
    # The fd numbers not chosen with =FD differ: Perl's own script holds fd 3.
    assert seen["pyboss"] == seen["perl"] == ("1", ["127.0.0.1:%d" % tcp, str(udp), "app.sock"], 7)


@pytest.mark.skipif(not shutil.which("start_server"), reason="Perl's start_server is not installed")
def test_children_start_with_sigpipe_ignored_as_under_perl_start_server(tmp_path):
    ignored = {}
    for which in ("perl", "pyboss"):
        d = tmp_path / which
        d.mkdir()
        report = d / "sigign"
        server = StartServer(d, "--path", "app.sock", "--interval", "0", wait=False,
                             perl=which == "perl", command=["sh", "-c", "grep ^SigIgn: "
                             "/proc/$$/status > %s.tmp; mv %s.tmp %s; exec sleep 60"
                             % (report, report, report)])
        wait_until(report.exists, what="the worker's signal report")
        assert server.term() == 0
        ignored[which] = int(report.read_text().split()[1], 16) & (1 << (signal.SIGPIPE - 1))
    assert ignored["pyboss"] == ignored["perl"] != 0


def test_hup_and_term_keep_the_status_and_pid_files(start_server):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--pid-file", "app.pid",
                          "--status-file", "app.status", flags="term-delay=1.5")
    with open(server.pid_file) as f:
        assert f.read() == "%d\n" % server.proc.pid
    first = server.wait_status([1])[1]
    server.hup()
    server.upstream.wait_for("READY=1")
    # The old worker drains for term-delay: both are listed, in order, replaced atomically.
    both = server.status()
    assert sorted(both) == [1, 2] and both[1] == first
    with open(server.status_file) as f:
        assert f.read() == "1:%d\n2:%d\n" % (first, both[2])
    server.wait_status([2])
    assert server.get()["generation"] == 2
    assert server.term() == 0
    assert not os.path.exists(server.status_file) and not os.path.exists(server.pid_file)
    assert not os.path.exists(server.sock)
    assert not pid_alive(both[2])


def test_second_instance_on_the_same_pid_file_refuses_to_start(start_server, tmp_path):
    server = start_server("--path", "app.sock", "--interval", "0.1", "--pid-file", "app.pid")
    other = tmp_path / "other"
    other.mkdir()
    result = subprocess.run(PYBOSS + ["start-server", "--pid-file", server.pid_file, "--path",
                                      str(other / "b.sock"), "--", "true"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss start-server: another start_server (pid %d) is running with --pid-file %s: "
        "stop it first (--stop) or choose another pid file" % (server.proc.pid, server.pid_file)]
    with open(server.pid_file) as f:
        assert f.read() == "%d\n" % server.proc.pid
    assert os.listdir(other) == []
    assert server.get()["generation"] == 1


@pytest.mark.parametrize("args, message", [
    (["--signal-on-hup", "FOO", "--", "true"], "Invalid value for '--signal-on-hup': unknown "
     "signal 'FOO'"),
    (["--signal-on-term", "SIGBOGUS", "--", "true"], "unknown signal 'SIGBOGUS'"),
    (["--port", "http", "--", "true"], "invalid --port 'http': use PORT, HOST:PORT"),
    (["--port", "80=3", "--port", "81=3", "--", "true"], "fd 3 chosen twice"),
    (["--path", "x.sock"], "server program not specified"),
    (["--daemonize", "--", "true"], "--daemonize needs --log-file"),
    (["--restart", "--pid-file", "p"], "--restart needs --pid-file and --status-file"),
    (["--stop"], "--stop needs --pid-file"),
    (["--dir", "/nonexistent", "--", "true"], "--dir /nonexistent is not a directory"),
    (["--", "/nonexistent/app"], "cannot execute /nonexistent/app"),
    (["--status-file", "/nonexistent/s", "--", "true"], "--status-file /nonexistent/s: cannot write in /nonexistent"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = subprocess.run(PYBOSS + ["start-server"] + args, capture_output=True, text=True,
                            timeout=TIMEOUT, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyboss start-server: "), result.stderr
    assert message in lines[0]
    assert os.listdir(tmp_path) == []


def test_signal_names_with_or_without_sig_in_any_case(start_server):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--status-file",
                          "app.status", "--signal-on-hup", "usr1", "--signal-on-term", "SigInt",
                          flags="drain-on=SIGUSR1")
    first = server.get()["pid"]
    server.hup()
    server.upstream.wait_for("READY=1")
    # The old worker drains only on USR1, so its exit proves USR1 was sent.
    server.wait_status([2])
    wait_until(lambda: not pid_alive(first), what="the old worker gone after SIGUSR1")
    assert server.term() == 0
    assert "stopping: SIGINT to every generation" in server.output()


def test_envdir_is_read_again_on_every_hup(start_server, tmp_path):
    envdir = tmp_path / "env"
    envdir.mkdir()
    (envdir / "APP_COLOR").write_text("blue\nignored second line\n")
    (envdir / ".hidden").write_text("x")
    server = start_server("--path", "app.sock", "--interval", "0.2", "--envdir", "env",
                          "--status-file", "app.status")
    env = server.get()["env"]
    assert env["APP_COLOR"] == "blue" and ".hidden" not in env
    assert env["ENVDIR"] == str(envdir)
    (envdir / "APP_COLOR").write_text("green")
    (envdir / "APP_SIZE").write_text("10\n")
    server.hup()
    server.upstream.wait_for("READY=1")
    server.wait_status([2])       # until then generation 1 may still take the request
    env = server.get()["env"]
    assert (env["SERVER_STARTER_GENERATION"], env["APP_COLOR"], env["APP_SIZE"]) == ("2", "green", "10")


def test_kill_old_delay_holds_back_the_signal_to_old_workers(start_server):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--status-file",
                          "app.status", "--kill-old-delay", "1.5")
    server.hup()
    server.upstream.wait_for("READY=1")
    promoted = time.monotonic()
    assert sorted(server.status()) == [1, 2]
    server.wait_status([2])
    assert time.monotonic() - promoted >= 1.4
    assert "gets SIGTERM in 1.5s (kill-old-delay)" in server.output()


@pytest.mark.parametrize("args, env, delay", [
    (["--kill-old-delay"], {}, "5"),                      # a flag alone: 5 s
    ([], {"KILL_OLD_DELAY": "7"}, "7"),
    (["--enable-auto-restart"], {}, "5"),                 # start_server's default with it
])
def test_kill_old_delay_as_a_flag_and_from_the_environment(start_server, args, env, delay):
    server = start_server("--path", "app.sock", "--interval", "0.2", *args, env=env)
    old = server.get()["pid"]
    server.hup()
    server.upstream.wait_for("READY=1")
    assert "gets SIGTERM in %ss (kill-old-delay)" % delay in server.output()
    assert pid_alive(old)
    started = time.monotonic()
    assert server.term() == 0          # a stop does not wait out the delay
    assert time.monotonic() - started < 4
    assert not pid_alive(old)


@pytest.mark.parametrize("args, env", [
    (["--enable-auto-restart", "--auto-restart-interval", "1", "--kill-old-delay", "0"], {}),
    ([], {"ENABLE_AUTO_RESTART": "1", "AUTO_RESTART_INTERVAL": "1", "KILL_OLD_DELAY": "0"}),
])
def test_auto_restart_starts_a_new_generation_by_itself(start_server, args, env):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--status-file",
                          "app.status", *args, env=env)
    server.upstream.wait_for("READY=1")
    server.wait_status([2])
    assert server.get()["generation"] == 2
    assert "auto-restart after" in server.output()


def test_crashed_worker_is_started_again(start_server):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--status-file", "app.status")
    os.kill(server.get()["pid"], signal.SIGKILL)
    server.wait_status([2])
    assert server.get()["generation"] == 2


def test_restart_from_a_second_process_returns_when_the_new_generation_needed_retries(start_server, tmp_path):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--pid-file", "app.pid",
                          "--status-file", "app.status")
    # The next build fails once: generation 2 dies, 3 serves. start_server 0.35's
    # --restart waits for "newest + 1" = 2 and never returns.
    server.set_flags("fail-once=%s" % (tmp_path / "failed-once"))
    result = server.cli("--restart", "--pid-file", "app.pid", "--status-file", "app.status")
    assert result.returncode == 0, result.stderr
    assert server.status() == {3: server.get()["pid"]}
    assert "seems to have failed to start" in server.output()


def test_stop_from_a_second_process_returns_once_start_server_exited(start_server):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--pid-file", "app.pid",
                          flags="term-delay=1")
    worker = server.get()["pid"]
    result = server.cli("--stop", "--pid-file", "app.pid")
    assert result.returncode == 0, result.stderr
    # Returned only once start_server let go of its pid file, after its worker was gone.
    assert not pid_alive(worker)
    assert not os.path.exists(server.pid_file)
    assert server.proc.wait(TIMEOUT) == 0
    assert not os.path.exists(server.pid_file)
    again = server.cli("--stop", "--pid-file", "app.pid")
    assert again.returncode == 1 and "cannot open --pid-file" in again.stderr


def test_a_second_hup_while_old_workers_drain_is_honoured(start_server):
    server = start_server("--path", "app.sock", "--interval", "0.2", "--status-file",
                          "app.status", flags="term-delay=2")
    server.hup()
    server.upstream.wait_for("READY=1")
    assert sorted(server.status()) == [1, 2]
    server.hup()                       # generation 1 is still draining
    server.upstream.wait_for("READY=1")
    assert sorted(server.status()) == [1, 2, 3]
    server.wait_status([3])
    assert server.get()["generation"] == 3


def test_stale_unix_socket_is_replaced_and_removed_at_exit(tmp_path, start_server):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "app.sock"))
    stale.close()                      # the file stays, nobody listens
    server = start_server("--path", "app.sock", "--interval", "0.1")
    assert server.get()["generation"] == 1
    assert server.term() == 0
    assert not os.path.exists(server.sock)


def test_dir_and_log_file(start_server, tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "start.log").write_text("earlier run\n")
    server = start_server("--path", "app.sock", "--interval", "0.1", "--dir", "www",
                          "--log-file", "start.log")
    assert server.get()["cwd"] == str(tmp_path / "www")
    assert server.term() == 0
    log = (tmp_path / "start.log").read_text()
    assert log.startswith("earlier run\n")                   # appended to
    assert "generation 1 (pid " in log and "ready after" in log
    assert "every generation is gone" in log
    assert "starting now" in server.output()                  # said before redirecting


def test_wait_ready_counts_a_worker_as_started_at_ready_not_after_interval(start_server):
    started = time.monotonic()
    server = start_server("--path", "app.sock", "--interval", "0", "--wait-ready",
                          flags="ready ready-delay=1")
    assert time.monotonic() - started >= 1.0
    assert "NOTIFY_SOCKET" in server.get()["env"]


def test_daemonize_with_a_log_command_and_stop(tmp_path):
    log = tmp_path / "daemon.log"
    pid_file = tmp_path / "app.pid"
    (tmp_path / "flags").write_text("")
    from starter_testing import APP, PYTHON
    result = subprocess.run(PYBOSS + ["start-server", "--daemonize", "--log-file",
                                      "| cat >> %s" % log, "--pid-file", str(pid_file),
                                      "--path", str(tmp_path / "app.sock"), "--interval", "0.1",
                                      "--", PYTHON, APP, str(tmp_path / "flags")],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"),
               what="the daemon's pid file")
    daemon = int(pid_file.read_text())
    reply = wait_until(lambda: _try(request_unix, str(tmp_path / "app.sock")), what="serving")
    assert reply["generation"] == 1
    assert os.getsid(daemon) != os.getsid(0)        # detached into a session of its own
    assert "start_server (pid:" in result.stderr      # said on the terminal, before detaching
    stop = subprocess.run(PYBOSS + ["start-server", "--stop", "--pid-file", str(pid_file)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert stop.returncode == 0, stop.stderr
    # The lock is let go as the daemon's fds close on exit: gone, or all but.
    wait_until(lambda: not pid_alive(daemon), timeout=2, what="the daemon gone")
    # The log command got everything, and start_server waited for it to finish.
    assert "every generation is gone" in log.read_text()


def _try(func, *args):
    try:
        return func(*args)
    except OSError:
        return None


def test_invoked_as_start_server_it_is_start_server(tmp_path):
    link = tmp_path / "start_server"
    link.symlink_to(os.path.join(os.path.dirname(PYBOSS[0]), "pyboss"))
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.startswith("pyboss start-server ") and "start_server 0.35" in version.stdout
    helped = subprocess.run([str(link), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: start_server [OPTIONS] [COMMAND]...")
    assert "--signal-on-hup" in helped.stdout and "--kill-old-delay" in helped.stdout
    bad = subprocess.run([str(link), "--port", "nope", "--", "true"], capture_output=True,
                         text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("start_server: invalid --port 'nope'")
