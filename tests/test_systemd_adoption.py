"""pyboss's own crash or upgrade under a real systemd never touches the app.

KillMode=process: when pyboss dies systemd kills nothing else, Restart= starts the next
pyboss, which finds its state in the fd store (a memfd) and adopts the generations that
still run. `pyboss upgrade` replaces the supervisor's code in its own process (MAINPID
stays). `pyboss sweep` (ExecStopPost=) leaves nothing behind a stop.
"""
import json
import time

import pytest

from pyboss_testing import TIMEOUT, install_build, wait_until
from supervised_units import (PYTHON, LoadInside, app_processes, curl, journal_json, main_pid,
                              sigkill_pyboss_and_await_restart, write_units)

CONTROL = "/run/pyboss/demo/demo.sock"


def status(ns):
    return json.loads(ns.run([PYTHON, "-m", "pyboss", "status", "--json",
                              "--control", CONTROL]).stdout)


def adoption_units(tmp_path, extra="", **kw):
    return write_units(tmp_path, kill_mode="process",
                       service_extra="ExecStopPost=+%s -m pyboss sweep\n%s" % (PYTHON, extra),
                       **kw)


@pytest.mark.alone       # worst latency < 100 ms: no other test may take the CPU meanwhile
def test_pyboss_sigkilled_three_times_the_2s_app_serves_on_without_a_failure(
        systemd_ns, tmp_path):
    units, _ = adoption_units(tmp_path, app_flags="--ready-delay 2")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    app_pid = curl(ns)["pid"]
    supervisors = [main_pid(ns)]
    # 4 load threads keep both cores busy; more only add the load client's own waits
    # for its GIL to the latencies it measures.
    with LoadInside(ns, threads=4) as load:
        for _ in range(3):
            time.sleep(0.5)     # the load runs on between kills
            supervisors.append(sigkill_pyboss_and_await_restart(ns))
    assert [g["pid"] for g in status(ns)["generations"]] == [app_pid]
    assert load.failures == 0, load.result
    assert load.result["generations"] == {"1": [app_pid]}
    assert load.result["worst_latency"] < 0.1, load.result
    assert len(set(supervisors)) == 4
    adopted = [e for e in journal_json(ns) if e.get("PYBOSS_EVENT") == "adopted"]
    assert [(e["_PID"], e["PYBOSS_CHILD_PID"]) for e in adopted] == \
        [(str(pid), str(app_pid)) for pid in supervisors[1:]]
    print("3 SIGKILLs of pyboss, 2 s app: %d requests, worst latency %.3fs"
          % (load.result["requests"], load.result["worst_latency"]))
    ns.systemctl("stop", "demo.service")
    assert ns.unit_processes("demo.service") == []


def test_reload_cut_short_by_pyboss_death_is_failed_cleanly_and_the_old_app_serves(
        systemd_ns, tmp_path):
    units, flags = adoption_units(tmp_path, pyboss_options="--ready-timeout 30")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    serving = curl(ns)
    flags.write_text("--ready-delay 20")    # the next build is slow to start
    ns.systemctl("reload", "--no-block", "demo.service")
    wait_until(lambda: len(app_processes(ns)) == 2, what="generation 2 to start")
    sigkill_pyboss_and_await_restart(ns)
    after = status(ns)
    assert [(g["number"], g["pid"]) for g in after["generations"]] == \
        [(1, serving["pid"])]
    assert after["reloads"][-1]["outcome"] == "failed"
    assert "pyboss restarted during the reload" in after["reloads"][-1]["reason"]
    assert curl(ns) == serving
    wait_until(lambda: len(app_processes(ns)) == 1, what="generation 2 to be killed")


def test_reload_whose_new_generation_got_ready_while_pyboss_was_dead_is_completed(
        systemd_ns, tmp_path):
    # pyboss stays dead for 3 s; the new generation says READY=1 after 1 s, into the
    # notify socket kept in the fd store, where the next pyboss finds it.
    units, flags = adoption_units(tmp_path, extra="RestartSec=3s\n",
                                  pyboss_options="--ready-timeout 30")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    old = curl(ns)
    flags.write_text("--ready-delay 1")
    ns.systemctl("reload", "--no-block", "demo.service")
    wait_until(lambda: len(app_processes(ns)) == 2, what="generation 2 to start")
    sigkill_pyboss_and_await_restart(ns)
    after = status(ns)
    assert after["reloads"][-1]["outcome"] == "ok", after["reloads"]
    serving = [g for g in after["generations"] if g["state"] == "serving"]
    assert [g["number"] for g in serving] == [2]
    assert curl(ns)["generation"] == 2
    wait_until(lambda: old["pid"] not in app_processes(ns), what="generation 1 to drain")


