"""--workers N: several processes per generation, rolling reloads, scaling, per-slot respawn."""
import json
import os
import signal
import subprocess

import pytest

from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, Load, pid_alive, wait_until


def workers_of(status):
    """{slot: worker} of the serving generation(s): every worker that is serving."""
    return {w["slot"]: w for g in status["generations"] for w in g["workers"]
            if w["state"] == "serving"}


def wait_for_workers(boss, count):
    """Wait until `count` workers serve and nothing else runs; returns {slot: worker}."""
    def settled():
        status = boss.status()
        alive = [w for g in status["generations"] for w in g["workers"]]
        serving = workers_of(status)
        if len(serving) == count and len(alive) == count and all(
                w["ready_after"] is not None for w in serving.values()):
            return serving
        return None
    return wait_until(settled, what="%d ready workers and no other" % count)


def write_env_app(directory):
    """An app that records each worker's environment, then serves as the demo does."""
    app = os.path.join(directory, "env_app.py")
    with open(app, "w") as f:
        f.write("""import json, os, sys
keys = ("LISTEN_PID", "LISTEN_FDS", "PYBOSS_WORKER", "PYBOSS_GENERATION")
path = os.path.join(%r, "worker-%%s.json" %% os.environ["PYBOSS_WORKER"])
with open(path + ".tmp", "w") as out:
    json.dump({"pid": os.getpid(), "env": {k: os.environ.get(k) for k in keys}}, out)
os.rename(path + ".tmp", path)
from pyboss.demo import main
sys.exit(main([]))
""" % directory)
    return [PYTHON, app]


def write_marked_launcher(directory, marker_name, when_marked, only_worker=None):
    """(launcher, marker): a launcher running the demo, or the shell command when_marked
    while the file marker_name exists (in worker only_worker alone, if given)."""
    app = os.path.join(directory, "app")
    marker = os.path.join(directory, marker_name)
    test = "[ -e %s ]" % marker
    if only_worker is not None:
        test = "[ \"$PYBOSS_WORKER\" = %d ] && %s" % (only_worker, test)
    with open(app, "w") as f:
        f.write("#!/bin/sh\nif %s; then %s; fi\nexec %s -m pyboss.demo\n"
                % (test, when_marked, PYTHON))
    os.chmod(app, 0o755)
    return app, marker


def write_slot_failing_app(directory):
    """A launcher whose worker 1 exits with status 5 while the file fail-slot-1 exists."""
    return write_marked_launcher(directory, "fail-slot-1", "exit 5", only_worker=1)


def test_two_workers_answer_from_two_distinct_pids_at_once(start_pyboss, app):
    boss = start_pyboss([app[0]], "--workers", "2")
    pids = {w["pid"] for w in wait_for_workers(boss, 2).values()}
    with Load(boss.address(), threads=8, path="/sleep?ms=200") as load:
        wait_until(lambda: {a[2] for a in load.answers} >= pids, what="answers from both")
    assert not load.errors, load.errors[:5]
    answers = sorted(load.answers)
    overlapping = [(a[2], b[2]) for i, a in enumerate(answers) for b in answers[i + 1:]
                   if b[0] < a[1] and a[2] != b[2]]
    assert overlapping, "no two requests were answered at the same time by two workers"
    assert {pid for pair in overlapping for pid in pair} == pids


def test_each_worker_gets_its_own_listen_pid_and_worker_number(start_pyboss, tmp_path):
    boss = start_pyboss(write_env_app(str(tmp_path)), "--workers", "3")
    serving = wait_for_workers(boss, 3)
    for slot in range(3):
        report = json.loads((tmp_path / ("worker-%d.json" % slot)).read_text())
        assert report["pid"] == serving[slot]["pid"]
        assert report["env"] == {"LISTEN_PID": str(report["pid"]), "LISTEN_FDS": "1",
                                 "PYBOSS_WORKER": str(slot), "PYBOSS_GENERATION": "1"}


