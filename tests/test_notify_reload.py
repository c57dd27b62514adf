"""systemd's Type=notify-reload protocol, as pyboss speaks it to its NOTIFY_SOCKET.

systemd sends SIGHUP, waits for RELOADING=1 with MONOTONIC_USEC= no earlier than the
signal, then READY=1, which ends the reload whatever became of it. ExecReload=
`pyboss reload --after-sighup`, spawned right after the signal, reports that reload's
outcome without starting another one.
"""
import os
import signal
import time

from pyboss_testing import TIMEOUT


def fields(message):
    return dict(line.split("=", 1) for line in message.split("\n") if "=" in line)


def monotonic_usec():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_sighup_sends_reloading_with_monotonic_usec_then_ready(start_pyboss, app):
    boss = start_pyboss([app[0]])
    sent = monotonic_usec()
    os.kill(boss.pid, signal.SIGHUP)
    reloading = fields(boss.upstream.wait_for("RELOADING=1"))
    assert sent <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
    ready = fields(boss.upstream.wait_for("READY=1"))
    assert ready["STATUS"].startswith("serving generation 2 ")
    # The client systemd spawns after its SIGHUP collects that reload: no third generation.
    result = boss.cli("reload", "--after-sighup")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pyboss: reloaded: generation 2 ")
    assert boss.serving()["number"] == 2
    # Collected once only: asked again, with no new SIGHUP, it reloads by itself.
    result = boss.cli("reload", "--after-sighup")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pyboss: reloaded: generation 3 ")


def test_failed_sighup_reload_still_sends_ready_and_after_sighup_reports_it(start_pyboss, app):
    boss = start_pyboss([app[0]], "--ready-timeout", "2")
    serving = boss.serving()
    with open(app[1], "w") as f:
        f.write("--no-ready")           # the next build never becomes ready
    os.kill(boss.pid, signal.SIGHUP)
    boss.upstream.wait_for("RELOADING=1")
    # Asked while the reload is under way: waits for it, and fails with it.
    result = boss.cli("reload", "--after-sighup")
    assert result.returncode == 1
    assert "never sent READY=1 within 2s" in result.stderr
    ready = fields(boss.upstream.wait_for("READY=1"))
    assert ready["STATUS"].startswith("reload failed: generation 2 ")
    assert boss.serving()["pid"] == serving["pid"]
    assert [r["outcome"] for r in boss.status()["reloads"]] == ["failed"]


def test_sighups_during_a_reload_coalesce_into_one_that_after_sighup_awaits(start_pyboss, app):
    with open(app[1], "w") as f:
        f.write("--ready-delay 1")
    boss = start_pyboss([app[0]])
    started = boss.cli("reload")            # generation 2 starts, without --wait
    assert started.returncode == 0, started.stderr
    boss.upstream.wait_for("RELOADING=1")
    sent = monotonic_usec()
    os.kill(boss.pid, signal.SIGHUP)        # arrives while generation 2 gets ready
    result = boss.cli("reload", "--after-sighup", timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    # Not generation 2's outcome: the SIGHUP came after it started, so it is generation 3,
    # announced by a RELOADING=1 stamped after the signal.
    assert result.stdout.startswith("pyboss: reloaded: generation 3 ")
    boss.upstream.wait_for("READY=1")
    reloading = fields(boss.upstream.wait_for("RELOADING=1"))
    assert int(reloading["MONOTONIC_USEC"]) >= sent


def test_sighup_while_no_generation_serves_gets_reloading_then_ready(start_pyboss, app):
    boss = start_pyboss([app[0]], "--crash-limit", "100")
    with open(app[1], "w") as f:
        f.write("--exit-code 1")        # every respawn fails at once, backing off longer
    os.kill(boss.serving()["pid"], signal.SIGKILL)
    wait_for_status(boss, lambda text: text.startswith("no generation serving; respawning in")
                    and float(text.rsplit(" ", 1)[1].rstrip("s")) >= 1.6)
    # Between two respawns: the SIGHUP starts one at once, and systemd (Type=notify-reload)
    # gets its RELOADING=1 and, the new generation failing, its READY=1 all the same.
    sent = monotonic_usec()
    os.kill(boss.pid, signal.SIGHUP)
    reloading = fields(boss.upstream.wait_for("RELOADING=1"))
    assert int(reloading["MONOTONIC_USEC"]) >= sent
    ready = fields(boss.upstream.wait_for("READY=1"))
    assert ready["STATUS"].startswith("reload failed: generation ")
    assert ready["STATUS"].endswith("; no generation serving")
    result = boss.cli("reload", "--after-sighup")
    assert result.returncode == 1 and "exited with status 1" in result.stderr, result.stderr
    # Fixed build, next SIGHUP between respawns: serving again, and READY=1 says so.
    with open(app[1], "w") as f:
        f.write("")
    wait_for_status(boss, lambda text: text.startswith("no generation serving; respawning in")
                    and float(text.rsplit(" ", 1)[1].rstrip("s")) >= 1.6)
    os.kill(boss.pid, signal.SIGHUP)
    boss.upstream.wait_for("RELOADING=1")
    ready = fields(boss.upstream.wait_for("READY=1"))
    assert ready["STATUS"].startswith("serving generation ")
    result = boss.cli("reload", "--after-sighup")
    assert result.returncode == 0, result.stderr


def wait_for_status(boss, predicate):
    """Await a STATUS= message from pyboss that predicate accepts."""
    while True:
        message = boss.upstream.next_message()
        status = fields(message).get("STATUS")
        if status is not None and predicate(status):
            return status


def test_reload_extends_systemds_timeout_at_once_not_at_the_next_tick(start_pyboss, app):
    # systemd's reload timeout (TimeoutStartSec=) runs from its SIGHUP; pyboss's periodic
    # EXTEND_TIMEOUT_USEC= comes every 2 s, too late for a short one.
    boss = start_pyboss([app[0]], "--ready-timeout", "20")
    os.kill(boss.pid, signal.SIGHUP)
    boss.upstream.wait_for("RELOADING=1")
    extend = fields(boss.upstream.next_message())
    assert 20e6 <= int(extend["EXTEND_TIMEOUT_USEC"]) <= 30e6, extend
    boss.upstream.wait_for("READY=1")
