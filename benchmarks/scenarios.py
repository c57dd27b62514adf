"""The six scenarios; each runs the peers one after another (4 runs them side by side,
idle) and returns one row per peer."""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import procfs
from benchmarks.load import LoadClient, request_once, summarize
from benchmarks.peers import AppAlone, Gunicorn, Pyboss, ReloadOutcome, StartServer

FULL = {
    "s1_seconds": 15.0, "s1_every": 0.5,
    "s2_seconds": 12.0, "s2_every": 4.0, "s2_ready": 2.0,
    "s3_seconds": 7.0, "s3_answer_timeout": 5.0,
    "s4_seconds": 30.0,
    "s5_seconds": 0.75, "s5_rounds": 8,
    "s6_reloads": 1000,
    # gunicorn takes ~0.2 s per SIGHUP reload: 1000 of them would take 4 minutes alone.
    "s6_gunicorn_reloads": 100,
    "request_timeout": 5.0,
}
QUICK = {
    "s1_seconds": 1.0, "s1_every": 0.5,
    "s2_seconds": 1.5, "s2_every": 1.0, "s2_ready": 0.3,
    "s3_seconds": 1.2, "s3_answer_timeout": 0.5,
    "s4_seconds": 0.5,
    "s5_seconds": 0.3, "s5_rounds": 1,
    "s6_reloads": 5,
    "s6_gunicorn_reloads": 5,
    "request_timeout": 1.0,
    # No settle period: a reload must fit these 1 s windows (the full run keeps the default).
    "pyboss_options": ["--ready-grace", "0"],
}
WARMUP_RELOADS = 10
FIRST_RELOAD_AT = 0.5  # seconds into the load: let it reach steady state first


class Context:
    """Where runs keep their files, which peers take part, the settings in force."""

    def __init__(self, workdir, peer_classes, settings, module="pyboss.demo"):
        self.workdir = workdir
        self.peer_classes = peer_classes
        self.settings = settings
        self.module = module
        self.runs = 0

    def make_peer(self, peer_class, **config):
        self.runs += 1
        rundir = os.path.join(self.workdir, "%02d-%s" % (self.runs, peer_class.name.replace(" ", "-")))
        os.makedirs(rundir)
        config_path = os.path.join(rundir, "app.json")
        write_config(config_path, module=self.module, **config)
        peer = peer_class(rundir, config_path)
        if isinstance(peer, Pyboss) and not peer.options:
            peer.options = list(self.settings.get("pyboss_options", []))
        return peer


def write_config(path, **config):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(config, f)
    os.replace(temporary, path)


def update_config(peer, **changes):
    with open(peer.config_path) as f:
        config = json.load(f)
    config.update(changes)
    write_config(peer.config_path, **config)


@contextlib.contextmanager
def running(peer):
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def supervisor_figures(peer, ticks_before):
    pid = peer.supervisor_pid
    if pid is None:
        return {"rss_kib": None, "cpu_ticks": None}
    ticks = procfs.cpu_ticks(pid)
    return {"rss_kib": procfs.rss_kib(pid),
            "cpu_ticks": None if ticks is None or ticks_before is None else ticks - ticks_before}


def reload_figures(outcomes):
    done = [o.seconds * 1000 for o in outcomes if o.ok]
    return {"reloads": len(outcomes), "reloads_ok": len(done),
            "reload_p50_ms": statistics.median(done) if done else None,
            "reload_max_ms": max(done) if done else None,
            "reload_failures": sorted({o.message for o in outcomes if not o.ok})}