@pytest.mark.parametrize("strategy", ["all", "rolling"])
def test_twenty_reloads_under_load_fail_no_request(start_pyboss, app, strategy):
    # A short settle period: forty new workers settling 3 s each would make this slow.
    boss = start_pyboss([app[0]], "--workers", "2", "--reload-strategy", strategy,
                        "--ready-grace", "0.5")
    with Load(boss.address(), threads=6) as load:
        for i in range(20):
            result = boss.reload()
            assert result.returncode == 0, result.stderr
    assert not load.errors, load.errors[:5]
    serving = wait_for_workers(boss, 2)
    assert {w["number"] for w in serving.values()} == {21}
    assert {2, 21} <= load.generations()
    print("%s: %d requests, worst %.1f ms" % (strategy, len(load.results),
                                              load.worst_latency * 1000))


def test_rolling_reload_where_the_second_new_worker_fails_keeps_one_of_two_replaced(
        start_pyboss, tmp_path):
    app, marker = write_slot_failing_app(str(tmp_path))
    boss = start_pyboss([app], "--workers", "2", "--reload-strategy", "rolling")
    before = wait_for_workers(boss, 2)
    open(marker, "w").close()
    with Load(boss.address(), threads=6) as load:
        result = boss.reload()
    assert result.returncode == 1
    assert "1 of 2 replaced; failed because generation 2 worker 1" in result.stderr
    assert "exited with status 5" in result.stderr
    assert not load.errors, load.errors[:5]
    after = wait_for_workers(boss, 2)
    assert after[0]["number"] == 2 and after[0]["pid"] != before[0]["pid"]
    assert after[1]["number"] == 1 and after[1]["pid"] == before[1]["pid"]
    text = boss.cli("status").stdout
    assert "generation 2" in text and "reload strategy rolling" in text, text
    assert boss.status()["reloads"][-1]["outcome"] == "failed"


def test_sigkilled_worker_is_respawned_alone_and_no_request_is_refused(start_pyboss, app):
    boss = start_pyboss([app[0]], "--workers", "2")
    before = wait_for_workers(boss, 2)
    with Load(boss.address(), threads=6) as load:
        os.kill(before[1]["pid"], signal.SIGKILL)
        after = wait_until(lambda: (lambda w: w if len(w) == 2 and w[1]["pid"] !=
                                    before[1]["pid"] else None)(workers_of(boss.status())),
                           what="slot 1 respawned")
        wait_until(lambda: any(a[2] == after[1]["pid"] for a in load.answers),
                   what="the respawned worker to answer")
    refused = [e for e in load.errors if "Refused" in e]
    assert not refused, refused[:5]
    # Only connections the killed worker had already accepted can be lost (reset or closed).
    assert all(e.startswith(("ConnectionResetError", "ValueError: bad reply: b''"))
               for e in load.errors), load.errors[:5]
    assert after[0]["pid"] == before[0]["pid"] and pid_alive(before[0]["pid"])
    assert after[1]["number"] == 1, "the slot was respawned within its generation"
    assert "generation 1 worker 1 (pid %d) killed by SIGKILL while serving" % before[1]["pid"] \
        in boss.output()
    assert "starting a new worker in slot 1" in boss.output()
    print("%d requests, %d lost with the killed worker" % (len(load.results), len(load.errors)))


def test_scale_to_three_then_one_under_load_fails_no_request(start_pyboss, app):
    boss = start_pyboss([app[0]], "--workers", "2")
    first = wait_for_workers(boss, 2)
    with Load(boss.address(), threads=6) as load:
        up = boss.cli("scale", "3")
        assert up.returncode == 0, up.stderr
        three = wait_for_workers(boss, 3)
        wait_until(lambda: any(a[2] == three[2]["pid"] for a in load.answers),
                   what="the third worker to answer")
        down = boss.cli("scale", "1")
        assert down.returncode == 0, down.stderr
        one = wait_for_workers(boss, 1)
    assert not load.errors, load.errors[:5]
    assert [w["pid"] for w in three.values()][:2] == [first[0]["pid"], first[1]["pid"]]
    assert one[0]["pid"] == first[0]["pid"]
    assert "3 workers serving" in up.stdout and "1 workers serving" in down.stdout
    assert boss.status()["workers"] == 1


