"""The benchmark's own smoke test: a very short run of every scenario against every peer
that can be had here, checked for the figures pyboss promises."""
import importlib.util
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ["pyboss", "start_server", "gunicorn", "app alone"]


def run_quick_benchmark(out):
    done = subprocess.run([sys.executable, "-m", "benchmarks.reload", "--quick", "--out", str(out)],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=240)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    with open(out / "latest.json") as f:
        return json.load(f), (out / "latest.md").read_text(), done.stdout.decode()


def rows_by_peer(results, scenario):
    return {row["peer"]: row for row in results["results"][scenario]["rows"]}


def test_quick_benchmark_runs_every_scenario_and_keeps_pyboss_error_free(tmp_path):
    raw, markdown, printed = run_quick_benchmark(tmp_path)

    # Every scenario produced a table, and the same text went to stdout and latest.md.
    for number in "123456":
        assert "## Scenario %s:" % number in markdown
    assert markdown.strip() == printed.strip()

    # Every peer either took part or was skipped with a reason.
    for peer in PEERS:
        key = peer if peer != "app alone" else "alone"
        assert peer in rows_by_peer(raw, "1") or raw["skipped"].get(key), peer

    pyboss_steady = rows_by_peer(raw, "1")["pyboss"]
    assert pyboss_steady["requests"] > 0
    assert pyboss_steady["errors"] == 0
    assert pyboss_steady["reloads"] >= 1 and pyboss_steady["reloads_ok"] == pyboss_steady["reloads"]

    pyboss_slow_start = rows_by_peer(raw, "2")["pyboss"]
    assert pyboss_slow_start["errors"] == 0
    assert pyboss_slow_start["reloads_ok"] == pyboss_slow_start["reloads"] >= 1
    # A reload cannot complete before the app's own ready delay has passed.
    assert pyboss_slow_start["reload_p50_ms"] >= raw["settings"]["s2_ready"] * 1000

    pyboss_broken = rows_by_peer(raw, "3")["pyboss"]
    assert pyboss_broken["errors"] == 0
    assert pyboss_broken["reload_answer"].startswith("exit 1")
    assert pyboss_broken["after_requests"] == pyboss_broken["after_served_by_old"] > 0

    idle = rows_by_peer(raw, "4")
    assert idle["pyboss"]["rss_kib"] > 0 and idle["bare python3 sleep"]["rss_kib"] > 0

    throughput = rows_by_peer(raw, "5")
    assert throughput["pyboss"]["rps"] > 0 and throughput["pyboss"]["errors"] == 0
    assert throughput["app alone"]["ratio"] == 1.0

    many = rows_by_peer(raw, "6")["pyboss"]
    assert many["reloads_ok"] == many["reloads"] == raw["settings"]["s6_reloads"]
    assert many["errors"] == 0
    fds = [fd for _, fd, _ in many["checkpoints"]]
    assert len(fds) >= 2 and len(set(fds)) == 1, many["checkpoints"]

    if importlib.util.find_spec("matplotlib") is None:
        return  # the table is all there is without the bench extra
    with open(tmp_path / "scenario2.png", "rb") as picture:
        assert picture.read(8) == b"\x89PNG\r\n\x1a\n"


def test_benchmark_refuses_an_unknown_scenario_with_exit_2():
    done = subprocess.run([sys.executable, "-m", "benchmarks.reload", "--scenarios", "9"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 2
    assert b"no scenario '9'" in done.stderr


def test_quick_observability_benchmark_measures_idle_cost_and_relay_throughput(tmp_path):
    out = tmp_path / "observability.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.observability", "--quick",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    idle = {row["what"]: row for row in figures["idle"]}
    assert set(idle) == {"bare python3 sleep", "pyboss, metrics off",
                         "pyboss, --metrics and --metrics-textfile"}
    assert all(row["rss_kib"] > 0 for row in idle.values())
    throughput = {row["writes"]: row for row in figures["log_throughput"]}
    assert set(throughput) == {"block-buffered writes", "one write per line"}
    # The relayed log arrived whole (the run waits for every prefixed line).
    assert all(row["captured_mib_s"] > 0 and row["ratio"] > 0 for row in throughput.values())
    assert "captured / direct" in done.stdout


def test_quick_workers_benchmark_shows_two_pids_and_no_pyboss_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.workers", "--quick", "--out",
                           str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    with open(tmp_path / "workers.json") as f:
        raw = json.load(f)
    pyboss = raw["throughput"]["pyboss"]
    assert pyboss["1"]["pids"] == 1 and pyboss["2"]["pids"] == 2
    assert pyboss["1"]["errors"] == pyboss["2"]["errors"] == 0
    assert pyboss["1"]["rps"] > 0 and pyboss["2"]["rps"] > 0
    for strategy in ("all", "rolling"):
        row = raw["reload"][strategy]
        assert row["errors"] == 0 and row["reloads_failed"] == 0, (strategy, row)
        assert row["requests"] > 0
    assert "| pyboss |" in (tmp_path / "workers.md").read_text()


def test_client_benchmark_times_every_client_command_beside_a_bare_start(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.client", "--runs", "2",
                           "--out", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=240)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    with open(tmp_path / "client.json") as f:
        results = json.load(f)
    assert (tmp_path / "client.md").read_text() == done.stdout.decode()
    rows = {row["command"]: row for row in results["rows"]}
    for command in ("pyboss status", "pyboss reload", "pyboss reload --wait", "pyboss stop",
                    "pyboss start-server --restart", "pyboss start-server --stop"):
        row = rows[command]
        assert 0 < row["median_ms"] < 60000 and 0 < row["bare_start_ms"] < 60000, row
        assert row["ratio"] == round(row["median_ms"] / row["bare_start_ms"], 2)
    # The peers' commands are there, or the reason they are not.
    assert "kill -HUP" in rows or results["skipped"].get("kill -HUP (start_server)")
    assert 'gunicornc -c "show workers"' in rows or results["skipped"].get("gunicornc")


def test_client_benchmark_refuses_a_run_count_out_of_range_with_exit_2():
    done = subprocess.run([sys.executable, "-m", "benchmarks.client", "--runs", "0"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 2
    assert b"--runs 0: give a number from 1 to 1000" in done.stderr


def test_quick_supervisor_death_benchmark_keeps_pyboss_app_through_kill_and_upgrade(tmp_path):
    out = tmp_path / "death.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.supervisor_death", "--quick",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in out.read_text().splitlines()
            if line.startswith("| pyboss ")]
    assert [row[1] for row in rows] == ["SIGKILL, exec again", "pyboss upgrade"]
    for row in rows:
        assert row[3] == "0", row             # no failed request
        assert row[6:8] == ["yes", "yes"], row  # the same app, supervised at the end
