"""The results as Markdown tables and the scenario 2 picture."""
import os
import platform
import subprocess
import sys

TITLES = {
    "1": "Scenario 1: steady load, a reload every {s1_every:g} s for {s1_seconds:g} s",
    "2": "Scenario 2: app needs {s2_ready:g} s to become ready, reload every {s2_every:g} s "
         "under load ({s2_seconds:g} s)",
    "3": "Scenario 3: a broken new build (the next generation exits 1 at start)",
    "4": "Scenario 4: idle for {s4_seconds:g} s, no traffic",
    "5": "Scenario 5: throughput, closed loop, 4 client threads; {s5_rounds} rounds, "
         "each peer {s5_seconds:g} s right beside {s5_seconds:g} s of the app alone",
    "6": "Scenario 6: {s6_reloads} consecutive reloads under light load "
         "(gunicorn: {s6_gunicorn_reloads})",
}


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return "%s, %d cores (%d usable), %.0f GiB RAM, Linux %s, Python %s" % (
        model, os.cpu_count(), len(os.sched_getaffinity(0)), memory, platform.release(),
        platform.python_version())


def versions():
    found = []
    try:
        import gunicorn
        found.append("gunicorn %s" % gunicorn.__version__)
    except ImportError:
        pass
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libserver-starter-perl"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if out.returncode == 0:
            found.append("start_server (Server::Starter) %s" % out.stdout.decode())
    except OSError:
        pass
    return ", ".join(found)


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, float):
        return "%.*f" % (digits, value)
    return str(value)


def mib(kib, digits=1):
    return "–" if kib is None else "%.*f" % (digits, kib / 1024.0)


def errors(row):
    if not row["errors"]:
        return "0"
    kinds = ", ".join("%d %s" % (n, kind) for kind, n in sorted(row["error_kinds"].items()))
    return "**%d** (%s)" % (row["errors"], kinds)


def table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def load_reload_table(result):
    header = ["peer", "requests", "errors", "p50 ms", "p99 ms", "max ms", "reloads ok",
              "reload complete p50 / max ms", "supervisor RSS MiB", "supervisor CPU ticks"]
    lines = []
    for r in result["rows"]:
        reloads = "%d/%d" % (r["reloads_ok"], r["reloads"]) if r["reloads"] else "– (no reload)"
        lines.append([r["peer"], str(r["requests"]), errors(r), fmt(r["p50_ms"]),
                      fmt(r["p99_ms"]), fmt(r["max_ms"]), reloads,
                      "%s / %s" % (fmt(r["reload_p50_ms"], 0), fmt(r["reload_max_ms"], 0)),
                      mib(r["rss_kib"]), fmt(r["cpu_ticks"])])
    out = table(header, lines)
    for r in result["rows"]:
        if r.get("pyboss_overhead_ms") is not None:
            out.append("")
            out.append("pyboss's own account (`status --json`): reload request to new "
                       "generation serving p50 %s ms, of which beyond the app's own time to "
                       "READY=1: p50 %s ms, worst %s ms. The table's column is the wall time "
                       "of `pyboss reload --wait`, which also pays for starting the CLI."
                       % (fmt(r["pyboss_reload_p50_ms"], 0), fmt(r["pyboss_overhead_p50_ms"]),
                          fmt(r["pyboss_overhead_ms"])))
        for failure in r.get("reload_failures", []):
            out.append("")
            out.append("%s reload failure: %s" % (r["peer"], failure))
    return out


def broken_table(result):
    header = ["peer", "requests", "errors", "max ms", "what the reload command said",
              "answer after ms", "requests after the reload", "of them served by the old generation"]
    lines = [[r["peer"], str(r["requests"]), errors(r), fmt(r["max_ms"]), r["reload_answer"],
              fmt(r["reload_answer_ms"], 0), str(r["after_requests"]),
              str(r["after_served_by_old"])] for r in result["rows"]]
    return table(header, lines)


def idle_table(result):
    bare = next(r for r in result["rows"] if r["peer"] == "bare python3 sleep")
    header = ["peer", "supervisor RSS MiB", "vs bare python3 MiB", "supervisor CPU ticks",
              "supervisor fds", "supervisor + app RSS MiB"]
    lines = []
    for r in result["rows"]:
        delta = None if r["rss_kib"] is None else r["rss_kib"] - bare["rss_kib"]
        lines.append([r["peer"], mib(r["rss_kib"]),
                      "–" if delta is None or r is bare else "%+.1f" % (delta / 1024.0),
                      fmt(r["cpu_ticks"]), fmt(r["fds"]), mib(r["total_rss_kib"])])
    return table(header, lines)


def throughput_table(result):
    header = ["peer", "requests/s (median)", "vs app alone (median of pairs)",
              "pairs' range", "server CPU µs per request", "errors", "p99 ms"]
    lines = []
    for r in result["rows"]:
        spread = "–" if not r["ratio_range"] else "%.3f – %.3f" % tuple(r["ratio_range"])
        lines.append([r["peer"], fmt(r["rps"], 0), fmt(r["ratio"], 3), spread,
                      fmt(r["cpu_us_per_request"], 0), str(r["errors"]), fmt(r["p99_ms"])])
    return table(header, lines)


