"""`pyboss upgrade` and SIGUSR2 outside systemd: the supervisor's code is replaced in place.

The supervisor runs from a copy of pyboss in a directory of the test's own
(PYTHONPATH), so the test can install another build there, with another version,
and see the running supervisor take it over: same pid, same app, nothing refused.
"""
import os
import signal

from pyboss_testing import (TIMEOUT, Load, Pyboss, await_generation, install_build, pid_alive,
                            wait_until, write_breakable_app)


def start_from_build(tmp_path, command, *options, version="1.0.0"):
    site = tmp_path / "site"
    site.mkdir()
    install_build(site, version)
    env = {"PYTHONPATH": str(site)}
    # Not from the checkout: `python -m` looks in the working directory first.
    boss = Pyboss(tmp_path / "run", command, *options, env=env, cwd=str(tmp_path))
    return boss, site


def test_upgrade_ten_times_under_load_keeps_the_app_and_reports_each_new_version(app, tmp_path):
    boss, site = start_from_build(tmp_path, [app[0]])
    try:
        assert boss.status()["version"] == "1.0.0"
        app_pid = boss.serving()["pid"]
        with Load(boss.address()) as load:
            for number in range(1, 11):
                version = "1.0.%d" % number
                install_build(site, version)
                result = boss.cli("upgrade", env=boss.env)
                assert result.returncode == 0, result.stderr
                assert "from 1.0.%d to %s (pid %d)" % (number - 1, version, boss.pid) \
                    in result.stdout
                status = boss.status()
                assert status["version"] == version
                assert status["pid"] == boss.pid
                assert [g["pid"] for g in status["generations"]] == [app_pid]
        assert load.errors == []
        assert load.generations() == {1}
        assert boss.proc.poll() is None
        # Still the supervisor: a reload and a stop work as before.
        assert boss.reload().returncode == 0
        await_generation(boss.address(), 2)
        assert boss.stop().returncode == 0
        assert boss.proc.returncode == 0
    finally:
        boss.close()


def test_broken_installed_build_fails_the_upgrade_and_the_old_code_keeps_supervising(
        app, tmp_path):
    boss, site = start_from_build(tmp_path, [app[0]])
    try:
        app_pid = boss.serving()["pid"]
        install_build(site, "2.0.0")
        with open(site / "pyboss" / "supervisor" / "supervise.py", "a") as f:
            f.write("\nraise ImportError('this build is broken')\n")
        result = boss.cli("upgrade", env=boss.env)
        assert result.returncode == 1
        assert result.stderr.strip() == ("pyboss upgrade: failed: the installed pyboss cannot "
                                         "take over: ImportError: this build is broken")
        status = boss.status()
        assert status["version"] == "1.0.0" and status["pid"] == boss.pid
        assert [g["pid"] for g in status["generations"]] == [app_pid]
        assert boss.reload().returncode == 0
        install_build(site, "2.0.1")        # fixed: the next upgrade goes through
        assert boss.cli("upgrade", env=boss.env).returncode == 0
        assert boss.status()["version"] == "2.0.1"
    finally:
        boss.close()


def test_sigusr2_upgrades_in_place(app, tmp_path):
    boss, site = start_from_build(tmp_path, [app[0]])
    try:
        app_pid = boss.serving()["pid"]
        install_build(site, "3.0.0")
        os.kill(boss.pid, signal.SIGUSR2)
        wait_until(lambda: boss.status()["version"] == "3.0.0", what="the upgrade by SIGUSR2")
        assert boss.serving()["pid"] == app_pid
        assert "pyboss 3.0.0 took over from pyboss 1.0.0" in boss.output()
    finally:
        boss.close()


def test_upgrade_keeps_a_draining_generation_its_deadline_and_the_history(app, tmp_path):
    with open(app[1], "w") as f:
        f.write("--ignore-term")            # this build never leaves on the drain signal
    boss, site = start_from_build(tmp_path, [app[0]], "--drain-timeout", "3")
    try:
        stuck = boss.serving()["pid"]
        with open(app[1], "w") as f:
            f.write("")
        assert boss.reload().returncode == 0
        install_build(site, "1.1.0")
        assert boss.cli("upgrade", env=boss.env).returncode == 0
        status = boss.status()
        assert status["version"] == "1.1.0"
        assert [(g["number"], g["state"]) for g in status["generations"]] == \
            [(1, "draining"), (2, "serving")]
        assert [(r["generation"], r["outcome"]) for r in status["reloads"]] == [(2, "ok")]
        # Nobody but the deadline carried over the upgrade would ever kill it.
        wait_until(lambda: not pid_alive(stuck), timeout=TIMEOUT, what="the drain deadline")
        wait_until(lambda: "generation 1 (pid %d) killed by SIGKILL" % stuck in boss.output(),
                   what="the new code to reap the generation it adopted")
    finally:
        boss.close()


def test_metrics_counters_and_endpoint_survive_an_upgrade(tmp_path):
    from test_observability import get, metric_samples, sample
    app, broken = write_breakable_app(str(tmp_path))
    boss, site = start_from_build(tmp_path, [app], "--name", "web", "--metrics", "127.0.0.1:0",
                                  "--ready-grace", "0.2")
    try:
        address = boss.status()["metrics"]["address"]
        for _ in range(5):
            assert boss.reload().returncode == 0
        open(broken, "w").close()
        for _ in range(2):
            assert boss.reload().returncode == 1
        install_build(site, "1.0.1")
        result = boss.cli("upgrade", env=boss.env)
        assert result.returncode == 0, result.stderr
        # The same endpoint, served by the new code, counts on from where the old one was.
        samples = metric_samples(get(address)[2])
        assert sample(samples, "pyboss_info", name="web", version="1.0.1") == 1
        assert sample(samples, "pyboss_reloads_total", name="web", outcome="ok") == 5
        assert sample(samples, "pyboss_reloads_total", name="web", outcome="failed") == 2
        assert sample(samples, "pyboss_reload_duration_seconds_count", name="web") == 7
    finally:
        boss.close()
