"""What observability costs pyboss: idle memory and CPU with metrics on and off, and log
throughput through --capture-output against the app writing its log directly.

    python -m benchmarks.observability            # about a minute and a half
    python -m benchmarks.observability --quick    # a few seconds, for the smoke test

1. Idle: a bare `python3 -c 'import time; time.sleep(...)'`, `pyboss exec` without
   metrics, and `pyboss exec --metrics HOST:PORT --metrics-textfile PATH` (scraped a few
   times first, so that the exposition code has run), all with the same idle app. RSS is
   VmRSS of the supervisor process alone; CPU is its utime+stime ticks over the idle
   period. pyboss's modules are byte-compiled first, as an installed package's are:
   compiling from source would add about 1 MiB that no installed pyboss carries.
   Goal: pyboss with metrics within 2 MiB of the bare interpreter.
2. Log throughput: an app writes LINES lines of 100 bytes, once to a file directly and
   once through `pyboss exec --capture-output` (pyboss's stdout a file), both in
   block-buffered writes and with one write per line (as logging's StreamHandler does).
   Time runs from the app's first write until the whole log is in the file: for the
   relayed run, until pyboss has written the last prefixed line. Goal: relayed
   throughput >= 0.9 of direct.
"""
import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchmarks import procfs
from benchmarks.peers import REPO, child_env, free_port

LINE = b"x" * 99 + b"\n"
PREFIX = b"[gen 1] "

# The idle app: ready at once, then nothing until SIGTERM.
IDLE_APP = "import pyboss, signal; pyboss.ready(); signal.sigwait({signal.SIGTERM})"

# The logging app: note the start time, write the lines, note the end, then idle.
LOG_APP = r"""
import os, signal, sys, time
lines, per_line, marks = int(sys.argv[1]), sys.argv[2] == "line", sys.argv[3]
line = b"x" * 99 + b"\n"
out = sys.stdout.buffer
start = time.time()
if per_line:
    for _ in range(lines):
        os.write(1, line)
else:
    chunk = line * 80
    for _ in range(lines // 80):
        out.write(chunk)
    out.flush()
end = time.time()
with open(marks, "w") as f:
    f.write("%r %r" % (start, end))
if os.environ.get("NOTIFY_SOCKET"):
    import pyboss
    pyboss.ready()
    signal.sigwait({signal.SIGTERM})
"""


def pyboss_exec(workdir, options, app_argv, stdout):
    control = os.path.join(workdir, "bench-%d.sock" % time.monotonic_ns())
    proc = subprocess.Popen([sys.executable, "-m", "pyboss", "exec", "--control", control,
                             "--listen", "127.0.0.1:0", *options, "--", *app_argv],
                            stdout=stdout, stderr=subprocess.DEVNULL, env=child_env(),
                            cwd=REPO)
    return proc, control