def many_reloads_table(result):
    header = ["peer", "reloads ok", "requests", "errors", "max ms", "reload p50 ms",
              "supervisor fds after N reloads", "supervisor RSS MiB after N reloads", "took s"]
    lines = []
    for r in result["rows"]:
        fds = ", ".join("%d: %s" % (n, fd) for n, fd, _ in r["checkpoints"])
        rss = ", ".join("%d: %s" % (n, mib(kib, 2)) for n, _, kib in r["checkpoints"])
        lines.append([r["peer"], "%d/%d" % (r["reloads_ok"], r["reloads"]), str(r["requests"]),
                      errors(r), fmt(r["max_ms"]), fmt(r["reload_p50_ms"]), fds, rss,
                      fmt(r["seconds"], 0)])
    return table(header, lines)


RENDERERS = {"1": load_reload_table, "2": load_reload_table, "3": broken_table,
             "4": idle_table, "5": throughput_table, "6": many_reloads_table}

NOTES = """\
How to read this:
- Every request opens a fresh connection to 127.0.0.1; refused, reset, timed out (5 s)
  and garbled replies are errors. "max ms" includes failed requests.
- "reload complete" is when the new generation serves and the old one has been signalled:
  pyboss: `pyboss reload --wait` returned 0 (wall time, including the CLI's own start);
  start_server: its status file lists the new generation (it writes it just before it
  sends SIGTERM to the old one, after `--interval`, default 1 s); gunicorn: the first
  reply from a new worker after SIGHUP (it signals the old worker as soon as it forks).
- Supervisor figures are the supervisor process only (pyboss, the start_server perl
  process, the gunicorn arbiter), from /proc: VmRSS, utime+stime ticks
  (%d per second), /proc/PID/fd.
- The same stdlib app (`python -m pyboss.demo`) runs under pyboss, start_server and alone;
  gunicorn runs the same reply as a WSGI app (1 gthread worker, 4 threads).
- Scenario 5 pins the load client's threads to half of the CPUs and every peer's
  processes to the other half, so that the rounds compare servers, not scheduling luck.
  "server CPU per request" is the utime+stime of the supervisor and its app processes
  over the requests served: it barely depends on what else the machine is doing.
- Scenario 6: pyboss reloads through its control socket (the request `pyboss reload --wait`
  sends); start_server runs with `--interval=0` and each reload waits for the new worker's
  first reply (at the default 1 s this scenario would take 17 minutes); gunicorn does
  fewer reloads, as each SIGHUP reload takes it about 0.2 s.
"""


def markdown(results, settings, command, skipped, load_before):
    out = ["# pyboss reload benchmark", "",
           "Machine: %s. Load average before the run %s, after it %s."
           % (machine(), load_before, load_average()), "",
           "Peers: %s." % versions(), "",
           "Reproduce: `%s`" % command, ""]
    for name, reason in skipped.items():
        out += ["Skipped %s: %s" % (name, reason), ""]
    for key in sorted(results):
        out += ["## " + TITLES[key].format(**settings), ""]
        out += RENDERERS[key](results[key])
        out.append("")
    out.append(NOTES % os.sysconf("SC_CLK_TCK"))
    return "\n".join(out)


PEER_COLOURS = {"pyboss": "#d62728", "start_server": "#1f77b4", "gunicorn": "#2ca02c",
                "app alone": "#7f7f7f"}
BIN = 0.05  # seconds: each point is the worst request started in its 50 ms


def worst_per_bin(samples):
    """(bin start, worst latency ms) for bins that saw requests; None marks a gap."""
    worst = {}
    for start, latency, _ in samples:
        key = int(start / BIN)
        worst[key] = max(worst.get(key, 0.0), latency * 1000)
    xs, ys, previous = [], [], None
    for key in sorted(worst):
        if previous is not None and key != previous + 1:
            xs.append(None)
            ys.append(None)
        xs.append(key * BIN)
        ys.append(worst[key])
        previous = key
    return xs, ys


def plot(result, path):
    """Latency over time in scenario 2, one line per peer, reload requests marked."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install 'pyboss[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5), dpi=100)
    # pyboss last, so that it is drawn on top of the others.
    order = sorted(result["traces"], key=lambda peer: (peer == "pyboss", peer))
    for peer in order:
        trace = result["traces"][peer]
        colour = PEER_COLOURS.get(peer, "black")
        xs, ys = worst_per_bin(trace["samples"])
        axes.plot([float("nan") if x is None else x for x in xs],
                  [float("nan") if y is None else y for y in ys], color=colour,
                  linewidth=1.6 if peer == "pyboss" else 1.0, label=peer)
        failed = [(t, lat * 1000) for t, lat, err in trace["samples"] if err is not None]
        if failed:
            axes.scatter([t for t, _ in failed], [ms for _, ms in failed], color=colour,
                         marker="x", label="%s: failed requests" % peer)
        for requested, _, _ in trace["reloads"]:
            axes.axvline(requested, color=colour, linestyle="--", linewidth=0.8, alpha=0.8)
    axes.set_yscale("log")
    axes.set_xlabel("seconds since the load started (dashed lines: reload requested)")
    axes.set_ylabel("worst request latency per 50 ms, ms (log scale)")
    axes.set_title("App that needs %g s to become ready, reloaded every %g s under load"
                   % (result["ready_delay"], result.get("every", 0)))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return None


def command_line():
    return " ".join(["python -m benchmarks.reload"] + sys.argv[1:])