def test_sigttin_adds_a_worker_and_sigttou_drains_one(start_pyboss, app):
    boss = start_pyboss([app[0]], "--workers", "2")
    two = wait_for_workers(boss, 2)
    boss.proc.send_signal(signal.SIGTTIN)
    three = wait_for_workers(boss, 3)
    boss.proc.send_signal(signal.SIGTTOU)
    wait_for_workers(boss, 2)
    boss.proc.send_signal(signal.SIGTTOU)
    one = wait_for_workers(boss, 1)
    assert three[0]["pid"] == two[0]["pid"] and three[1]["pid"] == two[1]["pid"]
    assert one[0]["pid"] == two[0]["pid"]
    assert not pid_alive(three[2]["pid"]) and not pid_alive(two[1]["pid"])


def test_worker_slot_that_keeps_failing_is_given_up_while_the_others_serve(start_pyboss,
                                                                         tmp_path):
    app, marker = write_slot_failing_app(str(tmp_path))
    boss = start_pyboss([app], "--workers", "2", "--crash-limit", "3")
    before = wait_for_workers(boss, 2)
    open(marker, "w").close()
    os.kill(before[1]["pid"], signal.SIGKILL)
    wait_until(lambda: "worker slot 1 failed 3 times in a row" in boss.output(),
               what="slot 1 given up")
    assert boss.proc.poll() is None
    assert list(workers_of(boss.status())) == [0]
    os.unlink(marker)
    result = boss.cli("scale", "2")            # the next scale (or reload) tries again
    assert result.returncode == 0, result.stderr
    assert wait_for_workers(boss, 2)[0]["pid"] == before[0]["pid"]


