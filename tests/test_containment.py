"""Containment: pyboss is a child subreaper, and a generation is its whole process tree."""
import os
import socket

from pyboss_testing import PYTHON, http_get, pid_alive, wait_until

APP = os.path.join(os.path.dirname(__file__), "apps", "daemonizing_app.py")


def parent_of(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


def grandchild_pid(markdir, generation):
    path = os.path.join(str(markdir), "grandchild-%d" % generation)
    wait_until(lambda: os.path.exists(path), what="generation %d's grandchild" % generation)
    with open(path) as f:
        return int(f.read())


def port_is_free(address):
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(address)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def test_stop_leaves_no_daemonized_grandchild_and_frees_the_port(start_pyboss, tmp_path):
    boss = start_pyboss([PYTHON, APP, str(tmp_path)])
    address = boss.address()
    grandchild = grandchild_pid(tmp_path, 1)
    # Its parent exited at once; the orphan landed on pyboss, not on init.
    assert parent_of(grandchild) == boss.pid
    assert http_get(address)["role"] == "grandchild"
    result = boss.stop()
    assert result.returncode == 0, result.stderr
    assert boss.proc.returncode == 0
    # pyboss returned only once nothing of the generation was left...
    assert not pid_alive(grandchild)
    assert port_is_free(address)
    # ...and the grandchild got the stop signal and exited by itself.
    assert os.path.exists(tmp_path / "grandchild-1.term")


def test_stop_kills_a_daemonized_grandchild_that_ignores_the_stop_signal(start_pyboss, tmp_path):
    boss = start_pyboss([PYTHON, APP, str(tmp_path), "--grandchild-ignores-term"],
                        "--stop-timeout", "1")
    address = boss.address()
    grandchild = grandchild_pid(tmp_path, 1)
    result = boss.stop()
    assert result.returncode == 0, result.stderr
    assert boss.proc.returncode == 0
    assert os.path.exists(tmp_path / "grandchild-1.term")    # it got SIGTERM, ignored it
    assert not pid_alive(grandchild)                           # and SIGKILL took it
    assert port_is_free(address)


def test_reload_drains_the_old_generations_whole_tree(start_pyboss, tmp_path):
    boss = start_pyboss([PYTHON, APP, str(tmp_path)])
    old = grandchild_pid(tmp_path, 1)
    result = boss.reload()
    assert result.returncode == 0, result.stderr
    new = grandchild_pid(tmp_path, 2)
    wait_until(lambda: os.path.exists(tmp_path / "grandchild-1.term"),
               what="the drain signal at generation 1's grandchild")
    wait_until(lambda: not pid_alive(old), what="generation 1's grandchild to exit")
    assert pid_alive(new)
    assert not os.path.exists(tmp_path / "grandchild-2.term")
    assert http_get(boss.address())["generation"] == 2
    assert boss.status()["orphans"]["reaped"] >= 1


def test_leftovers_of_a_drained_generation_are_killed_after_the_drain_timeout(start_pyboss, tmp_path):
    boss = start_pyboss([PYTHON, APP, str(tmp_path), "--grandchild-ignores-term"],
                        "--drain-timeout", "1")
    old = grandchild_pid(tmp_path, 1)
    assert boss.reload().returncode == 0
    wait_until(lambda: not pid_alive(old), what="generation 1's leftover to be killed")
    assert os.path.exists(tmp_path / "grandchild-1.term")
    assert "left 1 process(es) behind (pid %d)" % old in boss.output()
    assert http_get(boss.address())["generation"] == 2


def test_stop_reaches_an_orphan_that_carries_no_generation_mark(start_pyboss, tmp_path):
    boss = start_pyboss([PYTHON, APP, str(tmp_path), "--scrub-environment"])
    grandchild = grandchild_pid(tmp_path, 1)
    with open("/proc/%d/environ" % grandchild, "rb") as f:
        assert b"PYBOSS_GENERATION" not in f.read()
    assert parent_of(grandchild) == boss.pid
    address = boss.address()
    result = boss.stop()
    assert result.returncode == 0, result.stderr
    assert os.path.exists(tmp_path / "grandchild-1.term")
    assert not pid_alive(grandchild)
    assert port_is_free(address)


def test_reload_drains_an_unmarked_orphan_of_the_old_generation_and_spares_the_new_ones(
        start_pyboss, tmp_path):
    boss = start_pyboss([PYTHON, APP, str(tmp_path), "--scrub-environment"])
    old = grandchild_pid(tmp_path, 1)
    assert boss.reload().returncode == 0
    new = grandchild_pid(tmp_path, 2)
    wait_until(lambda: not pid_alive(old), what="generation 1's unmarked orphan to exit")
    assert os.path.exists(tmp_path / "grandchild-1.term")
    assert not os.path.exists(tmp_path / "grandchild-2.term")
    assert pid_alive(new)
