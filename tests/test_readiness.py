"""Readiness that cannot lie: the settle period, crash loops that end, --ready-probe."""
import glob
import os
import select
import signal
import sys

from pyboss_testing import PYTHON, TIMEOUT, Load, Pyboss, http_get, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = os.path.join(ROOT, "examples", "servers")
BIN = os.path.dirname(sys.executable)

DIES_AFTER_READY = ('exec %s -c "import pyboss, sys, time; pyboss.ready(); time.sleep(0.3); '
                    'sys.exit(1)"\n' % PYTHON)
# Never notifies; does 1.5 s of start-up work before it accepts on any socket.
SLOW_SILENT = "exec %s -m pyboss.demo --no-ready --ready-delay 1.5\n" % PYTHON
SLOW_SILENT_BROKEN = 'exec %s -c "import sys, time; time.sleep(1); sys.exit(1)"\n' % PYTHON


def gunicorn_build(module):
    return "cd %s && exec %s/gunicorn -w 2 %s\n" % (SERVERS, BIN, module)


def launcher(directory, build):
    """An app whose next build the test picks with set_build (a shell snippet)."""
    set_build(directory, build)
    app = os.path.join(str(directory), "app")
    with open(app, "w") as f:
        f.write('#!/bin/sh\n. "%s"\n' % os.path.join(str(directory), "build"))
    os.chmod(app, 0o755)
    return app


def set_build(directory, build):
    with open(os.path.join(str(directory), "build"), "w") as f:
        f.write(build)


def upstream_messages(boss):
    """Every message pyboss sent to its NOTIFY_SOCKET so far (the test plays systemd)."""
    messages = list(boss.upstream.messages)
    while select.select([boss.upstream.sock], [], [], 0)[0]:
        messages.append(boss.upstream.sock.recv(4096).decode())
    return messages


def test_broken_gunicorn_build_fails_reload_with_default_options_and_old_keeps_serving(
        start_pyboss, tmp_path):
    app = launcher(tmp_path, gunicorn_build("wsgi_app:app"))
    boss = start_pyboss([app])
    first = boss.serving()
    with Load(boss.address(), threads=4) as load:
        set_build(tmp_path, gunicorn_build("broken_app:app"))
        broken = boss.reload()
        # gunicorn's master said READY=1 before its workers failed to import the app.
        assert broken.returncode == 1
        assert broken.stderr.startswith("pyboss reload: failed: generation 2 (pid ")
        assert "after it reported ready (inside the --ready-grace of 3s)" in broken.stderr
        assert boss.serving()["pid"] == first["pid"]
        assert http_get(boss.address())["generation"] == 1
        failed_at = len(load.results)
        set_build(tmp_path, gunicorn_build("wsgi_app:app"))
        for _ in range(3):
            result = boss.reload()
            assert result.returncode == 0, result.stderr
    assert load.errors == []
    assert {r[2] for r in load.results[:failed_at]} == {1}
    assert boss.serving()["number"] == 5
    assert {1, 5} <= load.generations()
    print("\ngunicorn broken build: %s; then 3 reloads: %d requests, 0 failed, worst latency "
          "%.1f ms" % (broken.stderr.strip(), len(load.results), load.worst_latency * 1000))


def test_reload_to_a_build_that_dies_after_ready_fails_and_old_keeps_serving(
        start_pyboss, tmp_path):
    app = launcher(tmp_path, "exec %s -m pyboss.demo\n" % PYTHON)
    boss = start_pyboss([app])
    old = boss.serving()
    set_build(tmp_path, DIES_AFTER_READY)
    with Load(boss.address(), threads=4) as load:
        result = boss.reload()
    assert result.returncode == 1
    assert result.stderr.startswith("pyboss reload: failed: generation 2 (pid ")
    assert ") exited with status 1 0." in result.stderr
    assert result.stderr.strip().endswith(
        "s after it reported ready (inside the --ready-grace of 3s)")
    assert boss.serving()["pid"] == old["pid"]
    assert load.errors == [] and load.generations() == {1}
    assert boss.status()["reloads"][-1]["outcome"] == "failed"
    # systemd hears the truth as well: READY=1 with the failure, never "serving generation 2".
    messages = upstream_messages(boss)
    assert any("STATUS=reload failed: generation 2" in m for m in messages), messages
    assert not any("serving generation 2" in m for m in messages), messages


def test_first_generation_that_dies_after_ready_ends_pyboss_with_status_1(tmp_path):
    app = launcher(tmp_path, DIES_AFTER_READY)
    boss = Pyboss(tmp_path, [app], wait_ready=False)
    try:
        assert boss.proc.wait(TIMEOUT) == 1
        out = boss.output()
        assert ("giving up: %s failed 5 times in a row without becoming ready (last: "
                "generation 5 (pid " % app) in out
        assert "s after it reported ready (inside the --ready-grace of 3s))" in out
        # pyboss never told its manager it was ready: nothing ever served.
        assert not any("READY=1" in m.split("\n") for m in upstream_messages(boss))
    finally:
        boss.close()