def test_systemctl_stop_while_pyboss_is_dead_leaves_no_process(systemd_ns, tmp_path):
    # A long RestartSec: the stop surely comes while systemd waits to restart pyboss.
    units, _ = adoption_units(tmp_path, extra="RestartSec=5s\n")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    app_pid = curl(ns)["pid"]
    ns.run(["sh", "-c", "kill -KILL %d" % main_pid(ns)])    # the shell's kill: no procps
    wait_until(lambda: ns.systemctl("show", "-P", "SubState", "demo.service").stdout.strip()
               == "auto-restart", what="systemd to wait for the restart")
    assert app_processes(ns), "the app serves on while pyboss is dead"
    assert curl(ns)["pid"] == app_pid
    ns.systemctl("stop", "demo.service")
    # The stop drops the restart and runs nothing more of the unit: the watcher that
    # `pyboss sweep` left in a transient unit is stopped with it, first, and stops the
    # app. So nothing is left once systemctl returns.
    assert ns.unit_processes("demo.service") == [], ns.journal()[-6000:]
    assert "demo.service was stopped while pyboss was dead: stopped %d" % app_pid \
        in ns.journal()


def test_sigkill_and_stop_at_once_leave_no_process(systemd_ns, tmp_path):
    units, _ = adoption_units(tmp_path)
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    curl(ns)
    ns.run(["sh", "-c", "kill -KILL %d; systemctl stop demo.service" % main_pid(ns)])
    assert ns.unit_processes("demo.service") == []


def test_upgrade_ten_times_under_systemd_keeps_mainpid_and_the_app(systemd_ns, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install_build(site, "1.0.0")
    units, _ = adoption_units(tmp_path, extra="Environment=PYTHONPATH=%s\n" % site)
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    supervisor, app_pid = main_pid(ns), curl(ns)["pid"]
    assert status(ns)["version"] == "1.0.0"
    with LoadInside(ns, threads=8) as load:
        for number in range(1, 11):
            install_build(site, "1.0.%d" % number)
            result = ns.run([PYTHON, "-m", "pyboss", "upgrade", "--control", CONTROL],
                            timeout=TIMEOUT)
            assert "to 1.0.%d (pid %d)" % (number, supervisor) in result.stdout
            after = status(ns)
            assert after["version"] == "1.0.%d" % number and after["pid"] == supervisor
            assert [g["pid"] for g in after["generations"]] == [app_pid]
            assert main_pid(ns) == supervisor
            assert ns.systemctl("is-active", "demo.service").stdout.strip() == "active"
    assert load.failures == 0, load.result
    assert load.result["generations"] == {"1": [app_pid]}
    # The upgraded supervisor is still systemd's main process and still reloads.
    ns.run(["timeout", str(TIMEOUT), "systemctl", "reload", "demo.service"])
    assert curl(ns)["generation"] == 2
    print("10 upgrades under systemd: %d requests, worst latency %.3fs"
          % (load.result["requests"], load.result["worst_latency"]))


def serving_workers(after):
    return sorted((w["slot"], w["pid"]) for g in after["generations"] for w in g["workers"]
                  if w["state"] == "serving")


def test_pyboss_sigkilled_with_two_workers_both_workers_serve_on_and_are_adopted(
        systemd_ns, tmp_path):
    units, _ = adoption_units(tmp_path, pyboss_options="--ready-timeout 20 --workers 2")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    curl(ns)
    before = serving_workers(status(ns))
    host_pids = sorted(app_processes(ns))
    assert [slot for slot, _ in before] == [0, 1] and len(host_pids) == 2
    with LoadInside(ns, threads=8) as load:
        supervisor = sigkill_pyboss_and_await_restart(ns)
        after = status(ns)
    # The very same two processes, each in its slot, and no others.
    assert serving_workers(after) == before
    assert after["workers"] == 2 and len(after["generations"]) == 1
    assert sorted(app_processes(ns)) == host_pids
    assert load.failures == 0, load.result
    assert load.result["generations"] == {"1": sorted(pid for _, pid in before)}, load.result
    adopted = [e for e in journal_json(ns) if e.get("PYBOSS_EVENT") == "adopted"]
    assert sorted((int(e["PYBOSS_SLOT"]), int(e["PYBOSS_CHILD_PID"])) for e in adopted) == before
    assert {e["_PID"] for e in adopted} == {str(supervisor)}
    # Supervised again: a reload replaces both workers, a stop leaves nothing.
    ns.run(["timeout", str(TIMEOUT), "systemctl", "reload", "demo.service"])
    assert curl(ns)["generation"] == 2
    wait_until(lambda: not set(host_pids) & set(app_processes(ns)),
               what="both adopted workers to drain")
    ns.systemctl("stop", "demo.service")
    assert ns.unit_processes("demo.service") == []
