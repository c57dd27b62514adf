"""pyboss's own crash outside systemd: the next `pyboss exec` adopts what still runs.

The app of a SIGKILLed pyboss keeps serving on its listeners. The next `pyboss exec
--name NAME` with the same command and listeners finds the state NAME.state beside the
control socket, takes the listeners back from the app with pidfd_getfd and supervises
it again: nothing is refused, nothing is bound twice, the app is never restarted.
"""
import json
import os
import signal
import subprocess

from pyboss_testing import (PYBOSS, TIMEOUT, Load, Pyboss, await_generation, http_get, pid_alive,
                            socket_inodes, wait_until)


def sigkill(boss):
    boss.proc.send_signal(signal.SIGKILL)
    boss.proc.wait(TIMEOUT)


def saved_state(boss):
    with open(boss.control[:-len(".sock")] + ".state") as f:
        return json.load(f)


def test_sigkilled_pyboss_is_adopted_by_the_next_exec_and_no_request_fails(
        start_pyboss, app, tmp_path, orphans):
    first = start_pyboss([app[0]], "--drain-timeout", "10")
    address = first.address()
    app_pid = first.serving()["pid"]
    orphans.append(app_pid)
    state = saved_state(first)
    assert state["generations"][0]["pid"] == app_pid
    assert oct(os.stat(first.control[:-5] + ".state").st_mode & 0o777) == "0o600"
    with Load(address) as load:
        sigkill(first)
        # Orphaned, the app keeps serving on its own.
        before = len(load.results)
        wait_until(lambda: len(load.results) > before + 20,
                   what="requests served while no pyboss runs")
        second = Pyboss(tmp_path / "second", [app[0]], "--drain-timeout", "10",
                        control=first.control)
        orphans.append(second)
        status = second.status()
        assert [g["pid"] for g in status["generations"]] == [app_pid]
        assert status["pid"] == second.pid
        assert second.address() == address
        # One socket, shared: taken back from the app, not bound a second time.
        assert socket_inodes(second.pid) & socket_inodes(app_pid)
        before = len(load.results)
        wait_until(lambda: len(load.results) > before + 20, what="requests after adoption")
    assert load.errors == []
    assert {r[2] for r in load.results} == {1}
    assert "generation 1 (pid %d) adopted (serving)" % app_pid in second.output()
    # Supervised again: a reload replaces the adopted generation as any other.
    result = second.reload()
    assert result.returncode == 0, result.stderr
    await_generation(address, 2)
    wait_until(lambda: not pid_alive(app_pid), what="the adopted generation to drain")
    second.stop()
    assert second.proc.returncode == 0
    assert not os.path.exists(first.control[:-5] + ".state")


def test_next_exec_with_another_command_is_refused_and_says_what_runs_there(
        start_pyboss, app, tmp_path, orphans):
    first = start_pyboss([app[0]])
    app_pid = first.serving()["pid"]
    orphans.append(app_pid)
    address = first.address()
    sigkill(first)
    other = subprocess.run(PYBOSS + ["exec", "--control", first.control, "--listen",
                                     "127.0.0.1:0", "--", app[0], "--work-ms", "1"],
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert other.returncode == 2
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1, other.stderr
    assert "generation 1 (pid %d, serving)" % app_pid in lines[0]
    assert repr(app[0]) in lines[0] and "listen0=%s:%d" % address in lines[0]
    assert "the command differs" in lines[0] and "kill %d" % app_pid in lines[0]
    other_listeners = subprocess.run(
        PYBOSS + ["exec", "--control", first.control, "--listen", "web=127.0.0.1:0", "--",
                  app[0]], capture_output=True, text=True, timeout=TIMEOUT)
    assert other_listeners.returncode == 2
    assert "the listeners differ (listen0 there, web asked)" in other_listeners.stderr
    assert http_get(address)["pid"] == app_pid     # refusing touched nothing
    second = Pyboss(tmp_path / "second", [app[0]], control=first.control)
    orphans.append(second)
    assert second.serving()["pid"] == app_pid
    second.close()
    assert not pid_alive(app_pid)


def test_a_dead_app_is_not_adopted_and_the_next_exec_starts_afresh(
        start_pyboss, app, tmp_path):
    first = start_pyboss([app[0]])
    app_pid = first.serving()["pid"]
    sigkill(first)
    os.kill(app_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(app_pid), what="the app to die")
    second = Pyboss(tmp_path / "second", [app[0]], control=first.control)
    try:
        assert second.serving()["pid"] != app_pid
        assert "adopted" not in second.output()
    finally:
        second.close()


def test_sweep_outside_execstoppost_refuses_in_one_line_and_kills_nothing(start_pyboss, app):
    boss = start_pyboss([app[0]])
    app_pid = boss.serving()["pid"]
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_RESULT"}
    result = subprocess.run(PYBOSS + ["sweep"], capture_output=True, text=True, env=env,
                            timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pyboss sweep: pyboss sweep belongs in ExecStopPost= of a systemd service "
        "($SERVICE_RESULT is not set): it stops everything in its cgroup"]
    assert pid_alive(app_pid) and boss.proc.poll() is None


def test_generation_settling_when_pyboss_dies_is_adopted_and_settles_anew(app, tmp_path, orphans):
    # READY=1 came, the settle period had not passed: the next pyboss must neither kill
    # the app (it reported ready) nor wait for a READY=1 that was already sent.
    first = Pyboss(tmp_path / "first", [app[0]], "--ready-grace", "5", wait_ready=False)
    orphans.append(first)
    wait_until(lambda: os.path.exists(first.control)
               and [g["state"] for g in first.status()["generations"]] == ["settling"],
               what="the first generation settling")
    app_pid = first.status()["generations"][0]["pid"]
    orphans.append(app_pid)
    sigkill(first)
    second = Pyboss(tmp_path / "second", [app[0]], "--ready-grace", "5", control=first.control)
    orphans.append(second)
    assert second.serving()["pid"] == app_pid      # waited for its READY=1 upstream
    assert "generation 1 (pid %d) adopted (settling)" % app_pid in second.output()
    second.stop()
    assert second.proc.returncode == 0
    assert not pid_alive(app_pid)