def test_serving_generation_crash_then_respawns_dying_after_ready_end_pyboss(tmp_path):
    app = launcher(tmp_path, "exec %s -m pyboss.demo\n" % PYTHON)
    boss = Pyboss(tmp_path, [app], "--crash-limit", "3")
    try:
        serving = boss.serving()
        set_build(tmp_path, DIES_AFTER_READY)
        os.kill(serving["pid"], signal.SIGKILL)
        assert boss.proc.wait(TIMEOUT) == 1
        out = boss.output()
        assert "generation 1 (pid %d) killed by SIGKILL while serving" % serving["pid"] in out
        assert ("giving up: %s failed 3 times in a row without becoming ready (last: "
                "generation 4 (pid " % app) in out
        assert "s after it reported ready (inside the --ready-grace of 3s))" in out
    finally:
        boss.close()


def test_ready_probe_reloads_a_silent_slow_app_without_requests_waiting(start_pyboss, tmp_path):
    app = launcher(tmp_path, SLOW_SILENT)
    boss = start_pyboss([app], "--ready-probe", "/")
    with Load(boss.address(), threads=4) as load:
        for _ in range(3):
            result = boss.reload()
            assert result.returncode == 0, result.stderr
    history = boss.status()["reloads"]
    assert len(history) == 3
    # Ready when it answered on its own probe socket (1.5 s of start-up), not before...
    assert all(r["duration"] >= 1.5 for r in history), history
    # ...while the old generation answered every request meanwhile.
    assert load.errors == []
    assert load.worst_latency < 1.0, load.worst_latency
    assert boss.serving()["number"] == 4
    print("\n--ready-probe: %d requests, 0 failed, worst latency %.1f ms, reloads took %s s"
          % (len(load.results), load.worst_latency * 1000, [r["duration"] for r in history]))


def test_ready_probe_broken_build_fails_the_reload_and_old_serves_on(start_pyboss, tmp_path):
    app = launcher(tmp_path, SLOW_SILENT)
    boss = start_pyboss([app], "--ready-probe", "/")
    old = boss.serving()
    set_build(tmp_path, SLOW_SILENT_BROKEN)
    with Load(boss.address(), threads=4) as load:
        result = boss.reload()
    assert result.returncode == 1
    assert result.stderr.startswith("pyboss reload: failed: generation 2 (pid ")
    assert result.stderr.strip().endswith(") exited with status 1")
    assert boss.serving()["pid"] == old["pid"]
    assert load.errors == [] and load.generations() == {1}


def test_ready_probe_socket_is_the_generations_own_and_named_pyboss_probe(start_pyboss, tmp_path):
    report = tmp_path / "env"
    app = launcher(tmp_path, 'env > "%s"\n%s' % (report, SLOW_SILENT))
    boss = start_pyboss([app], "--ready-probe", "/", listen=("web=127.0.0.1:0",))
    env = dict(line.split("=", 1) for line in report.read_text().splitlines() if "=" in line)
    assert env["LISTEN_FDS"] == "2"
    assert env["LISTEN_FDNAMES"] == "web:pyboss-probe"
    (private,) = glob.glob(str(tmp_path / ".pyboss-*"))
    # Its file goes once the generation is promoted; only pyboss's notify socket is left.
    assert os.listdir(private) == ["notify"]
    assert boss.reload().returncode == 0
    assert os.listdir(private) == ["notify"]
    boss.stop()
    assert not os.path.exists(private)


def test_ready_probe_never_answered_fails_at_the_timeout_saying_what_it_got(
        start_pyboss, tmp_path):
    app = launcher(tmp_path, SLOW_SILENT)
    boss = start_pyboss([app], "--ready-probe", "/healthz", "--ready-timeout", "3")
    old = boss.serving()
    set_build(tmp_path, "exec sleep 3600\n")     # holds the probe socket, never answers
    result = boss.reload()
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        ") did not answer GET /healthz on its probe socket with 2xx or 3xx within 3s (last "
        "attempt: connected, no answer yet)")
    assert boss.serving()["pid"] == old["pid"]
    wait_until(lambda: len(boss.status()["generations"]) == 1, what="the silent one reaped")
    assert http_get(boss.address())["generation"] == 1


def test_ready_probe_with_an_app_that_speaks_sd_notify_needs_ready_too(start_pyboss, tmp_path):
    # Answers the probe at once but sends only STATUS=, never READY=1: not ready.
    build = ('exec %s -c "import pyboss, runpy, sys; pyboss.status(\'warming up\'); '
             'sys.argv[1:] = [\'--no-ready\']; runpy.run_module(\'pyboss.demo\', '
             'run_name=\'__main__\')"\n' % PYTHON)
    app = launcher(tmp_path, SLOW_SILENT)
    boss = start_pyboss([app], "--ready-probe", "/", "--ready-timeout", "3")
    set_build(tmp_path, build)
    result = boss.reload()
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        ") answered the probe but never sent READY=1 within 3s")
    assert http_get(boss.address())["generation"] == 1
