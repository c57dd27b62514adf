"""pyboss against the supervisors people use today, in one run, side by side.

    pip install -e '.[bench]'
    python -m benchmarks.reload            # everything, about 5 minutes on 2 cores
    python -m benchmarks.reload --quick    # a smoke run of every scenario, seconds
    python -m benchmarks.reload --scenarios 2,5 --peers pyboss,start_server

Prints a Markdown table per scenario, writes it to OUT/latest.md (with the raw figures
in OUT/latest.json) and draws scenario 2 to OUT/scenario2.png.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

from benchmarks import report, scenarios
from benchmarks.peers import PEERS

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a very short run of every scenario (the smoke test)")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6",
                        help="comma-separated scenario numbers (default: all)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="comma-separated, from: %s" % ", ".join(PEERS))
    parser.add_argument("--reloads", type=int, help="reloads in scenario 6 (default 1000)")
    parser.add_argument("--out", default=None,
                        help="directory for latest.md/json and scenario2.png "
                             "(default: benchmarks/results, or a temporary one with --quick)")
    parser.add_argument("--app-module", default="pyboss.demo", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for scenario in args.scenarios:
        if scenario not in report.TITLES:
            parser.error("no scenario %r (there are 1 to 6)" % scenario)
    for peer in args.peers:
        if peer not in PEERS:
            parser.error("no peer %r (choose from %s)" % (peer, ", ".join(PEERS)))
    return args


def available_peers(names):
    usable, skipped = [], {}
    for name in names:
        reason = PEERS[name].unavailable_reason()
        if reason:
            skipped[name] = reason
            sys.stderr.write("benchmark: skipping %s: %s\n" % (name, reason))
        else:
            usable.append(PEERS[name])
    return usable, skipped


def run(args):
    settings = dict(scenarios.QUICK if args.quick else scenarios.FULL)
    if args.reloads is not None:
        settings["s6_reloads"] = args.reloads
        settings["s6_gunicorn_reloads"] = min(args.reloads, settings["s6_gunicorn_reloads"])
    out = args.out or (tempfile.mkdtemp(prefix="pyboss-bench-out-") if args.quick else DEFAULT_OUT)
    peer_classes, skipped = available_peers(args.peers)
    if not peer_classes:
        sys.stderr.write("benchmark: no peer can run here\n")
        return 1
    workdir = tempfile.mkdtemp(prefix="pyboss-bench-")
    ctx = scenarios.Context(workdir, peer_classes, settings, module=args.app_module)
    results = {}
    load_before = report.load_average()
    began = time.monotonic()
    finished = False
    try:
        for key in args.scenarios:
            if key == "5" and "4" in args.scenarios:
                continue  # run together with 4 on the same running peers
            sys.stderr.write("benchmark: scenario %s (%.0f s so far)\n"
                             % (key, time.monotonic() - began))
            if key in ("4", "5"):
                results.update(scenarios.scenarios_4_and_5(
                    ctx, "4" in args.scenarios, "5" in args.scenarios))
            else:
                results[key] = getattr(scenarios, "scenario_" + key)(ctx)
        finished = True
    finally:
        sys.stderr.write("benchmark: %s after %.0f s%s\n" % (
            "done" if finished else "stopped", time.monotonic() - began,
            "" if finished else "; the peers' logs are in " + workdir))
    text = report.markdown(results, settings, report.command_line(), skipped,
                           load_before)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "latest.md"), "w") as f:
        f.write(text + "\n")
    raw = {key: {k: v for k, v in value.items() if k != "traces"} for key, value in results.items()}
    with open(os.path.join(out, "latest.json"), "w") as f:
        json.dump({"settings": settings, "skipped": skipped, "results": raw}, f, indent=1)
    if "2" in results:
        problem = report.plot(results["2"], os.path.join(out, "scenario2.png"))
        if problem:
            sys.stderr.write("benchmark: no picture: %s\n" % problem)
    print(text)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
