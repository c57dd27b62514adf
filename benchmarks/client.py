"""How long the client commands take, whole process, against a bare interpreter's start.

    python -m benchmarks.client             # median of 10 runs each
    python -m benchmarks.client --runs 3    # the smoke test's run

`systemctl reload` pays for `pyboss reload --wait` (ExecReload=) every time, so the client
should cost about what starting Python costs. Each figure is the wall time from spawning
the command to its exit, with the answer it waits for included: `reload` (no --wait)
returns once pyboss has the request; `reload --wait` once an app with --ready-after 0 and
--ready-grace 0 (no settle period) is replaced; `stop` once pyboss has exited;
`start-server --restart` once the new generation runs alone. Beside them, what the peers
offer: `kill -HUP` to start_server (its reload, kill(1) if installed, else the shell's
builtin), and gunicorn's own client, `gunicornc`, where the installed gunicorn has it.
The goal is pyboss's client within 2x the bare start.

Prints a Markdown table and writes it to OUT/client.md, with the raw figures in
OUT/client.json.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.install import ensure_start_server
from benchmarks.peers import REPO, child_env
from pyboss.supervisor import control

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GOAL = 2.0


def pyboss_command():
    """The console script and the interpreter its first line names (the baseline)."""
    script = os.path.join(os.path.dirname(sys.executable), "pyboss")
    with open(script) as f:
        interpreter = f.readline()[2:].strip()
    return [script], interpreter


def wall_ms(argv, env=None, before=None):
    """Milliseconds from spawn to exit; fails loudly when the command does."""
    if before:
        before()
    began = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                          cwd=REPO)
    took = (time.perf_counter() - began) * 1000
    if done.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), done.returncode,
                                                done.stderr.decode(errors="replace").strip()))
    return took


class Timings:
    """Each command's runs alternate with runs of the bare interpreter, so that a busy
    moment of a shared machine weighs on both sides of the ratio alike."""

    def __init__(self, interpreter):
        self.baseline = [interpreter, "-c", "pass"]
        self.rows = []

    def add(self, label, peer, times, bases, note=""):
        # The ratio of the figures as printed, so that the table adds up.
        ms, base = round(statistics.median(times), 1), round(statistics.median(bases), 1)
        self.rows.append({"command": label, "peer": peer, "median_ms": ms,
                          "bare_start_ms": base, "ratio": round(ms / base, 2), "note": note})

    def paired(self, argv, **kw):
        """(ms of argv, ms of the bare start right after it)."""
        return wall_ms(argv, **kw), wall_ms(self.baseline)

    def measure(self, runs, label, argv, peer="pyboss", note="", **kw):
        pairs = [self.paired(argv, **kw) for _ in range(runs)]
        self.add(label, peer, [p[0] for p in pairs], [p[1] for p in pairs], note)


def await_ok(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for %s" % what)
        time.sleep(0.01)


class Background:
    """A long-running process for the clients to talk to; ended by stop()."""

    def __init__(self, argv, workdir, env=None):
        self.log = open(os.path.join(workdir, "%s.log" % os.path.basename(argv[0])), "ab")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=REPO,
                                        env=env or child_env(), start_new_session=True)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_pyboss(pyboss, workdir, name):
    sock = os.path.join(workdir, name + ".sock")
    # No settle period (--ready-grace 0): the figure is what the client costs, not the
    # 3 s that pyboss waits by default before it believes a new generation.
    boss = Background(pyboss + ["exec", "--quiet", "--control", sock, "--ready-after", "0",
                                "--ready-grace", "0", "--", "sleep", "3600"], workdir)
    await_ok(lambda: _serving(sock), "pyboss to serve")
    return boss, sock


def _settled(sock):
    """Serving, with the previous generations drained and reaped: no work left over."""
    try:
        status = control.request(sock, {"command": "status"}, timeout=5) or {}
    except control.ControlError:
        return False
    return status.get("state") == "serving" and len(status.get("generations", [])) == 1


def _serving(sock):
    try:
        return (control.request(sock, {"command": "status"}, timeout=5) or {}).get(
            "state") == "serving"
    except control.ControlError:
        return False


def _children(pid):
    """The pids of pid's children, as a frozenset."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return frozenset(f.read().split())


