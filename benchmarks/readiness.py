"""Readiness scenarios: a broken build that still sends READY=1, and what the settle period
costs.

    python -m benchmarks.readiness [--quick] [--json FILE]

7. A broken build that still sends READY=1: gunicorn -w 2 without --preload (its master
   says READY=1 before the workers import the app) under pyboss with default options, under
   start_server (gunicorn --bind fd://N), and gunicorn's own SIGHUP; and uvicorn (>= 0.51)
   --workers 2 with SIGHUP, which replaces one worker at a time. Under load (fresh
   connection per request), the next build's app raises on import; each peer reloads once.
   Reported: what the reload command said, failed requests, and whether anything still
   answers at the end.
8. The cost of the default settle period: scenarios 1 and 2 for pyboss at the default
   --ready-grace and at 0; reload-complete time, errors and worst latency of each.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

from benchmarks import install
from benchmarks.load import LoadClient, request_once, summarize, wait_until_serving
from benchmarks.peers import Pyboss, child_env, free_port, stop_session
from benchmarks.scenarios import FULL, QUICK, Context, reloads_under_load
from pyboss.supervisor.settings import DEFAULT_READY_GRACE

GOOD = '''import json, os

def app(environ, start_response):
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''
BROKEN = 'raise RuntimeError("this build is broken")\n'
BIN = os.path.dirname(sys.executable)


class BrokenBuildPeer:
    """A server running build.py from its own directory; reload() after the build broke."""
    name = "?"

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, self.name.replace(" ", "-").replace("/", "-"))
        os.makedirs(self.dir)
        self.build = os.path.join(self.dir, "build.py")
        self.write(GOOD)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.process = None

    def write(self, text):
        with open(self.build, "w") as f:
            f.write(text)

    def spawn(self, argv, env=None):
        self.process = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env or child_env(PATH=BIN + os.pathsep
                                                             + os.environ["PATH"]),
                                        start_new_session=True)

    def start(self):
        self.launch()
        wait_until_serving(self.port, timeout=60)

    def stop(self):
        stop_session(self.process, 30)
        self.log.close()

    def run_command(self, argv, timeout):
        began = time.monotonic()
        try:
            done = subprocess.run(argv, cwd=self.dir, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "`%s` still waiting after %g s" % (" ".join(argv[:2]), timeout), timeout
        lines = done.stdout.decode(errors="replace").strip().splitlines()
        return ("exit %d%s" % (done.returncode, ": " + lines[-1] if lines else ""),
                time.monotonic() - began)

    def signal_reload(self, signum):
        self.process.send_signal(signum)
        return "kill -%s: exit 0 (a signal says nothing about the outcome)" % \
            signal.Signals(signum).name[3:], 0.0


class PybossGunicorn(BrokenBuildPeer):
    name = "pyboss"

    def launch(self):
        self.control = os.path.join(self.dir, "pyboss.sock")
        self.spawn(Pyboss.command() + ["exec", "--control", self.control, "--listen",
                                       "127.0.0.1:%d" % self.port, "--", "gunicorn", "-w", "2",
                                       "build:app"])

    def reload(self, timeout):
        return self.run_command(Pyboss.command() + ["reload", "--wait", "--control",
                                                    self.control], timeout)


class StartServerGunicorn(BrokenBuildPeer):
    name = "start_server"

    def launch(self):
        with open(os.path.join(self.dir, "run"), "w") as f:
            f.write('#!/bin/sh\nexec gunicorn -w 2 --bind "fd://${SERVER_STARTER_PORT##*=}" '
                    'build:app\n')
        os.chmod(os.path.join(self.dir, "run"), 0o755)
        self.files = ["--pid-file=" + os.path.join(self.dir, "ss.pid"),
                      "--status-file=" + os.path.join(self.dir, "ss.status")]
        self.spawn(["start_server", "--port=127.0.0.1:%d" % self.port] + self.files
                   + ["--", "./run"])

    def start(self):
        super().start()
        deadline = time.monotonic() + 30      # declared started after --interval
        while not os.path.exists(os.path.join(self.dir, "ss.status")) \
                and time.monotonic() < deadline:
            time.sleep(0.01)

    def reload(self, timeout):
        return self.run_command(["start_server", "--restart"] + self.files, timeout)


class GunicornHup(BrokenBuildPeer):
    name = "gunicorn HUP"

    def launch(self):
        self.spawn(["gunicorn", "-w", "2", "--bind", "127.0.0.1:%d" % self.port, "build:app"])

    def reload(self, timeout):
        return self.signal_reload(signal.SIGHUP)


class UvicornHup(BrokenBuildPeer):
    name = "uvicorn --workers 2 HUP"

    def launch(self):
        self.spawn(["uvicorn", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
                    "2", "build:asgi"])

    def reload(self, timeout):
        return self.signal_reload(signal.SIGHUP)


def uvicorn_version():
    try:
        from importlib.metadata import version
        return version("uvicorn")
    except Exception:     # noqa: BLE001 - not installed
        return None


def broken_build(workdir, seconds, timeout):
    rows = []
    for peer_class in (PybossGunicorn, StartServerGunicorn, GunicornHup, UvicornHup):
        peer = peer_class(workdir)
        peer.start()
        try:
            load = LoadClient(peer.port, threads=4, pause=0.005, timeout=timeout).start()
            time.sleep(0.5)
            peer.write(BROKEN)
            began = load.now()
            said, took = peer.reload(timeout=seconds)
            # Watch the traffic for `seconds` after the reload command returned.
            time.sleep(seconds)
            elapsed = load.now() - began
            samples = load.stop()
            error, _ = request_once(peer.port, timeout)
            rows.append({"peer": peer.name, "reload said": said, "reload seconds": round(took, 3),
                         **summarize(samples, elapsed),
                         "serving at the end": error is None})
        finally:
            peer.stop()
    return rows


class PybossNoGrace(Pyboss):
    name = "pyboss --ready-grace 0"
    options = ["--ready-grace", "0"]


def settle_cost(workdir, settings):
    ctx = Context(workdir, [Pyboss, PybossNoGrace], settings)
    rows = []
    for label, seconds, every, ready in (("1", settings["s1_seconds"], settings["s1_every"], 0),
                                         ("2", settings["s2_seconds"], settings["s2_every"],
                                          settings["s2_ready"])):
        for peer_class in (Pyboss, PybossNoGrace):
            row, trace = reloads_under_load(ctx, peer_class, seconds, every, ready)
            durations = sorted(d for _, d, ok in trace["reloads"] if ok)
            rows.append({"scenario": label, "peer": row["peer"], "reloads": len(durations),
                         "reload complete p50 s": round(durations[len(durations) // 2], 3)
                         if durations else None,
                         "errors": row["errors"], "max_ms": row["max_ms"]})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readiness",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    for reason in (install.ensure_start_server(),
                   install.ensure_python_package("gunicorn", "gunicorn>=21"),
                   install.ensure_python_package("uvicorn", "uvicorn>=0.51")):
        if reason:
            sys.exit("benchmark: %s" % reason)
    import tempfile
    workdir = args.workdir or tempfile.mkdtemp(prefix="pyboss-readiness-")
    settings = QUICK if args.quick else FULL
    seconds = 4.0 if args.quick else 10.0
    result = {"uvicorn": uvicorn_version(), "default_ready_grace": DEFAULT_READY_GRACE,
              "broken_build": broken_build(os.path.join(workdir, "7"), seconds,
                                           settings["request_timeout"]),
              "settle_cost": settle_cost(os.path.join(workdir, "8"), settings)}
    print("7. a broken build that still sends READY=1 (gunicorn -w 2, no --preload; "
          "uvicorn %s --workers 2)" % result["uvicorn"])
    print("| peer | what the reload command says | failed requests | serving at the end |")
    print("|---|---|---|---|")
    for row in result["broken_build"]:
        kinds = ", ".join("%d %s" % (n, k) for k, n in sorted(row["error_kinds"].items()))
        print("| %s | %s | %d of %d%s | %s |" % (row["peer"], row["reload said"], row["errors"],
                                                row["requests"], " (%s)" % kinds if kinds else "",
                                                "yes" if row["serving at the end"] else "**no**"))
    print("\n8. the default settle period (--ready-grace %g) in scenarios 1 and 2"
          % DEFAULT_READY_GRACE)
    print("| scenario | peer | reloads | reload complete p50 | errors | worst latency |")
    print("|---|---|---|---|---|---|")
    for row in result["settle_cost"]:
        print("| %s | %s | %d | %s s | %d | %.1f ms |" % (
            row["scenario"], row["peer"], row["reloads"], row["reload complete p50 s"],
            row["errors"], row["max_ms"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
