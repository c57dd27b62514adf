"""Scenario 7, "the supervisor dies / is upgraded": what each peer's app loses.

    python -m benchmarks.supervisor_death            # about a minute on 2 cores
    python -m benchmarks.supervisor_death --quick    # the smoke run

The app needs 2 s to become ready (so that restarting it shows). Under steady load
(client threads, a fresh connection per request), one second in, the supervisor:

- pyboss, SIGKILL: killed, then the same `pyboss exec` started again (no systemd here:
  the next pyboss adopts the orphaned generation from NAME.state);
- pyboss, upgrade: `pyboss upgrade`, the in-place re-exec;
- start_server, SIGKILL: killed, then the same start_server started again;
- gunicorn, SIGKILL: the master killed, then gunicorn started again;
- gunicorn, USR2: the documented upgrade (USR2 to the master, the new master's worker
  answers, then TERM to the old master).

For each: failed requests by kind, the worst latency, whether the app that answered
after the event is the one that answered before it (not restarted), and whether a
supervisor runs the app at the end. Prints a Markdown table; --out writes it to a file.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks import procfs
from benchmarks.load import LoadClient, request_once, summarize
from benchmarks.peers import Gunicorn, Pyboss, StartServer
from benchmarks.scenarios import write_config

FULL = {"seconds": 8.0, "event_at": 1.0, "ready_delay": 2.0, "request_timeout": 5.0}
QUICK = {"seconds": 3.0, "event_at": 0.5, "ready_delay": 0.3, "request_timeout": 2.0}


def wait_for(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def sigkill_and_start_again(peer):
    """SIGKILL the supervisor, start the same command again; returns (old pgid, note)."""
    old = peer.process
    old.send_signal(signal.SIGKILL)
    old.wait()
    peer._launch()          # the same command line, port and control socket
    time.sleep(0.2)
    code = peer.process.poll()
    if code is not None:
        with open(peer.log_path, errors="replace") as f:
            last = [l for l in f.read().splitlines() if l.strip()][-1:]
        return old.pid, "restart failed: exit %d%s" % (code, (": " + last[0][:80]) if last else "")
    return old.pid, "started again"


def pyboss_supervises(peer):
    try:
        status = peer.status()
    except Exception:       # noqa: BLE001 - no supervisor answering is the finding
        return False
    return any(g.get("state") == "serving" for g in status.get("generations", []))


def pyboss_upgrade(peer):
    done = subprocess.run(peer.command() + ["upgrade", "--control", peer.control],
                          capture_output=True, text=True, timeout=60)
    return None, (done.stdout or done.stderr).strip().splitlines()[-1][:80]


def gunicorn_usr2(peer):
    """USR2, wait for the new master's worker to answer, then TERM the old master."""
    old_master = peer.process.pid
    old_workers = set(procfs.children(old_master))
    peer.process.send_signal(signal.SIGUSR2)
    new_master = wait_for(lambda: next((p for p in procfs.children(old_master)
                                        if p not in old_workers and procfs.children(p)), None),
                          30)
    if new_master is None:
        return None, "no new master after USR2"
    new_workers = set(procfs.children(new_master))
    answered = wait_for(lambda: request_once(peer.port, 2)[1] in new_workers, 30)
    peer.process.send_signal(signal.SIGTERM)
    peer.process.wait()
    return None, "new master %d%s" % (new_master, "" if answered else " (its worker never answered)")


CASES = [
    ("pyboss", "SIGKILL, exec again", Pyboss, sigkill_and_start_again),
    ("pyboss", "pyboss upgrade", Pyboss, pyboss_upgrade),
    ("start_server", "SIGKILL, start again", StartServer, sigkill_and_start_again),
    ("gunicorn", "SIGKILL master, start again", Gunicorn, sigkill_and_start_again),
    ("gunicorn", "USR2 upgrade", Gunicorn, gunicorn_usr2),
]


def supervised_at_end(peer):
    if isinstance(peer, Pyboss):
        return pyboss_supervises(peer)
    if peer.process.poll() is not None:
        # gunicorn after USR2: the new master, reparented, runs on in the session.
        return any(b"gunicorn" in _cmdline(p) for p in _session(peer))
    return bool(procfs.children(peer.process.pid))


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _session(peer):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == peer.process.pid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def run_case(workdir, settings, name, event, peer_class, action):
    rundir = tempfile.mkdtemp(prefix=name + "-", dir=workdir)
    config = os.path.join(rundir, "app.json")
    write_config(config, module="pyboss.demo", ready_delay=settings["ready_delay"])
    peer = peer_class(rundir, config)
    peer.start()
    first_pid = request_once(peer.port, 5)[1]
    if hasattr(peer, "status"):
        # pyboss: the event hits a generation that serves, past its settle period (a crash
        # while the first generation still settles is adopted too, but starts it anew).
        deadline = time.monotonic() + 60
        while not pyboss_supervises(peer) and time.monotonic() < deadline:
            time.sleep(0.05)
    stray_groups = []
    try:
        load = LoadClient(peer.port, threads=4, pause=0.005, duration=settings["seconds"],
                          timeout=settings["request_timeout"]).start()
        time.sleep(settings["event_at"])
        event_time = load.now()
        old_group, note = action(peer)
        if old_group is not None:
            stray_groups.append(old_group)
        samples = load.wait()
        after = [s for s in samples if s.start > event_time and s.error is None]
        same_app = bool(after) and all(s.pid == first_pid for s in after)
        row = {"peer": name, "event": event, **summarize(samples, settings["seconds"]),
               "same_app": same_app, "supervised": supervised_at_end(peer), "note": note}
    finally:
        peer.stop()
        for group in stray_groups:      # an orphaned app that nobody adopted
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return row


def table(rows):
    lines = ["| peer | event | requests | failed (kinds) | worst ms | p99 ms | same app after | "
             "supervised at end | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kinds = ", ".join("%s %d" % kv for kv in sorted(r["error_kinds"].items()))
        lines.append("| %s | %s | %d | %d%s | %.0f | %.0f | %s | %s | %s |" % (
            r["peer"], r["event"], r["requests"], r["errors"], " (%s)" % kinds if kinds else "",
            r["max_ms"] or 0, r["p99_ms"] or 0, "yes" if r["same_app"] else "no",
            "yes" if r["supervised"] else "no", r["note"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.supervisor_death",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--peers", default="pyboss,start_server,gunicorn")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = QUICK if args.quick else FULL
    wanted = args.peers.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyboss-bench-death-") as workdir:
        for name, event, peer_class, action in CASES:
            if name not in wanted:
                continue
            reason = peer_class.unavailable_reason()
            if reason:
                sys.stderr.write("benchmark: skipping %s: %s\n" % (name, reason))
                continue
            sys.stderr.write("benchmark: %s, %s\n" % (name, event))
            rows.append(run_case(workdir, settings, name, event, peer_class, action))
    text = ("### The supervisor dies / is upgraded (app ready after %gs, event at %gs of %gs)\n\n%s"
            % (settings["ready_delay"], settings["event_at"], settings["seconds"], table(rows)))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