def reloads_under_load(ctx, peer_class, seconds, every, ready_delay):
    """Steady load for `seconds`; a reload every `every` seconds, each one awaited."""
    peer = ctx.make_peer(peer_class, ready_delay=ready_delay)
    with running(peer):
        ticks_before = procfs.cpu_ticks(peer.supervisor_pid) if peer.supervisor_pid else None
        load = LoadClient(peer.port, threads=4, pause=0.005, duration=seconds,
                          timeout=ctx.settings["request_timeout"]).start()
        outcomes, accounts = [], []
        next_at = FIRST_RELOAD_AT
        # A reload started must finish inside the load window to be measured under load.
        while peer.supports_reload and next_at + ready_delay + 0.3 < seconds:
            delay = next_at - load.now()
            if delay > 0:
                time.sleep(delay)
            outcomes.append(peer.reload(load.now, timeout=seconds))
            if isinstance(peer, Pyboss):
                accounts.append(pyboss_own_account(peer))
            next_at = max(next_at + every, load.now())
        samples = load.wait()
        row = {"peer": peer.name, **summarize(samples, seconds), **reload_figures(outcomes),
               **supervisor_figures(peer, ticks_before)}
        row.update(own_account_figures(accounts))
    trace = {"samples": [(s.start, s.latency, s.error) for s in samples],
             "reloads": [(o.requested, o.seconds, o.ok) for o in outcomes]}
    return row, trace


def pyboss_own_account(peer):
    """pyboss's figures for the reload that just finished: its duration, and its overhead
    beyond the new generation's own time to READY=1."""
    status = peer.status()
    last = (status.get("reloads") or [None])[-1]
    serving = [g for g in status.get("generations", []) if g.get("state") == "serving"]
    if not last or last.get("outcome") != "ok" or not serving:
        return None
    ready_after = serving[-1].get("ready_after")
    if ready_after is None or last.get("generation") != serving[-1].get("number"):
        return None
    return last["duration"], last["duration"] - ready_after


def own_account_figures(accounts):
    accounts = [a for a in accounts if a]
    if not accounts:
        return {}
    return {"pyboss_reload_p50_ms": statistics.median(d for d, _ in accounts) * 1000,
            "pyboss_overhead_p50_ms": statistics.median(o for _, o in accounts) * 1000,
            "pyboss_overhead_ms": max(o for _, o in accounts) * 1000}


def scenario_1(ctx):
    s = ctx.settings
    rows = []
    for peer_class in ctx.peer_classes:
        row, _ = reloads_under_load(ctx, peer_class, s["s1_seconds"], s["s1_every"], 0)
        rows.append(row)
    return {"rows": rows}


def scenario_2(ctx):
    s = ctx.settings
    rows, traces = [], {}
    for peer_class in ctx.peer_classes:
        if peer_class is AppAlone:
            continue  # nothing to reload; its steady-load latency is in scenario 1
        row, trace = reloads_under_load(ctx, peer_class, s["s2_seconds"], s["s2_every"],
                                        s["s2_ready"])
        rows.append(row)
        traces[row["peer"]] = trace
    return {"rows": rows, "traces": traces, "ready_delay": s["s2_ready"], "every": s["s2_every"]}


def broken_reload(peer, load, answer_timeout):
    """Make the next generation exit 1 at start, ask for a reload, record the answer."""
    update_config(peer, exit_code=1)
    if isinstance(peer, Pyboss):
        return peer.reload(load.now, timeout=answer_timeout + 10)
    if isinstance(peer, StartServer):
        return peer.restart_command(load.now, timeout=answer_timeout)
    # gunicorn has no reload command: the signal is all, and kill says nothing. The
    # shell's kill, as typed: a minimal image has no kill(1) binary (procps).
    requested = load.now()
    done = subprocess.run(["sh", "-c", 'kill -HUP "$1"', "sh", str(peer.supervisor_pid)])
    return ReloadOutcome(requested, 0.0, None, "`kill -HUP` exit %d (no report)" % done.returncode)


def scenario_3(ctx):
    s = ctx.settings
    rows = []
    for peer_class in ctx.peer_classes:
        if peer_class is AppAlone:
            continue
        peer = ctx.make_peer(peer_class)
        with running(peer):
            old_pids = set(peer.app_pids())
            load = LoadClient(peer.port, threads=4, pause=0.005, duration=s["s3_seconds"],
                              timeout=s["request_timeout"]).start()
            time.sleep(FIRST_RELOAD_AT)
            outcome = broken_reload(peer, load, s["s3_answer_timeout"])
            samples = load.wait()
            after = [x for x in samples if x.start > outcome.requested]
            by_old = sum(1 for x in after if x.error is None and x.pid in old_pids)
        rows.append({"peer": peer.name, **summarize(samples, s["s3_seconds"]),
                     "reload_answer": outcome.message,
                     "reload_answer_ms": outcome.seconds * 1000,
                     "after_requests": len(after), "after_errors": sum(1 for x in after if x.error),
                     "after_served_by_old": by_old})
    return {"rows": rows}


