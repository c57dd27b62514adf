import fcntl
import os
import signal

import pytest

from pyboss_testing import Pyboss, pid_alive, write_app

pytest_plugins = ["systemd_harness"]     # fixtures: systemd_ns, systemd_254


@pytest.fixture(autouse=True)
def test_slot(request, tmp_path_factory):
    """Tests run side by side (pytest-xdist, -n in pyproject.toml): most wait on processes
    far more than they use the CPU. A test marked `alone` measures latency, so it runs
    with no other test at the same time.

    A readers-writer lock on files every worker shares: every test holds `slots` shared,
    an `alone` test holds it exclusively. A test that waits to run alone holds `turnstile`
    meanwhile, and the others take it on their way in, so no new test starts in front of
    it and it is not starved.
    """
    directory = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        directory = directory.parent        # one per run, shared by the workers
    alone = request.node.get_closest_marker("alone") is not None
    with open(directory / "turnstile", "a") as turnstile, \
            open(directory / "slots", "a") as slots:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(slots, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield


@pytest.fixture
def start_pyboss(tmp_path):
    """start_pyboss(command, *options, **kw) -> a running Pyboss, stopped after the test."""
    started = []

    def start(command, *options, **kw):
        boss = Pyboss(tmp_path, command, *options, **kw)
        started.append(boss)
        return boss

    yield start
    for boss in started:
        boss.close()


@pytest.fixture
def app(tmp_path):
    """(launcher path, flags file) of the demo app; rewrite flags to change the next build."""
    return write_app(str(tmp_path))


@pytest.fixture
def orphans():
    """Processes a test leaves without a pyboss if it fails half-way: killed at teardown.
    Append a Pyboss to have it closed, a pid to have it SIGKILLed."""
    left = []
    yield left
    for thing in reversed(left):
        if isinstance(thing, Pyboss):
            thing.close()
        elif pid_alive(thing):
            os.kill(thing, signal.SIGKILL)
