"""Nothing a caller sends over the control socket takes pyboss, or the app, down."""
import os
import resource
import signal
import socket
import struct
import subprocess
import time

import pytest

from pyboss_testing import PYBOSS, TIMEOUT, Load


def raw_request(path, data, timeout=TIMEOUT):
    """Send raw bytes on the control socket; the one line that comes back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def serving_pid(boss):
    return boss.serving()["pid"]


def test_deeply_nested_request_is_refused_and_pyboss_serves_on(start_pyboss, app):
    boss = start_pyboss([app[0]])
    before = serving_pid(boss)
    reply = raw_request(boss.control, b"[" * 60000 + b"\n")
    assert b'"ok": false' in reply and b"nested deeper than" in reply, reply[:200]
    assert boss.proc.poll() is None
    assert serving_pid(boss) == before
    assert "RecursionError" not in boss.output()


def test_request_longer_than_the_limit_is_refused(start_pyboss, app):
    boss = start_pyboss([app[0]])
    reply = raw_request(boss.control, b'{"command": "status", "x": "' + b"a" * 70000)
    assert b"request longer than 65536 bytes" in reply, reply[:200]
    assert boss.status()["state"] == "serving"


@pytest.mark.parametrize("line", [b"null", b"[1]", b'{"command": 1}', b"\xff\xfe",
                                  b'{"command": "reload", "wait": "yes"}', b'{"command": "x"}'])
def test_malformed_requests_get_an_error_line(start_pyboss, app, line):
    boss = start_pyboss([app[0]])
    reply = raw_request(boss.control, line + b"\n")
    assert reply.startswith(b'{"ok": false, "error": '), reply
    assert boss.status()["state"] == "serving"


def raise_own_nofile(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip("the test needs %d fds; the hard limit is %d" % (needed, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    return soft, hard


def hold_idle_connections(path, count):
    """Open count control connections that never send a request; all must connect."""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Blocking, so that connect() waits for room in pyboss's backlog.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", TIMEOUT, 0))
        sock.connect(path)
        held.append(sock)
    return held


@pytest.mark.parametrize("nofile", [1024, 48])
def test_idle_connection_flood_at_a_small_fd_limit_does_not_stop_control(start_pyboss, app,
                                                                         nofile):
    """2,000 idle clients against a hard fd limit of 1024 (systemd's default for services)
    or 48 (accept() then runs out of fds): status and reload still work."""
    limits = raise_own_nofile(2200)
    boss = start_pyboss([app[0]], wrapper=["prlimit", "--nofile=%d:%d" % (nofile, nofile)])
    before = serving_pid(boss)
    try:
        held = hold_idle_connections(boss.control, 2000)
        with Load(boss.address(), threads=2) as load:
            assert boss.status()["state"] == "serving"
            result = boss.reload()
            assert result.returncode == 0, result.stderr
        assert load.errors == []
        assert boss.proc.poll() is None
        assert serving_pid(boss) != before
        for sock in held:
            sock.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_idle_client_is_disconnected(start_pyboss, app):
    boss = start_pyboss([app[0]])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(boss.control)
        sock.settimeout(TIMEOUT)
        started = time.monotonic()
        assert sock.recv(10) == b""       # pyboss closed it: the idle timeout
        assert time.monotonic() - started >= 5
    assert boss.status()["state"] == "serving"


@pytest.mark.parametrize("command", [["status"], ["reload", "--wait"], ["stop"]])
def test_client_of_a_stopped_supervisor_says_it_did_not_answer(start_pyboss, app, command):
    boss = start_pyboss([app[0]])
    os.kill(boss.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = boss.cli(*command, "--timeout", "2")
        took = time.monotonic() - started
    finally:
        os.kill(boss.pid, signal.SIGCONT)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "pyboss: pyboss did not answer within 2 s (control socket %s): it may be stopped or "
        "overloaded; try again with a longer --timeout" % boss.control]
    assert took < 2 + 10


def test_client_waits_a_bounded_time_by_default(start_pyboss, app):
    boss = start_pyboss([app[0]])
    os.kill(boss.pid, signal.SIGSTOP)
    try:
        result = boss.cli("status")       # TIMEOUT (60 s) is far above the default of 10 s
    finally:
        os.kill(boss.pid, signal.SIGCONT)
    assert result.returncode == 1
    assert "pyboss did not answer within 10 s" in result.stderr


def test_stop_whose_supervisor_dies_before_answering_fails(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ignore-term")
    boss = start_pyboss([app[0]], "--stop-timeout", "60")
    client = subprocess.Popen(PYBOSS + ["stop", "--control", boss.control],
                              stderr=subprocess.PIPE, text=True)
    boss.upstream.wait_for("STOPPING=1")
    gen = boss.serving()
    os.kill(boss.pid, signal.SIGKILL)
    _, stderr = client.communicate(timeout=TIMEOUT)
    os.kill(gen["pid"], signal.SIGKILL)
    assert client.returncode == 1
    assert "pyboss closed the connection on %s without answering" % boss.control in stderr


def test_reload_wait_announced_time_follows_the_ready_timeout(start_pyboss, app):
    """A reload longer than the client's --timeout still gets its answer: pyboss accepted
    it and said how long it may take."""
    boss = start_pyboss([app[0]], "--ready-timeout", "30")
    with open(app[1], "w") as f:
        f.write("--ready-delay 3")
    result = boss.cli("reload", "--wait", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert "reloaded: generation 2" in result.stdout


def test_a_client_that_does_not_ask_for_the_acknowledgement_gets_only_the_answer(
        start_pyboss, app):
    """Clients of earlier versions read one line: it must be the answer."""
    boss = start_pyboss([app[0]])
    reply = raw_request(boss.control, b'{"command": "reload", "wait": true}\n')
    assert reply.startswith(b'{"ok": true, "generation": 2'), reply