def bare_python():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            start_new_session=True)


def scenarios_4_and_5(ctx, want_idle, want_throughput):
    """All peers up side by side: idle cost first (nothing else runs), then throughput
    through each in turn, interleaved over rounds so that drift hits all alike."""
    s = ctx.settings
    peers = [ctx.make_peer(peer_class) for peer_class in ctx.peer_classes]
    reference = bare_python()
    started = []
    result = {}
    try:
        for peer in peers:
            started.append(peer.start())
        if want_idle:
            result["4"] = idle_rows(peers, reference, s["s4_seconds"])
        if want_throughput:
            result["5"] = throughput_rows(peers, s["s5_seconds"], s["s5_rounds"],
                                          s["request_timeout"])
    finally:
        for peer in started:
            peer.stop()
        reference.kill()
        reference.wait()
    return result


def idle_rows(peers, reference, seconds):
    time.sleep(1.0)  # let start-up work (imports, first requests) finish
    watched = {peer.name: peer.supervisor_pid for peer in peers if peer.supervisor_pid}
    watched["bare python3 sleep"] = reference.pid
    before = {name: procfs.cpu_ticks(pid) for name, pid in watched.items()}
    time.sleep(seconds)  # the measurement itself: nothing happens on purpose
    rows = []
    for peer in peers:
        pid = peer.supervisor_pid
        total = sum(procfs.rss_kib(p) or 0 for p in ([pid] if pid else []) + peer.app_pids())
        rows.append({"peer": peer.name,
                     "rss_kib": procfs.rss_kib(pid) if pid else None,
                     "cpu_ticks": procfs.cpu_ticks(pid) - before[peer.name] if pid else None,
                     "fds": procfs.fd_count(pid) if pid else None,
                     "total_rss_kib": total})
    rows.append({"peer": "bare python3 sleep", "rss_kib": procfs.rss_kib(reference.pid),
                 "cpu_ticks": procfs.cpu_ticks(reference.pid) - before["bare python3 sleep"],
                 "fds": procfs.fd_count(reference.pid), "total_rss_kib": None})
    return {"rows": rows, "seconds": seconds}


