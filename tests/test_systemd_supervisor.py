"""pyboss as a systemd service, inside a real systemd: reloads, crashes, the fd store.

Every test boots its own systemd (tests/systemd_harness.py) and runs pyboss with the
demo app as demo.service; load comes from a client inside the namespace.
"""
import os
import re
import time

import pytest

from pyboss_testing import TIMEOUT, wait_until
from supervised_units import (PYTHON, LoadInside, app_processes, curl, environ_of,
                              journal_json, listening_inode, main_pid,
                              sigkill_pyboss_and_await_restart, write_units)

OWN_PORT = 8081


def reload(ns, check=True):
    # A reload that never sees READY=1 would hang `systemctl reload` forever.
    return ns.run(["timeout", str(TIMEOUT), "systemctl", "reload", "demo.service"], check=check)


def assert_no_failures(load):
    assert load.failures == 0, load.result


def test_socket_activation_starts_pyboss_and_root_finds_its_control_socket(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path)
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket")
    reply = curl(ns)        # the first connection starts demo.service
    assert reply["generation"] == 1
    # The generation answers during its settle period; systemd hears READY=1 after it:
    # `systemctl start` waits for that (a reload before would merge into the start job).
    ns.systemctl("start", "demo.service")
    # An admin's root shell: no $RUNTIME_DIRECTORY, no $XDG_RUNTIME_DIR. The unit put
    # the control socket in /run/pyboss/demo/demo.sock; `--name demo` finds it there.
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR")}
    status = ns.run([PYTHON, "-m", "pyboss", "status", "--name", "demo"], env=env).stdout
    assert "serving" in status and "http" in status and "inherited" in status
    assert "serving generation 1 (pid %d)" % reply["pid"] in \
        ns.systemctl("show", "-P", "StatusText", "demo.service").stdout


def test_twenty_systemctl_reloads_under_load_fail_no_request(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path, app_flags="--work-ms 5")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    with LoadInside(ns) as load:
        for _ in range(20):
            reload(ns)
    assert_no_failures(load)
    assert curl(ns)["generation"] == 21
    assert len(load.result["generations"]) >= 15, load.result["generations"]
    print("20 reloads: %d requests, worst latency %.3fs"
          % (load.result["requests"], load.result["worst_latency"]))


def test_broken_next_build_fails_systemctl_reload_and_old_pid_keeps_serving(systemd_ns, tmp_path):
    units, flags = write_units(tmp_path, pyboss_options="--ready-timeout 3")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    serving = curl(ns)
    flags.write_text("--no-ready")      # the next build never becomes ready
    started = time.monotonic()
    result = reload(ns, check=False)
    took = time.monotonic() - started
    assert result.returncode != 0 and took < 3 + 5, (result.returncode, took)
    assert took >= 3    # pyboss waited its --ready-timeout before giving up
    assert curl(ns) == serving
    status = ns.systemctl("status", "demo.service", check=False).stdout
    assert re.search(r"Status: \"reload failed: generation 2 \(pid \d+\) never sent READY=1 "
                     r"within 3s: for an app that does not speak sd_notify, use --ready-after "
                     r"SECONDS or --ready-probe PATH; serving generation 1 \(pid %d\)\""
                     % serving["pid"], status), status
    assert ns.systemctl("is-active", "demo.service").stdout.strip() == "active"
    flags.write_text("")                # fixed: the next reload works again
    reload(ns)
    assert curl(ns)["generation"] == 3


def test_pyboss_sigkilled_three_times_under_load_loses_no_request(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path, app_flags="--work-ms 20")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    inode = listening_inode(ns, 8080)
    pids = [main_pid(ns)]
    with LoadInside(ns, threads=8) as load:
        for _ in range(3):
            time.sleep(0.5)     # the load runs on between kills
            pids.append(sigkill_pyboss_and_await_restart(ns))
            assert curl(ns)["generation"] == 1
    assert_no_failures(load)
    assert len(set(pids)) == 4
    assert listening_inode(ns, 8080) == inode
    print("3 SIGKILLs: %d requests, worst latency %.3fs"
          % (load.result["requests"], load.result["worst_latency"]))


def test_listener_bound_by_pyboss_survives_sigkill_through_the_fd_store(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path, listen="http=127.0.0.1:%d" % OWN_PORT,
                           app_flags="--work-ms 20")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.service")
    inode = listening_inode(ns, OWN_PORT)
    notify_socket = environ_of(app_processes(ns)[0])["NOTIFY_SOCKET"]
    old_app = curl(ns, OWN_PORT)["pid"]
    with LoadInside(ns, port=OWN_PORT) as load:
        sigkill_pyboss_and_await_restart(ns)
    assert_no_failures(load)
    # The very same socket, handed back by systemd's fd store; not bound again.
    assert listening_inode(ns, OWN_PORT) == inode
    # pyboss's notify socket too: the new generation reports to the same address.
    assert environ_of(app_processes(ns)[0])["NOTIFY_SOCKET"] == notify_socket
    journal = ns.journal("demo.service")
    assert "listener http (tcp 127.0.0.1:%d) is back from the fd store" % OWN_PORT in journal
    assert "notify socket %s is back from the fd store" % notify_socket in journal
    # The old app, SIGTERMed by systemd, said STOPPING=1 while no pyboss ran: the message
    # waited in the stored socket; the new pyboss read it and refused its sender.
    assert "dropped a notify message queued from pid %d before this pyboss started " \
        "(STOPPING): not one of its generations" % old_app in journal
    status = ns.run([PYTHON, "-m", "pyboss", "status", "--json",
                     "--control", "/run/pyboss/demo/demo.sock"]).stdout
    assert '"origin": "bound"' in status


