"""Zero-downtime reloads: overlap, readiness, failure, coalescing."""
import os
import signal

import subprocess

from pyboss_testing import PYBOSS, Load, children, http_get, pid_alive, wait_until


def test_thirty_reloads_under_continuous_load_fail_no_request(start_pyboss, app):
    # A short settle period: thirty reloads at the default would take a minute and a half;
    # test_readiness.py runs reloads under load at the default.
    boss = start_pyboss([app[0]], "--ready-grace", "0.5")
    with Load(boss.address(), threads=6) as load:
        for _ in range(30):
            result = boss.reload()
            assert result.returncode == 0, result.stderr
    assert load.errors == []
    assert len(load.results) > 300
    assert boss.serving()["number"] == 31
    # Requests were served by many generations, so they really did overlap.
    assert len(load.generations()) >= 10
    print("\n30 reloads: %d requests, 0 failed, worst latency %.1f ms"
          % (len(load.results), load.worst_latency * 1000))


def test_slow_starting_app_is_reloaded_without_requests_waiting(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ready-delay 2")
    boss = start_pyboss([app[0]])
    with Load(boss.address(), threads=4) as load:
        for _ in range(3):
            result = boss.reload()
            assert result.returncode == 0, result.stderr
    history = boss.status()["reloads"]
    # pyboss waited for READY=1 (2 s of start-up work), not a fixed interval...
    assert all(r["duration"] >= 2.0 for r in history), history
    # ...while the old generation kept answering.
    assert load.errors == []
    assert load.worst_latency < 1.0, load.worst_latency
    print("\nslow app: %d requests, worst latency %.1f ms, reloads took %s s"
          % (len(load.results), load.worst_latency * 1000, [r["duration"] for r in history]))


def test_failed_reload_keeps_old_generation_serving(start_pyboss, app):
    boss = start_pyboss([app[0]])
    old = boss.serving()
    with open(app[1], "w") as f:
        f.write("--exit-code 1")
    with Load(boss.address(), threads=4) as load:
        result = boss.reload()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pyboss reload: failed: generation 2 (pid ")
    assert lines[0].endswith(") exited with status 1")
    assert boss.serving()["pid"] == old["pid"]
    assert load.errors == []
    assert load.generations() == {1}
    assert boss.status()["reloads"][-1]["outcome"] == "failed"


def test_new_generation_never_ready_is_killed_after_ready_timeout(start_pyboss, app):
    boss = start_pyboss([app[0]], "--ready-timeout", "2")
    old = boss.serving()
    with open(app[1], "w") as f:
        f.write("--no-ready")
    result = boss.reload()
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        ") never sent READY=1 within 2s: for an app that does not speak sd_notify, use "
        "--ready-after SECONDS or --ready-probe PATH")
    status = boss.status()
    assert [g["pid"] for g in status["generations"] if g["state"] == "serving"] == [old["pid"]]
    failed = status["reloads"][-1]
    wait_until(lambda: len(boss.status()["generations"]) == 1, what="the unready one reaped")
    assert failed["outcome"] == "failed"
    assert http_get(boss.address())["pid"] == old["pid"]


def test_exec_failure_on_reload_is_reported_and_old_keeps_serving(start_pyboss, app):
    boss = start_pyboss([app[0]])
    os.chmod(app[0], 0o644)           # the next build is not executable
    result = boss.reload()
    assert result.returncode == 1
    assert result.stderr.strip() == "pyboss reload: failed: cannot execute %s: Permission denied" % app[0]
    assert http_get(boss.address())["generation"] == 1


def test_storm_of_fifty_reloads_ends_with_one_generation_and_no_failed_request(start_pyboss, app):
    boss = start_pyboss([app[0]])
    with Load(boss.address(), threads=4) as load:
        for _ in range(50):
            boss.proc.send_signal(signal.SIGHUP)
            load.done.wait(0.02)      # 50 signals spread over about one second
        wait_until(lambda: [g["state"] for g in boss.status()["generations"]] == ["serving"]
                   and boss.status()["state"] == "serving", what="the storm to settle")
    assert load.errors == []
    final = boss.serving()["number"]
    assert 2 <= final < 51, "reloads coalesce: %d generations for 50 requests" % final
    assert [pid for pid, _ in children(boss.pid)] == [boss.serving()["pid"]]


def test_reload_requests_during_a_reload_coalesce_into_one_followup(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ready-delay 1.5")
    boss = start_pyboss([app[0]])
    first = boss.cli("reload")        # generation 2 starts: 1.5 s to get ready
    assert first.returncode == 0
    waiting = [subprocess.Popen(PYBOSS + ["reload", "--wait", "--control", boss.control],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(5)]
    codes = [p.wait(60) for p in waiting]
    assert codes == [0] * 5
    # Five requests during generation 2's start-up became one more reload, not five.
    assert boss.serving()["number"] == 3
    outs = {p.stdout.read().strip() for p in waiting}
    assert len(outs) == 1 and "generation 3" in outs.pop()


def test_draining_generations_are_bounded_oldest_killed_first(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ignore-term")
    boss = start_pyboss([app[0]], "--max-draining", "2", "--drain-timeout", "60",
                        "--stop-timeout", "1")
    pids = [boss.serving()["pid"]]
    for _ in range(3):
        assert boss.reload().returncode == 0
        pids.append(boss.serving()["pid"])
    # Generations 1..3 ignore the drain signal; only two may drain, so 1 was killed.
    wait_until(lambda: not pid_alive(pids[0]), what="the oldest to be killed")
    assert pid_alive(pids[1]) and pid_alive(pids[2])
    states = [(g["number"], g["state"]) for g in boss.status()["generations"]]
    assert states == [(2, "draining"), (3, "draining"), (4, "serving")]
    assert "generation 1 (pid %d) killed: more than 2 generations draining" % pids[0] in boss.output()


def test_old_generation_still_running_after_drain_timeout_is_killed(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ignore-term")
    boss = start_pyboss([app[0]], "--drain-timeout", "0.5", "--stop-timeout", "1")
    old = boss.serving()["pid"]
    assert boss.reload().returncode == 0
    wait_until(lambda: not pid_alive(old), what="SIGKILL after the drain timeout")
    wait_until(lambda: "generation 1 (pid %d) killed by SIGKILL" % old in boss.output(),
               what="the kill to be logged")


def test_drain_signal_is_configurable(start_pyboss, app):
    boss = start_pyboss([app[0]], "--drain-signal", "sigint")
    assert boss.reload().returncode == 0
    # The demo exits 0 on SIGINT as on SIGTERM; a wrong signal would show as "killed by".
    wait_until(lambda: "generation 1 (pid" in boss.output() and "exited with status 0" in boss.output(),
               what="generation 1 to drain")
