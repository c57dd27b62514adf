"""--workers N across pyboss's own death and `pyboss upgrade`: every worker carries on.

A SIGKILLed pyboss leaves each worker of each generation serving; the next `pyboss exec
--name` adopts them all, each in its slot, and respawns into its slot a worker that died
meanwhile. A rolling reload cut short by pyboss's death stops where it was. An upgrade
carries every worker across, in the same process.
"""
import json
import os
import re
import signal

from pyboss_testing import PYTHON, Load, Pyboss, install_build, pid_alive, wait_until
from test_adoption import saved_state, sigkill
from test_upgrade import start_from_build
from test_workers import wait_for_workers, workers_of, write_marked_launcher, write_slot_failing_app


def answered_by(load, pids):
    """Wait until each of pids answered a request of load started from now on."""
    since = len(load.answers)
    wait_until(lambda: {a[2] for a in load.answers[since:]} >= set(pids),
               what="answers from pids %s" % sorted(pids))


def test_sigkilled_pyboss_with_two_workers_is_adopted_worker_by_worker_and_no_request_fails(
        start_pyboss, app, tmp_path, orphans):
    first = start_pyboss([app[0]], "--workers", "2", "--drain-timeout", "10")
    before = wait_for_workers(first, 2)
    pids = [before[0]["pid"], before[1]["pid"]]
    orphans.extend(pids)
    recorded = saved_state(first)["generations"][0]["workers"]
    assert [(w["slot"], w["pid"]) for w in recorded] == [(0, pids[0]), (1, pids[1])]
    address = first.address()
    with Load(address, threads=6) as load:
        sigkill(first)
        answered_by(load, pids)     # orphaned, both workers serve on
        second = Pyboss(tmp_path / "second", [app[0]], "--workers", "2", "--drain-timeout",
                        "10", control=first.control)
        orphans.append(second)
        after = wait_for_workers(second, 2)
        assert [after[0]["pid"], after[1]["pid"]] == pids
        assert all(w["number"] == 1 for w in after.values())
        answered_by(load, pids)     # supervised again, by the same two processes
    assert load.errors == []
    assert load.generations() == {1}
    for slot, pid in enumerate(pids):
        assert "generation 1 worker %d (pid %d) adopted (serving)" % (slot, pid) \
            in second.output()
    # Supervised again, worker by worker: a slot's death is respawned into that slot ...
    os.kill(pids[1], signal.SIGKILL)
    respawned = wait_until(lambda: (lambda w: w if len(w) == 2 and w[1]["pid"] != pids[1]
                                    else None)(workers_of(second.status())),
                           what="slot 1 respawned by the adopting pyboss")
    assert respawned[0]["pid"] == pids[0] and respawned[1]["number"] == 1
    # ... and a reload replaces the adopted generation as any other.
    result = second.reload()
    assert result.returncode == 0, result.stderr
    assert {w["number"] for w in wait_for_workers(second, 2).values()} == {2}
    wait_until(lambda: not pid_alive(pids[0]), what="the adopted worker to drain")
    second.stop()
    assert second.proc.returncode == 0


