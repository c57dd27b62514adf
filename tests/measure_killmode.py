"""Measure what each KillMode loses when pyboss is SIGKILLed under load (not a test).

    sudo .venv/bin/python tests/measure_killmode.py [KILLS] [RUNS]

For KillMode=mixed, control-group and process: a socket-activated demo app under
pyboss in a real systemd, a load client inside the namespace, pyboss SIGKILLed KILLS
times (systemd restarts it). Prints failed requests by kind and the worst latency.
The figures behind the KillMode= of units/ and `pyboss units`.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

from supervised_units import LoadInside, sigkill_pyboss_and_await_restart, write_units
from systemd_harness import SystemdNamespace


def measure(kill_mode, kills):
    with tempfile.TemporaryDirectory(prefix="killmode-") as tmp:
        units, _ = write_units(Path(tmp), kill_mode=kill_mode, app_flags="--work-ms 20")
        with SystemdNamespace(units) as ns:
            ns.systemctl("start", "demo.socket", "demo.service")
            with LoadInside(ns, threads=8) as load:
                for _ in range(kills):
                    time.sleep(1)       # steady load between kills
                    sigkill_pyboss_and_await_restart(ns)
                time.sleep(1)
            left = len(ns.unit_processes("demo.service"))
    result = dict(load.result, kill_mode=kill_mode, kills=kills, processes_after=left)
    del result["errors"]
    return result


def main():
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    for _ in range(runs):
        for mode in ("mixed", "control-group", "process"):
            print(json.dumps(measure(mode, kills)), flush=True)


if __name__ == "__main__":
    main()
