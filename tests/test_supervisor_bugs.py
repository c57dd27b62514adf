"""A bug in pyboss costs at most the event it happened in; it never takes the app down."""
import os
import signal
import subprocess

import pytest

from pyboss_testing import (PYBOSS, PYTHON, TIMEOUT, LoggedProcess, Notifications, http_get,
                            pid_alive, wait_until)

FAULTY = os.path.join(os.path.dirname(__file__), "apps", "faulty_supervisor.py")


class FaultyPyboss(LoggedProcess):
    def __init__(self, tmp_path, command):
        self.dir = str(tmp_path)
        self.control = os.path.join(self.dir, "faulty.sock")
        self.upstream = Notifications(self.dir)
        self.log_path = os.path.join(self.dir, "faulty.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([PYTHON, FAULTY, self.control, "--"] + command,
                                     env=dict(os.environ, NOTIFY_SOCKET=self.upstream.path),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.upstream.wait_for("READY=1")

    def status(self):
        import json
        result = subprocess.run(PYBOSS + ["status", "--json", "--control", self.control],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def faulty(tmp_path, app):
    boss = FaultyPyboss(tmp_path, [app[0]])
    yield boss
    boss.close()


def serving(status):
    return [g for g in status["generations"] if g["state"] == "serving"][0]


def address(status):
    host, _, port = status["listeners"][0]["address"].rpartition(":")
    return host, int(port)


def test_exception_in_a_handler_is_logged_and_the_loop_goes_on(faulty):
    before = faulty.status()
    os.kill(faulty.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "planted bug in an event handler" in faulty.output(),
               what="the bug to be logged")
    output = faulty.output()
    assert "Traceback (most recent call last)" in output
    assert "pyboss carries on" in output
    after = faulty.status()           # the loop still answers...
    assert faulty.proc.poll() is None
    assert serving(after)["pid"] == serving(before)["pid"]     # ...and the app never noticed
    assert http_get(address(after))["generation"] == 1
    # The next event is handled as usual: a reload still works.
    result = subprocess.run(PYBOSS + ["reload", "--wait", "--control", faulty.control],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert serving(faulty.status())["number"] == 2


def test_pyboss_failing_leaves_the_serving_generation_running(faulty):
    status = faulty.status()
    app_pid, addr = serving(status)["pid"], address(status)
    try:
        os.kill(faulty.proc.pid, signal.SIGUSR2)
        assert faulty.proc.wait(TIMEOUT) == 70
        output = faulty.output()
        assert "planted bug in the event loop" in output
        assert "generation 1 (pid %d) keeps running without it" % app_pid in output
        assert pid_alive(app_pid)
        assert http_get(addr)["generation"] == 1     # still serving on the same socket
        assert not os.path.exists(faulty.control)    # pyboss's own files are gone
    finally:
        if pid_alive(app_pid):
            os.kill(app_pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(app_pid), what="the app to exit")
