"""pyboss.Boss: the example blogs supervise themselves, in the manner of littleboss."""
import os
import signal
import socket
import subprocess

import pytest

from pyboss_testing import (PYTHON, TIMEOUT, Load, Notifications, http_get, pid_alive, terminate,
                            wait_until)

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Blog:
    """One copy of an example program in its own directory, as a deploy would put it."""

    def __init__(self, tmp_path, where, version="1", example="myblog.py", edit=None):
        directory = tmp_path / where
        directory.mkdir()
        with open(os.path.join(EXAMPLES, example)) as f:
            source = f.read().replace('VERSION = "1"', 'VERSION = "%s"' % version)
        if edit:
            source = edit(source)
        self.path = str(directory / example)
        with open(self.path, "w") as f:
            f.write(source)
        self.cwd = str(directory)
        self.env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp_path))

    def run(self, *args, **kw):
        return subprocess.run([PYTHON, self.path] + list(args), capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=self.cwd, env=self.env, **kw)

    def spawn(self, *args, notify=None):
        env = dict(self.env, NOTIFY_SOCKET=notify.path) if notify else self.env
        return subprocess.Popen([PYTHON, self.path] + list(args), cwd=self.cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in started:
        terminate(proc)


def test_bypass_runs_main_directly_with_the_programs_own_options(tmp_path, processes):
    blog, port = Blog(tmp_path, "v1"), free_port()
    ready = Notifications(str(tmp_path))
    proc = blog.spawn("--greeting", "hi", "--http=127.0.0.1:%d" % port, notify=ready)
    processes.append(proc)
    ready.wait_for("READY=1")          # handle.ready() tells systemd, when run under it
    reply = http_get(("127.0.0.1", port))
    assert (reply["pid"], reply["greeting"], reply["generation"]) == (proc.pid, "hi", 0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0
    ready.close()


def test_a_listener_adopts_an_inherited_socket(tmp_path, processes):
    blog = Blog(tmp_path, "v1")
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen()
    ready = Notifications(str(tmp_path))
    proc = subprocess.Popen([PYTHON, blog.path, "--http", "fd:%d" % inherited.fileno()],
                            pass_fds=[inherited.fileno()], env=dict(blog.env, NOTIFY_SOCKET=ready.path))
    processes.append(proc)
    ready.wait_for("READY=1")
    assert http_get(inherited.getsockname())["pid"] == proc.pid
    inherited.close()
    ready.close()


def test_click_program_keeps_its_options_and_gains_pyboss_ones(tmp_path, processes):
    blog, port = Blog(tmp_path, "v1", example="clickblog.py"), free_port()
    helped = blog.run("--help")
    assert helped.returncode == 0 and "--greeting" in helped.stdout and "--pyboss=MODE" in helped.stdout
    ready = Notifications(str(tmp_path))
    supervisor = blog.spawn("--greeting", "hi", "--pyboss=start", "--http", "127.0.0.1:%d" % port,
                            notify=ready)
    processes.append(supervisor)
    ready.wait_for("READY=1")
    reply = http_get(("127.0.0.1", port))
    assert reply["greeting"] == "hi" and reply["generation"] == 1 and reply["pid"] != supervisor.pid
    stopped = blog.run("--pyboss=stop")
    assert stopped.returncode == 0, stopped.stderr
    assert supervisor.wait(TIMEOUT) == 0
    ready.close()


def broken(source):
    return source.replace("    server.socket = http.socket()", "    raise SystemExit('broken build: no database')")


def test_self_supervising_program_is_started_reloaded_under_load_and_stopped(tmp_path, processes):
    v1, v2, v3 = Blog(tmp_path, "v1"), Blog(tmp_path, "v2", "2"), Blog(tmp_path, "v3", "3", edit=broken)
    port, ready = free_port(), Notifications(str(tmp_path))
    supervisor = v1.spawn("--pyboss=start", "--http=127.0.0.1:%d" % port, notify=ready)
    processes.append(supervisor)
    ready.wait_for("READY=1")
    address = ("127.0.0.1", port)
    first = http_get(address)
    assert first["version"] == "1" and first["pid"] != supervisor.pid

    with Load(address, threads=6) as load:
        # A new version from another file, with other options of its own.
        reloaded = v2.run("--pyboss=reload", "--greeting", "bonjour")
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout.startswith("myblog: reloaded: generation 2 (pid ")
        assert http_get(address)["version"] == "2"
        failed = v3.run("--pyboss=reload")
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "myblog: reload failed: generation 3 (pid %s) exited with status 1"
        % failed.stderr.split("(pid ")[1].split(")")[0]]
    now = http_get(address)
    assert (now["version"], now["greeting"], now["generation"]) == ("2", "bonjour", 2)
    assert load.errors == []
    assert load.generations() == {1, 2}
    wait_until(lambda: not pid_alive(first["pid"]), what="version 1 drained and gone")

    # A second supervisor of the same name fails cleanly; the first still answers.
    second = v1.run("--pyboss=start", "--http=127.0.0.1:%d" % free_port())
    assert second.returncode == 3
    assert second.stderr.splitlines() == [
        "myblog: already running under supervisor pid %d (control socket %s): use "
        "--pyboss=reload or --pyboss=stop" % (supervisor.pid, tmp_path / "myblog.sock")]
    status = v1.run("--pyboss=status")
    assert status.returncode == 0 and "#2" in status.stdout and "serving" in status.stdout

    stopped = v1.run("--pyboss=stop")
    assert stopped.returncode == 0, stopped.stderr
    assert supervisor.wait(TIMEOUT) == 0
    assert not pid_alive(now["pid"])
    gone = v1.run("--pyboss=status")
    assert gone.returncode == 3 and "no supervisor named 'myblog' is running" in gone.stderr
    ready.close()


@pytest.mark.parametrize("args, code, message", [
    (["--pyboss=restart"], 2, "myblog: invalid --pyboss 'restart': use bypass, start, reload, stop, status"),
    (["--http"], 2, "myblog: --http needs a value"),
    (["--http=nowhere:port"], 2, "myblog: --http: invalid port 'port' in 'nowhere:port'"),
    (["--pyboss=reload"], 3, "myblog: no supervisor named 'myblog' is running"),
    (["--pyboss=stop"], 3, "myblog: no supervisor named 'myblog' is running"),
])
def test_exit_statuses_are_deterministic(tmp_path, args, code, message):
    result = Blog(tmp_path, "v1").run(*args)
    assert result.returncode == code, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    assert os.listdir(tmp_path) == ["v1"]          # no control socket left behind


def test_import_pyboss_stays_light_and_boss_loads_on_first_use():
    probe = subprocess.run([PYTHON, "-c", "import sys, pyboss; light = 'pyboss.dropins.boss' not in "
                            "sys.modules and 'click' not in sys.modules; pyboss.Boss; "
                            "print(light, 'pyboss.dropins.boss' in sys.modules)"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert probe.stdout.split() == ["True", "True"], probe.stderr


ECHO = '''
import selectors
import pyboss

boss = pyboss.Boss("echo")
dns = boss.listener("dns", "udp", "127.0.0.1:53", help="datagrams")
ctl = boss.listener("ctl", "unix", "ctl.sock", help="control")


def main(handle):
    watched = selectors.DefaultSelector()
    for sock in (dns.socket(), ctl.socket()):
        sock.setblocking(False)
        watched.register(sock, selectors.EVENT_READ)
    watched.register(handle, selectors.EVENT_READ)    # readable once told to stop
    handle.ready()
    while not handle.stopping:
        for key, _ in watched.select():
            if key.fileobj is dns.socket():
                data, peer = dns.socket().recvfrom(100)
                dns.socket().sendto(b"udp %d" % handle.generation, peer)
            elif key.fileobj is ctl.socket():
                conn, _ = ctl.socket().accept()
                conn.sendall(("unix %d %d" % (handle.generation,
                              dns.socket().getsockname()[1])).encode())
                conn.close()


boss.run(main)
'''


def test_udp_and_unix_listeners_reach_the_supervised_program(tmp_path, processes):
    program = tmp_path / "echo.py"
    program.write_text(ECHO)
    env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp_path))
    ready = Notifications(str(tmp_path))
    supervisor = subprocess.Popen([PYTHON, str(program), "--pyboss=start", "--dns=127.0.0.1:0"],
                                  cwd=str(tmp_path), env=dict(env, NOTIFY_SOCKET=ready.path))
    processes.append(supervisor)
    ready.wait_for("READY=1")

    def ask_unix():
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(tmp_path / "ctl.sock"))
            return conn.recv(100).decode().split()
    kind, generation, port = ask_unix()
    assert (kind, generation) == ("unix", "1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(b"?", ("127.0.0.1", int(port)))
        assert client.recv(100) == b"udp 1"
    reloaded = subprocess.run([PYTHON, str(program), "--pyboss=reload"], cwd=str(tmp_path),
                              env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert reloaded.returncode == 0, reloaded.stderr
    assert ask_unix()[:2] == ["unix", "2"]
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(TIMEOUT) == 0
    assert not (tmp_path / "ctl.sock").exists()          # the supervisor removed what it bound
    ready.close()
