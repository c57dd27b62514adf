"""Measure what each KillMode loses when pyboss is SIGKILLed under load (not a test).

    sudo .venv/bin/python tests/measure_killmode.py [KILLS] [RUNS] [own]

For KillMode=mixed, control-group and process: the demo app under pyboss in a real
systemd, on a socket unit's socket (or, with "own", on a socket pyboss binds itself
and keeps in the fd store), a load client inside the namespace, pyboss SIGKILLed
KILLS times (systemd restarts it). Prints failed requests by kind, the worst latency
and how many processes the unit has at the end (pyboss and one generation: 2).
The figures behind the KillMode= of units/ and `pyboss units`.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

from supervised_units import LoadInside, sigkill_pyboss_and_await_restart, write_units
from systemd_harness import SystemdNamespace


def measure(kill_mode, kills, own_listener=False):
    port = 8081 if own_listener else 8080
    with tempfile.TemporaryDirectory(prefix="killmode-") as tmp:
        units, _ = write_units(Path(tmp), kill_mode=kill_mode, app_flags="--work-ms 20",
                               listen="http=127.0.0.1:%d" % port if own_listener else None)
        with SystemdNamespace(units) as ns:
            ns.systemctl("start", *(["demo.service"] if own_listener else
                                    ["demo.socket", "demo.service"]))
            with LoadInside(ns, port=port, threads=8) as load:
                for _ in range(kills):
                    time.sleep(1)       # steady load between kills
                    sigkill_pyboss_and_await_restart(ns)
                time.sleep(1)
            left = len(ns.unit_processes("demo.service"))
    result = dict(load.result, kill_mode=kill_mode, kills=kills, processes_after=left,
                  listener="fd store" if own_listener else "socket unit")
    del result["errors"]
    return result


def main():
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    own_listener = sys.argv[3:] == ["own"]
    for _ in range(runs):
        for mode in ("mixed", "control-group", "process"):
            print(json.dumps(measure(mode, kills, own_listener)), flush=True)


if __name__ == "__main__":
    main()
