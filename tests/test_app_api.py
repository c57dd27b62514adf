"""The app side: pyboss.listeners() & co. under pyboss, systemd-socket-activate, and
apps that already speak socket activation (gunicorn) running unchanged."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from pyboss_testing import (PYBOSS, PYTHON, TIMEOUT, Notifications, Pyboss, await_generation,
                            http_get, wait_until)

REPORT_LISTENERS = r"""
import json, sys, pyboss
socks = pyboss.listeners()
assert pyboss.listeners()[0] is socks[0]          # the same objects every time
web = pyboss.listener("web")
try:
    pyboss.listener("nope")
    missing = None
except pyboss.NoListeners as e:
    missing = str(e)
with open(sys.argv[1], "w") as f:
    json.dump({"fds": [s.fileno() for s in socks], "web": web.getsockname(),
               "missing": missing}, f)
"""


def unix_request(path):
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(path)
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return conn.makefile("rb").read()


def test_listeners_under_systemd_socket_activate(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(REPORT_LISTENERS)
    path = str(tmp_path / "web.sock")
    out = tmp_path / "out.json"
    proc = subprocess.Popen(["systemd-socket-activate", "-l", path, "--fdname=web",
                             "-E", "PYTHONPATH=" + os.getcwd(), PYTHON, str(script), str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: os.path.exists(path), what="systemd-socket-activate to listen")
        with socket.socket(socket.AF_UNIX) as conn:     # activation happens on first connect
            conn.connect(path)
            assert proc.wait(TIMEOUT) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    report = json.loads(out.read_text())
    assert report["fds"] == [3]
    assert report["web"] == path
    assert report["missing"] == "no listening socket named 'nope' was passed to this process (passed: web)"


def test_without_listeners_the_app_gets_a_clear_error_and_notify_is_a_noop():
    code = ("import pyboss\n"
            "assert pyboss.ready() is False and pyboss.status('x') is False\n"
            "try:\n    pyboss.listeners()\nexcept pyboss.NoListeners as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "NOTIFY_SOCKET")}
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no listening sockets were passed to this process: run it "
                                    "under 'pyboss exec --listen ...'")


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_messages_reach_the_notify_socket(tmp_path, abstract):
    if abstract:
        path = "@pyboss-test-%d" % os.getpid()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + path[1:])
    else:
        receiver = Notifications(str(tmp_path))
        path, sock = receiver.path, receiver.sock
    code = ("import pyboss\npyboss.ready('up')\npyboss.status('busy')\npyboss.reloading()\n"
            "pyboss.stopping()\n")
    subprocess.run([PYTHON, "-c", code], check=True, timeout=TIMEOUT,
                   env=dict(os.environ, NOTIFY_SOCKET=path))
    sock.settimeout(TIMEOUT)
    messages = [sock.recv(4096).decode() for _ in range(4)]
    sock.close()
    assert messages[:2] == ["READY=1\nSTATUS=up", "STATUS=busy"]
    assert messages[2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[3] == "STOPPING=1"


def test_pyboss_under_systemd_socket_activate_uses_the_inherited_socket(tmp_path, app):
    path = str(tmp_path / "web.sock")
    control = str(tmp_path / "c.sock")
    upstream = Notifications(str(tmp_path))
    proc = subprocess.Popen(["systemd-socket-activate", "-l", path, "--fdname=web",
                             "-E", "NOTIFY_SOCKET=" + upstream.path, "-E", "PATH",
                             "-E", "PYTHONPATH=" + os.getcwd()]
                            + PYBOSS + ["exec", "--control", control, "--", app[0]],
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(path), what="systemd-socket-activate to listen")
        assert b'"generation": 1' in unix_request(path)        # triggers activation
        upstream.wait_for("READY=1")
        status = json.loads(subprocess.run(PYBOSS + ["status", "--json", "--control", control],
                                           capture_output=True, check=True).stdout)
        assert status["listeners"] == [{"name": "web", "kind": "unix", "address": path,
                                        "origin": "inherited"}]
        assert subprocess.run(PYBOSS + ["reload", "--wait", "--control", control]).returncode == 0
        assert b'"generation": 2' in unix_request(path)
        assert subprocess.run(PYBOSS + ["stop", "--control", control]).returncode == 0
        assert proc.wait(TIMEOUT) == 0
        # pyboss did not create the socket file, so it leaves it to its owner.
        assert os.path.exists(path)
    finally:
        proc.kill()
        proc.wait()
        upstream.close()


GUNICORN_APP = """
import os
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [('{"generation": %s, "pid": %d}' % (os.environ["PYBOSS_GENERATION"], os.getpid())).encode()]
"""


@pytest.mark.skipif(shutil.which("gunicorn", path=os.path.dirname(sys.executable)) is None,
                    reason="gunicorn is not installed in this environment (pip install -e .[test])")
def test_gunicorn_runs_unchanged_and_its_own_ready_drives_the_reload(tmp_path):
    (tmp_path / "wsgi.py").write_text(GUNICORN_APP)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    boss = Pyboss(tmp_path, [gunicorn, "--chdir", str(tmp_path), "--workers", "2",
                             "--graceful-timeout", "10", "wsgi:app"])
    try:
        address = boss.address()
        assert http_get(address)["generation"] == 1
        result = boss.reload()
        assert result.returncode == 0, result.stderr
        await_generation(address, 2)
        # gunicorn's master sent READY=1 itself; its workers' pids are its descendants.
        assert boss.serving()["status"] == "Gunicorn arbiter booted"
    finally:
        boss.close()


def test_the_readme_tour_reloads_once_with_no_failed_request():
    result = subprocess.run([PYTHON, "-m", "pyboss.tour", "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reload --wait: exit 0" in result.stdout
    assert ", 0 failed" in result.stdout
    assert "stopped: pyboss exited with status 0" in result.stdout


def test_notify_to_a_vanished_supervisor_is_reported_not_raised(tmp_path):
    gone = tmp_path / "gone.notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(gone))
    sock.close()                   # the file stays, nobody reads: ECONNREFUSED
    code = "import pyboss\nprint(pyboss.ready(), pyboss.status('x'), pyboss.stopping())\n"
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, NOTIFY_SOCKET=str(gone)), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]