def test_worker_that_died_while_pyboss_was_dead_is_respawned_into_its_slot(
        start_pyboss, app, tmp_path, orphans):
    first = start_pyboss([app[0]], "--workers", "2")
    before = wait_for_workers(first, 2)
    orphans.extend([before[0]["pid"], before[1]["pid"]])
    sigkill(first)
    os.kill(before[1]["pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(before[1]["pid"]), what="worker 1 to die")
    second = Pyboss(tmp_path / "second", [app[0]], "--workers", "2", control=first.control)
    orphans.append(second)
    after = wait_for_workers(second, 2)
    assert after[0]["pid"] == before[0]["pid"]
    assert after[1]["pid"] != before[1]["pid"] and after[1]["number"] == 1
    log = second.output()
    assert "generation 1 worker 1 (pid %d) is gone: not adopted" % before[1]["pid"] in log
    assert "starting a new worker in slot 1 in 0.1s" in log     # the slot's first backoff
    assert "generation 1 worker 0 (pid %d) adopted (serving)" % before[0]["pid"] in log


def test_scaled_number_of_workers_outlives_a_pyboss_crash(start_pyboss, app, tmp_path,
                                                          orphans):
    first = start_pyboss([app[0]], "--workers", "2")
    wait_for_workers(first, 2)
    assert first.cli("scale", "3").returncode == 0
    three = wait_for_workers(first, 3)
    orphans.extend(w["pid"] for w in three.values())
    sigkill(first)
    # The unit still says --workers 2; the operator's scale stands until pyboss stops.
    second = Pyboss(tmp_path / "second", [app[0]], "--workers", "2", control=first.control)
    orphans.append(second)
    after = wait_for_workers(second, 3)
    assert [w["pid"] for w in after.values()] == [w["pid"] for w in three.values()]
    assert second.status()["workers"] == 3
    assert "running 3 workers per generation as the earlier pyboss did (--workers 2 was " \
        "given)" in second.output()


def write_slot_slow_app(directory):
    """A launcher whose worker 1 takes 60 s to get ready while the file slow-slot-1 exists."""
    return write_marked_launcher(directory, "slow-slot-1",
                                 "exec %s -m pyboss.demo --ready-delay 60" % PYTHON,
                                 only_worker=1)


def test_rolling_reload_cut_short_by_pyboss_death_keeps_the_replaced_worker_and_fails(
        start_pyboss, tmp_path, orphans):
    app, marker = write_slot_slow_app(str(tmp_path))
    options = ("--workers", "2", "--reload-strategy", "rolling", "--ready-grace", "0.5",
               "--ready-timeout", "90")
    first = start_pyboss([app], *options)
    before = wait_for_workers(first, 2)
    orphans.extend([before[0]["pid"], before[1]["pid"]])
    open(marker, "w").close()
    assert first.cli("reload").returncode == 0       # queued; the roll runs on

    def half_way():
        status = first.status()
        serving = workers_of(status)
        starting = [w for g in status["generations"] for w in g["workers"]
                    if w["state"] == "starting"]
        if serving[0]["number"] == 2 and len(starting) == 1 and starting[0]["slot"] == 1:
            return serving[0]["pid"], starting[0]["pid"]
        return None
    replaced, slow = wait_until(half_way, what="slot 0 replaced, slot 1's new worker starting")
    orphans.extend([replaced, slow])
    with Load(first.address(), threads=6) as load:
        sigkill(first)
        second = Pyboss(tmp_path / "second", [app], *options, control=first.control)
        orphans.append(second)
        after = wait_for_workers(second, 2)
        wait_until(lambda: not pid_alive(slow), what="the new worker still starting killed")
    assert load.errors == []
    assert (after[0]["number"], after[0]["pid"]) == (2, replaced)
    assert (after[1]["number"], after[1]["pid"]) == (1, before[1]["pid"])
    verdict = second.status()["reloads"][-1]
    assert verdict["outcome"] == "failed"
    assert verdict["reason"] == "1 of 2 replaced; failed because pyboss restarted during " \
                                "the rolling reload"
    text = second.cli("status").stdout
    assert "generation 2" in text and "generation 1" in text, text


def test_upgrade_with_two_workers_keeps_both_pids_and_status_shows_both(app, tmp_path):
    boss, site = start_from_build(tmp_path, [app[0]], "--workers", "2")
    try:
        before = wait_for_workers(boss, 2)
        pids = [before[0]["pid"], before[1]["pid"]]
        with Load(boss.address(), threads=6) as load:
            for number in range(1, 4):
                install_build(site, "1.0.%d" % number)
                result = boss.cli("upgrade", env=boss.env)
                assert result.returncode == 0, result.stderr
                status = boss.status()
                assert status["version"] == "1.0.%d" % number and status["pid"] == boss.pid
                assert [(w["slot"], w["pid"], w["state"]) for w in workers_of(status).values()] \
                    == [(0, pids[0], "serving"), (1, pids[1], "serving")]
                answered_by(load, pids)
        assert load.errors == []
        text = boss.cli("status").stdout
        for slot, pid in enumerate(pids):
            assert re.search(r"slot %d +pid %d +serving" % (slot, pid), text), text
        # Still supervising every slot: SIGTTIN adds a worker, a reload replaces them all.
        boss.proc.send_signal(signal.SIGTTIN)
        three = wait_for_workers(boss, 3)
        assert [three[0]["pid"], three[1]["pid"]] == pids
        assert boss.reload().returncode == 0
        assert {w["number"] for w in wait_for_workers(boss, 3).values()} == {2}
        assert boss.stop().returncode == 0
        assert boss.proc.returncode == 0
    finally:
        boss.close()
    assert not any(pid_alive(pid) for pid in pids)


def test_upgrade_during_a_slot_backoff_keeps_the_respawn_time(tmp_path):
    # Worker 1 of this build keeps failing: its slot's backoff grows (0.1 s, 0.2 s, ...).
    # The new code starts it when the old code would have, neither at once nor never.
    app, marker = write_slot_failing_app(str(tmp_path))
    boss, site = start_from_build(tmp_path, [app], "--workers", "2", "--crash-limit", "10")
    try:
        before = wait_for_workers(boss, 2)
        open(marker, "w").close()
        os.kill(before[1]["pid"], signal.SIGKILL)
        wait_until(lambda: "starting a new worker in slot 1 in 6.4s" in boss.output(),
                   what="slot 1's seventh backoff")
        os.unlink(marker)
        install_build(site, "1.0.1")
        assert boss.cli("upgrade", env=boss.env).returncode == 0
        after = wait_for_workers(boss, 2)
        assert after[0]["pid"] == before[0]["pid"] and after[1]["number"] == 1
        log = boss.output()
        upgraded = log[log.index("took over from pyboss 1.0.0"):]
        assert "generation 1 worker 1 (pid %d) started in slot 1" % after[1]["pid"] in upgraded
        assert "starting a new worker in slot 1" not in upgraded, \
            "the new code put the slot through its backoff again instead of keeping its time"
    finally:
        boss.close()


def test_workers_starting_when_pyboss_dies_are_probed_again_by_the_next_one(tmp_path, orphans):
    # Each worker holds its probe socket; its file is where the dead pyboss bound it. The
    # next pyboss asks there, instead of waiting out --ready-timeout for nothing.
    app = os.path.join(str(tmp_path), "probe_app.py")
    with open(app, "w") as f:
        f.write("""import json, os, socket, sys
probe = 3 + int(os.environ["LISTEN_FDS"]) - 1
path = socket.socket(fileno=os.dup(probe)).getsockname()
report = os.path.join(%r, "worker-%%s.json" %% os.environ["PYBOSS_WORKER"])
with open(report + ".tmp", "w") as out:
    json.dump({"pid": os.getpid(), "probe": path}, out)
os.rename(report + ".tmp", report)
from pyboss.demo import main
sys.exit(main(["--no-ready", "--ready-delay", "3"]))
""" % str(tmp_path))
    options = ("--workers", "2", "--ready-probe", "/", "--ready-grace", "0.5",
               "--ready-timeout", "300")
    first = Pyboss(tmp_path / "first", [PYTHON, app], *options, wait_ready=False)
    orphans.append(first)
    reports = [tmp_path / ("worker-%d.json" % slot) for slot in (0, 1)]
    wait_until(lambda: all(r.exists() for r in reports), what="both workers started")
    workers = [json.loads(r.read_text()) for r in reports]
    orphans.extend(w["pid"] for w in workers)
    sigkill(first)
    assert all(os.path.exists(w["probe"]) for w in workers)
    second = Pyboss(tmp_path / "second", [PYTHON, app], *options, control=first.control)
    orphans.append(second)
    after = wait_for_workers(second, 2)
    assert [after[0]["pid"], after[1]["pid"]] == [w["pid"] for w in workers]
    log = second.output()
    for slot, worker in enumerate(workers):
        assert "generation 1 worker %d (pid %d) adopted (starting)" % (slot, worker["pid"]) in log
        assert "generation 1 worker %d (pid %d) reported ready after" % (slot, worker["pid"]) \
            in log
    # Each probe socket file goes once its worker is ready, as with workers never adopted.
    assert not any(os.path.exists(w["probe"]) for w in workers)