def _connectable(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False


def start_starter(argv, workdir, name):
    """A start_server (pyboss's or the Perl one) with one generation in its status file."""
    pid_file = os.path.join(workdir, name + ".pid")
    status_file = os.path.join(workdir, name + ".status")
    server = Background(argv + ["--port", "127.0.0.1:0", "--interval", "0",
                                "--pid-file", pid_file, "--status-file", status_file,
                                "--", "sleep", "3600"], workdir)
    await_ok(lambda: os.path.exists(status_file) and open(status_file).read().strip(),
             "%s's first generation" % name)
    return server, pid_file, status_file


def measure(runs, workdir):
    pyboss, interpreter = pyboss_command()
    timings = Timings(interpreter)

    boss, sock = start_pyboss(pyboss, workdir, "client")
    try:
        timings.measure(runs, "pyboss status", pyboss + ["status", "--control", sock])
        timings.measure(runs, "pyboss reload", pyboss + ["reload", "--control", sock],
                        before=lambda: await_ok(lambda: _settled(sock), "the last reload"),
                        note="returns once pyboss has the request")
        timings.measure(runs, "pyboss reload --wait",
                        pyboss + ["reload", "--wait", "--control", sock],
                        note="returns once the new generation serves "
                             "(--ready-after 0 --ready-grace 0)")
    finally:
        boss.stop()

    stops = []
    for number in range(runs):
        boss, sock = start_pyboss(pyboss, workdir, "stop%d" % number)
        try:
            stops.append(timings.paired(pyboss + ["stop", "--control", sock]))
        finally:
            boss.stop()
    timings.add("pyboss stop", "pyboss", [p[0] for p in stops], [p[1] for p in stops],
                note="returns once pyboss has exited")

    server, pid_file, status_file = start_starter(pyboss + ["start-server"], workdir, "starter")
    try:
        timings.measure(runs, "pyboss start-server --restart",
                        pyboss + ["start-server", "--restart", "--pid-file", pid_file,
                                  "--status-file", status_file],
                        note="returns once the new generation runs alone (--interval 0)")
    finally:
        server.stop()
    stops = []
    for number in range(runs):
        server, pid_file, _ = start_starter(pyboss + ["start-server"], workdir, "ss%d" % number)
        try:
            stops.append(timings.paired(pyboss + ["start-server", "--stop", "--pid-file",
                                                  pid_file]))
        finally:
            server.stop()
    timings.add("pyboss start-server --stop", "pyboss", [p[0] for p in stops],
                [p[1] for p in stops], note="returns once start-server has exited")

    skipped = {}
    reason = ensure_start_server()
    if reason:
        skipped["kill -HUP (start_server)"] = reason
    else:
        server, _, _ = start_starter(["start_server"], workdir, "perl")
        try:
            pid = str(server.process.pid)
            if shutil.which("kill"):
                argv, how = ["kill", "-HUP", pid], "kill(1) from procps"
            else:
                argv, how = ["sh", "-c", 'kill -HUP "$1"', "sh", pid], "sh's builtin kill"
            timings.measure(runs, "kill -HUP", argv, peer="start_server",
                            note="%s; says nothing of how the restart went" % how)
        finally:
            server.stop()

    gunicornc = os.path.join(os.path.dirname(sys.executable), "gunicornc")
    if not os.access(gunicornc, os.X_OK):
        skipped["gunicornc"] = "the installed gunicorn has no gunicornc (gunicorn >= 24)"
    else:
        ctl = os.path.join(workdir, "gunicorn.ctl")
        app = Background([sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0",
                          "--workers", "1", "--control-socket", ctl, "--chdir", REPO,
                          "benchmarks.wsgi_app:application"], workdir)
        try:
            await_ok(lambda: _connectable(ctl), "gunicorn's control socket")
            timings.measure(runs, 'gunicornc -c "show workers"',
                            [gunicornc, "-s", ctl, "-c", "show workers"], peer="gunicorn",
                            note="like pyboss status")
            # A reload makes gunicorn's control socket anew, a moment after gunicornc
            # returns: before the next run, wait until the reload is done (its new worker
            # runs) and the socket is there again.
            seen = {"workers": None}

            def reloaded():
                await_ok(lambda: _connectable(ctl) and _children(app.process.pid)
                         and _children(app.process.pid) != seen["workers"],
                         "gunicorn's reload to finish")
                seen["workers"] = _children(app.process.pid)
            timings.measure(runs, 'gunicornc -c "reload"', [gunicornc, "-s", ctl, "-c", "reload"],
                            peer="gunicorn", note="HUPs the arbiter; returns at once",
                            before=reloaded)
        finally:
            app.stop()
    return {"runs": runs, "goal": GOAL, "bare_start": " ".join(timings.baseline),
            "rows": timings.rows, "skipped": skipped}


def markdown(results):
    lines = ["## Client commands: wall time, median of %d runs" % results["runs"], "",
             "Bare start: `%s`, run right after each run of the command. Load average "
             "before and after: %.2f, %.2f." % (results["bare_start"], *results["load_average"]),
             "", "| command | peer | median | bare start | x bare start | |",
             "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        verdict = ""
        if r["peer"] == "pyboss":
            verdict = "within %gx" % results["goal"] if r["ratio"] <= results["goal"] \
                else "**over %gx**" % results["goal"]
        lines.append("| `%s` | %s | %.1f ms | %.1f ms | %.2f | %s%s |" % (
            r["command"], r["peer"], r["median_ms"], r["bare_start_ms"], r["ratio"], verdict,
            ("; " if verdict and r["note"] else "") + r["note"]))
    for what, reason in results["skipped"].items():
        lines.append("")
        lines.append("Skipped %s: %s." % (what, reason))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (default 10)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="directory for client.md and client.json (default: "
                             "benchmarks/results)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        parser.error("--runs %d: give a number from 1 to 1000" % args.runs)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pyboss-bench-client-") as workdir:
        results = measure(args.runs, workdir)
    # A shared machine's load makes every figure noisier; the ratios less so.
    results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    text = markdown(results)
    sys.stdout.write(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "client.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "client.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
