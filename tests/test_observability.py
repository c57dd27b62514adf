"""A failed reload says why; per-generation output; metrics; status (outside systemd).

The systemd side (journal streams, systemctl reload/status) is in
test_systemd_observability.py.
"""
import http.client
import json
import os
import signal
import socket
import sys
import threading

from prometheus_client.parser import text_string_to_metric_families

from pyboss import __version__
from pyboss.supervisor.metrics import Counters
from pyboss.supervisor.output import last_lines
from pyboss_testing import IMPORT_ERROR, write_breakable_app


def metric_samples(text):
    """{(sample name, frozenset(labels)): value}, as prometheus_client's parser reads text."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples, metric, **labels):
    return samples[(metric, frozenset(labels.items()))]


def get(address, path="/metrics", method="GET"):
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        conn.close()


def test_broken_build_reload_wait_shows_its_import_error_with_capture_output(start_pyboss, tmp_path):
    app, broken = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app], "--capture-output")
    old = boss.serving()
    open(broken, "w").close()
    result = boss.reload()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("pyboss reload: failed: generation 2 (pid ")
    assert lines[0].endswith(") exited with status 1")
    # What it wrote on stdout and stderr, the error itself last.
    pid = int(lines[0].split("(pid ")[1].split(")")[0])
    assert lines[1:] == ["  | generation 2 starting as pid %d" % pid,
                         "  | Traceback (most recent call last):",
                         '  |   File "<string>", line 1, in <module>',
                         "  | " + IMPORT_ERROR], result.stderr
    assert boss.serving()["pid"] == old["pid"]
    # The same lines in the STATUS= sent upstream, in status and in pyboss's log.
    status_message = boss.upstream.wait_for("READY=1")
    assert "STATUS=reload failed: generation 2 (pid" in status_message
    assert (IMPORT_ERROR + "; serving generation 1 (pid %d)" % old["pid"]) in status_message
    status = boss.status()
    assert status["reloads"][-1]["outcome"] == "failed"
    assert status["reloads"][-1]["last_lines"][-1] == IMPORT_ERROR
    assert status["failed"][-1]["number"] == 2
    assert status["failed"][-1]["last_lines"][-1] == IMPORT_ERROR
    assert status["failed"][-1]["exit"] == "exited with status 1"
    text = boss.cli("status").stdout
    assert "last failed generations:" in text and "| " + IMPORT_ERROR in text
    log = boss.output()
    assert "[gen 2] " + IMPORT_ERROR + "\n" in log
    assert "reload failed: generation 2 (pid %d) exited with status 1: generation 2 starting " \
        "as pid %d | Traceback" % (pid, pid) in log
    assert IMPORT_ERROR + "; generation 1 (pid %d) keeps serving" % old["pid"] in log


def test_capture_output_prefixes_every_line_with_its_generation(start_pyboss, tmp_path):
    app, _ = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app], "--capture-output")
    first = boss.serving()
    assert boss.reload().returncode == 0
    second = boss.serving()
    log = boss.output()
    assert "[gen 1] generation 1 starting as pid %d\n" % first["pid"] in log
    assert "[gen 2] generation 2 starting as pid %d\n" % second["pid"] in log
    assert boss.status()["output"] == "captured"


# Lines of every length up to 300 bytes, as fast as Python writes them: the relay reads
# them in chunks that cut lines anywhere, and pauses and resumes with the writer's pace.
FLOOD_APP = r"""
import signal, sys, pyboss
out = sys.stdout.buffer
for i in range(200000):
    out.write(b"line %d %s\n" % (i, b"x" * (i % 300)))