def split_cpus():
    """Client on some CPUs, server on the rest, so that neither preempts the other and
    the rounds compare the servers rather than the scheduler's mood. None on 1 CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def throughput_rows(peers, seconds, rounds, timeout):
    """Each peer is measured back to back with the app alone, in alternating order, and
    compared with it pair by pair: the machine's other work drifts slower than a pair."""
    client_cpus, server_cpus = split_cpus()
    if server_cpus:
        for peer in peers:
            procfs.pin_tree(peer.supervisor_pid or peer.process.pid, server_cpus)
    baseline = next((peer for peer in peers if isinstance(peer, AppAlone)), None)
    others = [peer for peer in peers if peer is not baseline]
    rates = {peer.name: [] for peer in peers}
    errors = {peer.name: 0 for peer in peers}
    latencies = {peer.name: [] for peer in peers}
    ratios = {peer.name: [] for peer in peers}
    cpu_per_request = {peer.name: [] for peer in peers}

    def measure(peer):
        members = {peer.supervisor_pid or peer.process.pid, *peer.app_pids()}
        ticks_before = sum(procfs.cpu_ticks(pid) or 0 for pid in members)
        samples = LoadClient(peer.port, threads=4, pause=0, duration=seconds,
                             timeout=timeout, cpus=client_cpus).start().wait()
        ticks = sum(procfs.cpu_ticks(pid) or 0 for pid in members) - ticks_before
        figures = summarize(samples, seconds)
        if samples:
            # What the server side (supervisor and app) spent per request: unlike the
            # rate, this hardly moves when other work on the machine takes CPU away.
            cpu_per_request[peer.name].append(ticks / procfs.CLOCK_TICKS * 1e6 / len(samples))
        rates[peer.name].append(figures["rps"])
        errors[peer.name] += figures["errors"]
        latencies[peer.name].append(figures["p99_ms"])
        return figures["rps"]

    for round_number in range(rounds):
        shift = round_number % max(1, len(others))
        for peer in others[shift:] + others[:shift]:
            if baseline is None:
                measure(peer)
                continue
            if round_number % 2:
                rate, alone = measure(peer), measure(baseline)
            else:
                alone, rate = measure(baseline), measure(peer)
            ratios[peer.name].append(rate / alone if alone else None)
    rows = []
    for peer in peers:
        paired = [r for r in ratios[peer.name] if r is not None]
        rows.append({"peer": peer.name, "rps": statistics.median(rates[peer.name]),
                     "measurements": len(rates[peer.name]), "errors": errors[peer.name],
                     "p99_ms": statistics.median(latencies[peer.name]),
                     "ratio": 1.0 if peer is baseline else
                     (statistics.median(paired) if paired else None),
                     "ratio_range": [min(paired), max(paired)] if paired else None,
                     "cpu_us_per_request": statistics.median(cpu_per_request[peer.name])
                     if cpu_per_request[peer.name] else None})
    return {"rows": rows, "seconds": seconds, "rounds": rounds,
            "pinned": None if not server_cpus else {"client": sorted(client_cpus),
                                                    "server": sorted(server_cpus)}}


def wait_for_new_answer(port, old_pids, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        error, pid = request_once(port, 5.0)
        if error is None and pid not in old_pids:
            return True
        time.sleep(0.002)
    return False


def many_reloads(peer, count, load, outcomes):
    for _ in range(count):
        if isinstance(peer, Pyboss):
            outcomes.append(peer.reload_via_socket())
        else:
            old_pids = set(peer.app_pids())
            outcome = peer.reload(load.now)
            # start_server at --interval=0 declares the new worker at once: wait until
            # it answers, or the next reload would kill it before it ever served.
            if outcome.ok and isinstance(peer, StartServer):
                began = time.monotonic()
                outcome.ok = wait_for_new_answer(peer.port, old_pids)
                outcome.seconds += time.monotonic() - began
            outcomes.append(outcome)


def scenario_6(ctx):
    rows = []
    for peer_class in ctx.peer_classes:
        if peer_class is AppAlone:
            continue
        count = ctx.settings["s6_reloads"]
        if peer_class is Gunicorn:
            count = min(count, ctx.settings["s6_gunicorn_reloads"])
        peer = ctx.make_peer(peer_class)
        if isinstance(peer, StartServer):
            peer.interval = 0  # its default 1 s would make this scenario take 17 minutes
        if isinstance(peer, Pyboss):
            peer.options = ["--ready-grace", "0"]    # likewise its default 3 s settle period
        with running(peer):
            pid = peer.supervisor_pid
            began = time.monotonic()
            load = LoadClient(peer.port, threads=2, pause=0.01,
                              timeout=ctx.settings["request_timeout"]).start()
            outcomes = []
            # Measured at the start, after a few reloads (caches warm, status history
            # filling), half way and at the end: growth shows as a rise between the last two.
            checkpoints = sorted({0, min(WARMUP_RELOADS, count), count // 2, count})
            figures = []
            for checkpoint in checkpoints:
                many_reloads(peer, checkpoint - len(outcomes), load, outcomes)
                peer.settle()
                figures.append((checkpoint, procfs.fd_count(pid), procfs.rss_kib(pid)))
            samples = load.stop()
            elapsed = time.monotonic() - began
        rows.append({"peer": peer.name, **summarize(samples, elapsed), **reload_figures(outcomes),
                     "checkpoints": figures, "seconds": elapsed})
    return {"rows": rows}
