"""`pyboss status --check`: the orchestrator's probe exits 0 only while a generation serves."""
import os
import signal
import subprocess

from pyboss_testing import PYBOSS, TIMEOUT, wait_until


def check(boss):
    return boss.cli("status", "--check")


def test_status_check_is_0_while_a_generation_serves_even_during_a_reload(start_pyboss, app):
    boss = start_pyboss([app[0]])
    result = check(boss)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "serving: generation 1 (pid %d)\n" % boss.serving()["pid"]
    with open(app[1], "w") as f:
        f.write("--ready-delay 3")              # the next generation takes its time
    assert boss.cli("reload").returncode == 0
    wait_until(lambda: boss.status()["state"] == "reloading", what="the reload to start")
    result = check(boss)
    assert result.returncode == 0, result.stderr     # the old generation still serves
    assert result.stdout.startswith("serving: generation 1 ")


def test_status_check_is_1_while_no_generation_serves(start_pyboss, app):
    boss = start_pyboss([app[0]], "--crash-limit", "1000")
    with open(app[1], "w") as f:
        f.write("--exit-code 1")                # every respawn fails from now on
    os.kill(boss.serving()["pid"], signal.SIGKILL)
    wait_until(lambda: check(boss).returncode == 1, what="the probe to fail")
    result = check(boss)
    assert result.returncode == 1
    assert result.stderr == "not serving: pyboss is starting\n"
    with open(app[1], "w") as f:
        f.write("")                             # fixed: the next respawn serves
    wait_until(lambda: check(boss).returncode == 0, what="the probe to pass again")


def test_status_check_is_1_without_a_pyboss(tmp_path):
    result = subprocess.run(PYBOSS + ["status", "--check", "--control", str(tmp_path / "none.sock")],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stdout == ""