@pytest.mark.parametrize("args, message", [
    (["exec", "--workers", "0", "--", "true"], "--workers"),
    (["exec", "--workers", "2000", "--", "true"], "--workers"),
    (["exec", "--max-surge", "0", "--", "true"], "--max-surge"),
    (["exec", "--reload-strategy", "some", "--", "true"], "--reload-strategy"),
    (["scale", "0"], "WORKERS"),
    (["scale", "many"], "WORKERS"),
])
def test_worker_numbers_out_of_range_are_one_line_and_exit_2(tmp_path, args, message):
    result = subprocess.run(PYBOSS + args[:1] + ["--control", str(tmp_path / "c.sock")]
                            + args[1:], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert os.listdir(tmp_path) == []


def test_scale_of_a_pyboss_that_is_not_running_says_so(tmp_path):
    result = subprocess.run(PYBOSS + ["scale", "2", "--control", str(tmp_path / "none.sock")],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert "no pyboss is running" in result.stderr


def test_scale_request_with_a_bad_number_gets_an_error_reply_and_changes_nothing(start_pyboss,
                                                                                  app):
    from pyboss.supervisor.control import request
    boss = start_pyboss([app[0]], "--workers", "2")
    before = wait_for_workers(boss, 2)
    for bad in ("3", 0, 5000, True, None, 2.5):
        reply = request(boss.control, {"command": "scale", "workers": bad}, TIMEOUT)
        assert reply["ok"] is False and "give 1 to 1024" in reply["error"], (bad, reply)
    after = wait_for_workers(boss, 2)
    assert [w["pid"] for w in after.values()] == [w["pid"] for w in before.values()]


def write_build_app(directory):
    """A launcher running the demo, or (while the file dies-after-ready exists) an app that
    reports ready and exits with status 1 0.3 s later."""
    return write_marked_launcher(directory, "dies-after-ready", "exec %s -c \"import pyboss, "
                                 "sys, time; pyboss.ready(); time.sleep(0.3); sys.exit(1)\""
                                 % PYTHON)


def test_rolling_reload_settles_each_new_worker_before_its_old_worker_drains(start_pyboss,
                                                                             tmp_path):
    app, _ = write_build_app(str(tmp_path))
    boss = start_pyboss([app], "--workers", "2", "--reload-strategy", "rolling")   # 3 s settle
    before = wait_for_workers(boss, 2)
    with Load(boss.address(), threads=6) as load:
        result = boss.reload()
    assert result.returncode == 0, result.stderr
    assert not load.errors, load.errors[:5]
    after = wait_for_workers(boss, 2)
    assert {w["number"] for w in after.values()} == {2}
    # One worker at a time (--max-surge 1), each alive through its 3 s settle period first.
    assert boss.status()["reloads"][-1]["duration"] >= 6.0
    log = boss.output()
    for slot in (0, 1):
        settling = log.index("generation 2 worker %d (pid %d) reported ready after"
                             % (slot, after[slot]["pid"]))
        drained = log.index("generation 1 worker %d (pid %d)" % (slot, before[slot]["pid"]),
                            settling)   # its drain, and its exit, come after that
        assert settling < drained


def test_rolling_new_worker_dying_inside_the_settle_period_fails_and_its_old_worker_serves_on(
        start_pyboss, tmp_path):
    app, marker = write_build_app(str(tmp_path))
    boss = start_pyboss([app], "--workers", "2", "--reload-strategy", "rolling")   # 3 s settle
    before = wait_for_workers(boss, 2)
    open(marker, "w").close()
    with Load(boss.address(), threads=6) as load:
        result = boss.reload()
    assert result.returncode == 1
    assert "0 of 2 replaced; failed because generation 2 worker 0 (pid " in result.stderr
    assert "after it reported ready (inside the --ready-grace of 3s)" in result.stderr
    assert not load.errors, load.errors[:5]
    after = wait_for_workers(boss, 2)
    assert {s: w["pid"] for s, w in after.items()} == {s: w["pid"] for s, w in before.items()}
    assert load.generations() == {1}


def test_ready_probe_gives_every_worker_a_probe_socket_of_its_own(start_pyboss, tmp_path):
    app = os.path.join(str(tmp_path), "probe_app.py")
    with open(app, "w") as f:
        f.write("""import json, os, socket, sys
probe = 3 + int(os.environ["LISTEN_FDS"]) - 1
path = socket.socket(fileno=os.dup(probe)).getsockname()
report = os.path.join(%r, "worker-%%s.json" %% os.environ["PYBOSS_WORKER"])
with open(report + ".tmp", "w") as out:
    json.dump({"names": os.environ["LISTEN_FDNAMES"], "probe": path}, out)
os.rename(report + ".tmp", report)
from pyboss.demo import main
sys.exit(main(["--no-ready", "--ready-delay", "0.5"]))
""" % str(tmp_path))
    boss = start_pyboss([PYTHON, app], "--workers", "2", "--ready-probe", "/",
                        "--ready-grace", "0.5")
    wait_for_workers(boss, 2)
    reports = [json.loads((tmp_path / ("worker-%d.json" % slot)).read_text())
               for slot in (0, 1)]
    assert all(r["names"].endswith(":pyboss-probe") for r in reports), reports
    assert reports[0]["probe"] != reports[1]["probe"]
    # Each worker's probe socket file goes once that worker is ready.
    assert not any(os.path.exists(r["probe"]) for r in reports)
    result = boss.cli("scale", "3")
    assert result.returncode == 0, result.stderr
    wait_for_workers(boss, 3)
    third = json.loads((tmp_path / "worker-2.json").read_text())
    assert third["probe"] not in {r["probe"] for r in reports}
    assert not os.path.exists(third["probe"])