def wait_ready(control, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run([sys.executable, "-m", "pyboss", "status", "--json",
                                 "--control", control], capture_output=True, text=True,
                                env=child_env())
        if result.returncode == 0 and any(g["state"] == "serving"
                                          for g in json.loads(result.stdout)["generations"]):
            return
        time.sleep(0.05)
    raise RuntimeError("pyboss did not get a generation ready within %ss" % timeout)


def stop(proc):
    proc.terminate()
    proc.wait(60)


def idle(workdir, seconds):
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    port = free_port()
    plain, plain_control = pyboss_exec(workdir, [], [sys.executable, "-c", IDLE_APP],
                                       subprocess.DEVNULL)
    metrics, metrics_control = pyboss_exec(
        workdir, ["--metrics", "127.0.0.1:%d" % port,
                  "--metrics-textfile", os.path.join(workdir, "pyboss.prom")],
        [sys.executable, "-c", IDLE_APP], subprocess.DEVNULL)
    try:
        wait_ready(plain_control)
        wait_ready(metrics_control)
        for _ in range(5):
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
                r.read()
        time.sleep(1.0)      # let start-up work settle
        procs = {"bare python3 sleep": bare, "pyboss, metrics off": plain,
                 "pyboss, --metrics and --metrics-textfile": metrics}
        before = {name: procfs.cpu_ticks(p.pid) for name, p in procs.items()}
        time.sleep(seconds)  # the measurement itself: nothing happens on purpose
        rows = []
        for name, p in procs.items():
            rows.append({"what": name, "rss_kib": procfs.rss_kib(p.pid),
                         "cpu_ticks": procfs.cpu_ticks(p.pid) - before[name]})
        base = rows[0]["rss_kib"]
        for row in rows:
            row["over_bare_mib"] = round((row["rss_kib"] - base) / 1024, 2)
        return rows
    finally:
        bare.kill()
        bare.wait()
        stop(plain)
        stop(metrics)


def read_marks(path, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            if text:
                return [float(x) for x in text.split()]
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    raise RuntimeError("the logging app did not finish within %ss" % timeout)


def log_direct(workdir, lines, mode):
    marks, out = os.path.join(workdir, "direct.marks"), os.path.join(workdir, "direct.out")
    for path in (marks,):
        if os.path.exists(path):
            os.unlink(path)
    with open(out, "wb") as f:
        subprocess.run([sys.executable, "-c", LOG_APP, str(lines), mode, marks], stdout=f,
                       env=child_env(), check=True)
    start, end = read_marks(marks)
    assert os.path.getsize(out) == lines * len(LINE)
    return end - start


def log_captured(workdir, lines, mode):
    marks, out = os.path.join(workdir, "captured.marks"), os.path.join(workdir, "captured.out")
    if os.path.exists(marks):
        os.unlink(marks)
    expected = lines * (len(LINE) + len(PREFIX))
    with open(out, "wb") as f:
        proc, _ = pyboss_exec(workdir, ["--capture-output"],
                              [sys.executable, "-c", LOG_APP, str(lines), mode, marks], f)
        try:
            start, _ = read_marks(marks)
            deadline = time.monotonic() + 120
            while os.path.getsize(out) < expected:
                if time.monotonic() > deadline:
                    raise RuntimeError("pyboss did not relay the whole log within 120s")
                time.sleep(0.0005)
            end = time.time()
        finally:
            stop(proc)
    return end - start


def throughput(workdir, lines, rounds):
    """Direct and relayed runs alternate, so that both see the same machine; the ratio is
    the median of each pair's ratio."""
    rows = []
    for mode, label in (("block", "block-buffered writes"), ("line", "one write per line")):
        pairs = [(log_direct(workdir, lines, mode), log_captured(workdir, lines, mode))
                 for _ in range(rounds)]
        mib = lines * len(LINE) / 2 ** 20
        rows.append({"writes": label, "lines": lines,
                     "direct_mib_s": round(mib / statistics.median(d for d, _ in pairs), 1),
                     "captured_mib_s": round(mib / statistics.median(c for _, c in pairs), 1),
                     "ratio": round(statistics.median(d / c for d, c in pairs), 3)})
    return rows


def table(rows, columns):
    out = ["| " + " | ".join(title for title, _ in columns) + " |",
           "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(str(row[key]) for _, key in columns) + " |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.observability",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    idle_seconds, lines, rounds = (2, 20000, 1) if args.quick else (30, 400000, 7)
    compileall.compile_dir(os.path.join(REPO, "pyboss"), quiet=1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pyboss-bench-obs-") as workdir:
        idle_rows = idle(workdir, idle_seconds)
        log_rows = throughput(workdir, lines, rounds)
    print("%d CPUs, Python %s; load average before %.2f, after %.2f (a busy machine makes "
          "throughput noisy)\n" % (os.cpu_count(), sys.version.split()[0], load_before[0],
                                    os.getloadavg()[0]))
    print("Idle %ds: supervisor process alone\n" % idle_seconds)
    print(table(idle_rows, [("", "what"), ("RSS KiB", "rss_kib"),
                            ("over bare python3, MiB", "over_bare_mib"),
                            ("CPU ticks", "cpu_ticks")]))
    print("\nLog throughput, %d lines of 100 bytes, median of %d alternating runs\n"
          % (lines, rounds))
    print(table(log_rows, [("app writes", "writes"), ("direct MiB/s", "direct_mib_s"),
                           ("--capture-output MiB/s", "captured_mib_s"),
                           ("captured / direct", "ratio")]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"idle": idle_rows, "log_throughput": log_rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
