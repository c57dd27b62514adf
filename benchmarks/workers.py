"""Several processes per generation: throughput of a CPU-bound app, and reloads under load.

    python -m benchmarks.workers            # about 5 minutes on 2 cores
    python -m benchmarks.workers --quick    # a moment of each (the smoke test)

1. Throughput: the same CPU-bound work per request (benchmarks/cpu_app.py, a sha256 chain
   that holds the GIL) under `pyboss exec --workers 1` and `--workers 2`, gunicorn `-w 1`
   and `-w 2` (sync workers) and uvicorn `--workers 1` and `--workers 2`; closed-loop load,
   fresh connection per request; three rounds that interleave every configuration, the
   median kept. The ratio is 2 workers over 1, per server.
2. Reload under load with `--workers 2`, for each --reload-strategy: steady load, reloads
   one after another (`reload --wait` on the control socket); errors, worst latency,
   reload time.

Prints the tables and writes OUT/workers.md and OUT/workers.json.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import install
from benchmarks.load import LoadClient, summarize, wait_until_serving
from benchmarks.peers import REPO, child_env, free_port, stop_session
from pyboss.supervisor import control

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Server:
    """One server process (its own session) running the CPU-bound app on a free port."""

    def __init__(self, name, workers, workdir):
        self.name, self.workers, self.workdir = name, workers, workdir
        self.port = free_port()
        self.control = os.path.join(workdir, "pyboss.sock")
        self.process = None

    def argv(self, strategy="all"):
        bind = "127.0.0.1:%d" % self.port
        if self.name == "pyboss":
            return [sys.executable, "-m", "pyboss", "exec", "--control", self.control,
                    "--listen", bind, "--workers", str(self.workers),
                    "--reload-strategy", strategy, "--", sys.executable, "-m",
                    "benchmarks.cpu_app"]
        if self.name == "gunicorn":
            return [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers",
                    str(self.workers), "--worker-class", "sync", "--chdir", REPO,
                    "benchmarks.cpu_app:wsgi"]
        return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port",
                str(self.port), "--workers", str(self.workers), "--lifespan", "off",
                "--no-access-log", "--log-level", "warning", "benchmarks.cpu_app:asgi"]

    def start(self, strategy="all"):
        log = open(os.path.join(self.workdir, "%s-%d.log" % (self.name, self.workers)), "ab")
        with log:
            self.process = subprocess.Popen(self.argv(strategy), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            env=child_env(), cwd=REPO, start_new_session=True)
        wait_until_serving(self.port, timeout=60)
        return self

    def stop(self):
        stop_session(self.process, 20)


def throughput(name, workers, workdir, seconds, threads):
    server = Server(name, workers, workdir).start()
    try:
        LoadClient(server.port, threads=threads, pause=0, duration=1.0).start().wait()  # warm
        load = LoadClient(server.port, threads=threads, pause=0, duration=seconds).start()
        samples = load.wait()
    finally:
        server.stop()
    figures = summarize(samples, seconds)
    figures["pids"] = len({s.pid for s in samples if s.pid})
    return figures


def median_run(figures):
    """The run with the median throughput, with every run's req/s beside it."""
    ordered = sorted(figures, key=lambda f: f["rps"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rps_runs"] = [round(f["rps"]) for f in figures]
    chosen["errors"] = sum(f["errors"] for f in figures)
    return chosen


def reloads_under_load(strategy, workdir, reloads, threads):
    server = Server("pyboss", 2, workdir).start(strategy)
    durations, failed = [], []
    try:
        load = LoadClient(server.port, threads=threads, pause=0.005).start()
        began = time.monotonic()
        for _ in range(reloads):
            start = time.monotonic()
            answer = control.request(server.control, {"command": "reload", "wait": True}, 60)
            durations.append(time.monotonic() - start)
            if not (answer or {}).get("ok"):
                failed.append(answer)
        samples = load.stop()
        elapsed = time.monotonic() - began
    finally:
        server.stop()
    figures = summarize(samples, elapsed)
    durations.sort()
    figures.update(reloads=reloads, reloads_failed=len(failed),
                   reload_p50_ms=durations[len(durations) // 2] * 1000,
                   reload_max_ms=durations[-1] * 1000)
    return figures


def fmt(value, pattern="%.0f"):
    return "-" if value is None else pattern % value


def render(results):
    lines = ["# Workers: one generation, several processes", "",
             "%s; %d CPUs; load average %s before, %s after; %d hash rounds per request."
             % (results["machine"], results["cpus"], results["load_before"],
                results["load_after"], results["hash_rounds"]), "",
             "## 1. CPU-bound app, %d s closed loop, %d client threads, median of %d "
             "interleaved rounds" % (results["seconds"], results["threads"], results["rounds"]),
             "",
             "| server | 1 worker: req/s | 2 workers: req/s | ratio | errors | pids seen "
             "| every round (1 / 2) |",
             "|---|---|---|---|---|---|---|"]
    for name, row in results["throughput"].items():
        one, two = row.get("1"), row.get("2")
        if one is None or two is None:
            lines.append("| %s | skipped: %s | | | | | |" % (name, row.get("skipped")))
            continue
        lines.append("| %s | %.0f | %.0f | **%.2fx** | %d | %d, %d | %s / %s |" % (
            name, one["rps"], two["rps"], two["rps"] / one["rps"],
            one["errors"] + two["errors"], one["pids"], two["pids"],
            ", ".join(map(str, one["rps_runs"])), ", ".join(map(str, two["rps_runs"]))))
    lines += ["", "## 2. pyboss --workers 2: %d reloads one after another under steady load"
              % results["reloads"], "",
              "| strategy | requests | errors | worst latency | p99 | reload p50 | reload max |",
              "|---|---|---|---|---|---|---|"]
    for strategy, row in results["reload"].items():
        lines.append("| %s | %d | %d | %s ms | %s ms | %s ms | %s ms |" % (
            strategy, row["requests"], row["errors"] + row["reloads_failed"],
            fmt(row["max_ms"], "%.1f"), fmt(row["p99_ms"], "%.1f"),
            fmt(row["reload_p50_ms"]), fmt(row["reload_max_ms"])))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a moment of each (smoke test)")
    parser.add_argument("--out", help="where workers.md/json go (default: benchmarks/results, "
                        "or a temporary directory with --quick)")
    args = parser.parse_args(argv)
    seconds, reloads, threads, rounds = (2, 3, 4, 1) if args.quick else (8, 20, 4, 3)
    out = args.out or (tempfile.mkdtemp(prefix="pyboss-bench-") if args.quick else DEFAULT_OUT)
    os.makedirs(out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="pyboss-workers-")
    results = {"machine": "%s %s, Python %s" % (platform.system(), platform.release(),
                                                platform.python_version()),
               "cpus": len(os.sched_getaffinity(0)), "load_before": "%.2f" % os.getloadavg()[0],
               "hash_rounds": int(os.environ.get("BENCH_HASH_ROUNDS", "20000")),
               "seconds": seconds, "threads": threads, "reloads": reloads, "rounds": rounds,
               "throughput": {}, "reload": {}}
    try:
        runnable = []
        for name, requirement in (("pyboss", None), ("gunicorn", "gunicorn>=21"),
                                  ("uvicorn", "uvicorn>=0.30")):
            reason = requirement and install.ensure_python_package(name, requirement)
            if reason:
                results["throughput"][name] = {"skipped": reason}
            else:
                runnable.append(name)
        # Rounds interleave every configuration, so that a machine whose load drifts
        # (other work on the same cores) weighs on all of them alike; medians are kept.
        runs = {(name, n): [] for name in runnable for n in (1, 2)}
        for _ in range(rounds):
            for name, n in runs:
                runs[(name, n)].append(throughput(name, n, workdir, seconds, threads))
        for name in runnable:
            results["throughput"][name] = {str(n): median_run(runs[(name, n)]) for n in (1, 2)}
        for strategy in ("all", "rolling"):
            results["reload"][strategy] = reloads_under_load(strategy, workdir, reloads, 4)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_after"] = "%.2f" % os.getloadavg()[0]
    text = render(results)
    sys.stdout.write(text)
    with open(os.path.join(out, "workers.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "workers.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