out.flush()
pyboss.ready()
signal.sigwait({signal.SIGTERM})
"""


def test_capture_output_relays_a_flood_of_lines_whole_and_in_order(start_pyboss):
    boss = start_pyboss([sys.executable, "-c", FLOOD_APP], "--capture-output")
    boss.stop()      # pyboss relays what is left in the pipe before it exits
    with open(boss.log_path, "rb") as f:
        relayed = [l for l in f.read().split(b"\n") if b" line " in l]
    expected = [b"[gen 1] line %d %s" % (i, b"x" * (i % 300)) for i in range(200000)]
    assert len(relayed) == len(expected)
    assert relayed == expected


def test_without_capture_output_generations_write_where_pyboss_writes(start_pyboss, tmp_path):
    app, broken = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app])
    open(broken, "w").close()
    result = boss.reload()
    assert result.returncode == 1
    # pyboss has no lines to give: the reason alone.
    assert len(result.stderr.splitlines()) == 1, result.stderr
    log = boss.output()
    assert "\n" + IMPORT_ERROR + "\n" in log      # straight from the app, not relayed
    assert "[gen " not in log
    assert boss.status()["output"] == "inherited"


def test_last_lines_are_at_most_five_and_at_most_one_kib():
    data = b"".join(b"line %d\n" % i for i in range(20)) + b"\n\n"
    assert last_lines(data) == ["line %d" % i for i in range(15, 20)]
    long_lines = b"".join(bytes([65 + i]) * 300 + b"\n" for i in range(5))
    kept = last_lines(long_lines)
    assert kept == ["C" * 300, "D" * 300, "E" * 300]
    assert sum(len(line) + 1 for line in kept) <= 1024
    one_huge = last_lines(b"x" * 5000 + b"ImportError: the end")
    assert len(one_huge) == 1 and len(one_huge[0].encode()) <= 1024
    assert one_huge[0].endswith("ImportError: the end")


def test_metrics_after_five_good_and_two_failed_reloads(start_pyboss, tmp_path):
    app, broken = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app], "--name", "web", "--metrics", "127.0.0.1:0")
    address = boss.status()["metrics"]["address"]
    for _ in range(5):
        assert boss.reload().returncode == 0
    open(broken, "w").close()
    for _ in range(2):
        assert boss.reload().returncode == 1
    code, content_type, text = get(address)
    assert code == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples = metric_samples(text)
    assert sample(samples, "pyboss_reloads_total", name="web", outcome="ok") == 5
    assert sample(samples, "pyboss_reloads_total", name="web", outcome="failed") == 2
    assert sample(samples, "pyboss_reload_duration_seconds_count", name="web") == 7
    assert sample(samples, "pyboss_reload_duration_seconds_bucket", name="web", le="+Inf") == 7
    assert sample(samples, "pyboss_reload_duration_seconds_sum", name="web") > 0
    assert sample(samples, "pyboss_generations", name="web", state="serving") == 1
    assert sample(samples, "pyboss_serving", name="web") == 1
    assert sample(samples, "pyboss_serving_generation", name="web") == 6
    # status rounds to the millisecond
    assert abs(sample(samples, "pyboss_last_ready_seconds", name="web")
               - boss.serving()["ready_after"]) <= 0.0005
    assert sample(samples, "pyboss_info", name="web", version=__version__) == 1
    assert sample(samples, "pyboss_crashes_total", name="web") == 0
    # Every sample carries the supervisor's name.
    assert all(dict(labels).get("name") == "web" for _, labels in samples)


def test_metrics_count_a_crash_and_its_respawn(start_pyboss, tmp_path):
    app, _ = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app], "--metrics", "127.0.0.1:0")
    address = boss.status()["metrics"]["address"]
    crashed = boss.serving()
    os.kill(crashed["pid"], signal.SIGKILL)
    boss.upstream.wait_for("READY=1")       # the respawned generation is ready
    samples = metric_samples(get(address)[2])
    assert sample(samples, "pyboss_crashes_total", name="pyboss") == 1
    assert sample(samples, "pyboss_respawns_total", name="pyboss") == 1
    assert sample(samples, "pyboss_serving_generation", name="pyboss") == 2
    failed = boss.status()["failed"][-1]
    assert failed["number"] == 1 and failed["exit"] == "killed by SIGKILL"


def test_metrics_endpoint_answers_only_metrics_and_outlives_a_silent_client(start_pyboss, tmp_path):
    app, _ = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app], "--metrics", "127.0.0.1:0")
    address = boss.status()["metrics"]["address"]
    host, _, port = address.rpartition(":")
    silent = socket.create_connection((host, int(port)))    # connects, never asks
    try:
        assert get(address, "/")[0] == 404
        assert get(address, "/metrics", method="POST")[0] == 405
        assert get(address, "/metrics", method="HEAD")[0] == 200
        assert get(address)[0] == 200
        assert boss.reload().returncode == 0
    finally:
        silent.close()


def test_metrics_textfile_is_replaced_atomically(start_pyboss, tmp_path):
    app, broken = write_breakable_app(str(tmp_path))
    textfile = tmp_path / "pyboss.prom"
    boss = start_pyboss([app], "--metrics-textfile", str(textfile))
    assert boss.status()["metrics"]["textfile"] == str(textfile)
    reads, bad, inodes = [], [], set()
    done = threading.Event()

    def reader():
        while not done.is_set():
            with open(textfile, "rb") as f:
                inodes.add(os.fstat(f.fileno()).st_ino)
                data = f.read()
            reads.append(data)
            # Whole, or not at all: every family there, the last line complete.
            try:
                samples = metric_samples(data.decode())
                sample(samples, "pyboss_respawns_total", name="pyboss")
                if not data.endswith(b"\n"):
                    raise ValueError("no final newline")
            except (ValueError, KeyError) as e:
                bad.append((repr(e), data[-200:]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(8):
            assert boss.reload().returncode == 0
        open(broken, "w").close()
        assert boss.reload().returncode == 1
    finally:
        done.set()
        thread.join()
    assert bad == []
    assert len(reads) > 100, len(reads)
    assert len(inodes) > 5, inodes        # each write was a new file renamed over the old
    samples = metric_samples(textfile.read_text())
    assert sample(samples, "pyboss_reloads_total", name="pyboss", outcome="ok") == 8
    assert sample(samples, "pyboss_reloads_total", name="pyboss", outcome="failed") == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    boss.stop()
    # The last word: nothing serves any more.
    assert sample(metric_samples(textfile.read_text()), "pyboss_serving", name="pyboss") == 0


def test_status_shows_version_uptimes_and_output(start_pyboss, tmp_path):
    app, _ = write_breakable_app(str(tmp_path))
    boss = start_pyboss([app])
    first = boss.status()
    assert boss.reload().returncode == 0
    status = boss.status()
    assert status["version"] == __version__
    assert status["uptime"] > first["uptime"] >= 0
    assert abs(status["started"] - first["started"]) < 0.002
    serving = boss.serving(status)
    assert 0 <= serving["uptime"] < status["uptime"]
    assert serving["last_lines"] is None and serving["exit"] is None
    text = boss.cli("status").stdout
    assert "pyboss %s, up " % __version__ in text
    assert " up " in text.split("generations:")[1]
    json.dumps(status)      # one JSON object, every field plain


def test_counters_survive_a_round_trip_through_json_and_refuse_nonsense():
    counters = Counters()
    for seconds in (0.05, 0.3, 0.3, 7.0, 500.0):
        counters.reload("ok", seconds)
    counters.reload("failed", 1.5)
    counters.crashes, counters.respawns = 2, 3
    carried = Counters.from_dict(json.loads(json.dumps(counters.to_dict())))
    assert carried.to_dict() == counters.to_dict()
    assert carried.reloads == {"ok": 5, "failed": 1} and carried.reload_count == 6
    # What the next pyboss cannot trust starts at 0 instead of poisoning the metrics.
    odd = Counters.from_dict({"reloads": {"ok": -1, "failed": "7"}, "crashes": True,
                              "reload_seconds": float("nan"), "reload_buckets": [1, 2]})
    assert odd.to_dict() == Counters().to_dict()