def test_stale_stored_listener_is_removed_when_its_listen_is_gone(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path, listen=["http=127.0.0.1:8080", "admin=127.0.0.1:%d"
                                             % OWN_PORT])
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.service")
    assert curl(ns, OWN_PORT)["generation"] == 1
    service = units / "demo.service"
    service.write_text(service.read_text().replace(" --listen admin=127.0.0.1:%d" % OWN_PORT, ""))
    ns.systemctl("daemon-reload")
    inode = listening_inode(ns, 8080)
    sigkill_pyboss_and_await_restart(ns)
    assert curl(ns)["generation"] == 1
    assert listening_inode(ns, 8080) == inode
    # admin was in the fd store; no --listen asks for it now: removed and closed.
    assert curl(ns, OWN_PORT, check=False) is None
    assert "ino:" not in ns.run(["ss", "-Hltne", "sport = :%d" % OWN_PORT]).stdout
    assert "removed pyboss+listener+admin from the fd store" in ns.journal("demo.service")


def test_systemctl_restart_refuses_nothing_and_stop_leaves_no_process(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path, listen="http=127.0.0.1:%d" % OWN_PORT,
                           app_flags="--work-ms 20")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.service")
    inode = listening_inode(ns, OWN_PORT)
    first = main_pid(ns)
    with LoadInside(ns, port=OWN_PORT) as load:
        ns.systemctl("restart", "demo.service")
        assert main_pid(ns) != first
        assert curl(ns, OWN_PORT)["generation"] == 1
    assert_no_failures(load)
    assert listening_inode(ns, OWN_PORT) == inode
    ns.systemctl("stop", "demo.service")
    assert ns.unit_processes("demo.service") == []
    assert curl(ns, OWN_PORT, check=False) is None      # and no socket left open


def test_notify_reload_on_systemd_254(systemd_ns, systemd_254, tmp_path):
    units, _ = write_units(tmp_path, service_type="notify-reload")
    ns = systemd_ns(units, overlay_usr=systemd_254)
    ns.systemctl("start", "demo.socket", "demo.service")
    first = curl(ns)
    with LoadInside(ns) as load:
        for generation in (2, 3):
            reload(ns)      # SIGHUP from systemd; RELOADING=1, MONOTONIC_USEC=, READY=1
            assert curl(ns)["generation"] == generation
    assert_no_failures(load)
    assert main_pid(ns) != first["pid"]
    assert "Reloaded" in ns.journal("demo.service")


def test_journal_entries_carry_pyboss_fields(systemd_ns, tmp_path):
    pytest.importorskip("systemd.journal", reason="systemd-python (pyboss[systemd]) is not "
                        "installed: pyboss logs plain lines")
    units, _ = write_units(tmp_path)
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    pid = curl(ns)["pid"]
    ready = [e for e in journal_json(ns) if e.get("PYBOSS_EVENT") == "ready"]
    assert len(ready) == 1, ready
    assert ready[0]["PYBOSS_GENERATION"] == "1"
    assert ready[0]["PYBOSS_CHILD_PID"] == str(pid)
    assert ready[0]["PYBOSS_NAME"] == "demo"


def test_slow_generation_extends_systemd_start_and_reload_timeout(systemd_ns, tmp_path):
    # TimeoutStartSec=2s, but the app needs 3s and pyboss's --ready-timeout is 20s.
    units, _ = write_units(tmp_path, app_flags="--ready-delay 3",
                           service_extra="TimeoutStartSec=2s\n")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    assert curl(ns)["generation"] == 1
    reload(ns)          # TimeoutStartSec= bounds a reload too
    assert curl(ns)["generation"] == 2
    assert ns.systemctl("show", "-P", "NRestarts", "demo.service").stdout.strip() == "0"
    assert "timed out" not in ns.journal("demo.service")


WATCHDOG_APP = r"""
import os, sys, time
import pyboss
from pyboss import sd
assert os.environ["WATCHDOG_PID"] == str(os.getpid())
period = int(os.environ["WATCHDOG_USEC"]) / 4e6
pyboss.ready()
until = time.monotonic() + float(sys.argv[1])
while time.monotonic() < until:         # healthy: pings
    sd.notify("WATCHDOG=1")
    time.sleep(period)
time.sleep(3600)                        # stuck: alive, silent
"""


def test_watchdog_pings_only_while_the_app_does(systemd_ns, tmp_path):
    app = tmp_path / "watchdog_app.py"
    app.write_text(WATCHDOG_APP)
    units, _ = write_units(tmp_path, app="%s %s 4" % (PYTHON, app),
                           service_extra="WatchdogSec=1s\n")
    ns = systemd_ns(units)
    started = time.monotonic()
    ns.systemctl("start", "demo.socket", "demo.service")
    first = main_pid(ns)
    # While the app pings (4s, four watchdog periods) pyboss keeps systemd content;
    # once the app is silent, pyboss stops pinging and systemd's watchdog fires.
    wait_until(lambda: "Watchdog timeout" in ns.journal("demo.service"),
               what="systemd's watchdog to fire")
    assert time.monotonic() - started > 4
    journal = ns.journal("demo.service")
    assert "stopped sending WATCHDOG=1" in journal
    assert journal.index("stopped sending WATCHDOG=1") < journal.index("Watchdog timeout")
    wait_until(lambda: main_pid(ns) not in (0, first), what="the restart after the watchdog")
