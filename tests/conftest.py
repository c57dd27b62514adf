import os
import signal

import pytest

from pyboss_testing import Pyboss, pid_alive, write_app

pytest_plugins = ["systemd_harness"]     # fixtures: systemd_ns, systemd_254


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
