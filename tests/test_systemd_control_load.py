"""The control socket under a real systemd's default fd limit, with thousands of idle
clients: pyboss keeps answering and reloading, and no request fails."""
import json
import time
from pathlib import Path

from pyboss_testing import TIMEOUT
from supervised_units import PYTHON, LoadInside, curl, main_pid, write_units

IDLE_CLIENTS = Path(__file__).resolve().parent / "ns_idle_clients.py"
CONTROL = "/run/pyboss/demo/demo.sock"


def nofile(ns, pid):
    limits = ns.run(["cat", "/proc/%d/limits" % pid]).stdout
    line = [l for l in limits.splitlines() if l.startswith("Max open files")][0]
    return tuple(int(v) for v in line.split()[3:5])


def test_two_thousand_idle_control_connections_at_limit_nofile_1024(systemd_ns, tmp_path):
    units, _ = write_units(tmp_path, app_flags="--work-ms 5",
                           service_extra="LimitNOFILE=1024\n")
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    pid = main_pid(ns)
    assert nofile(ns, pid) == (1024, 1024)     # no headroom to raise into
    idle = ns.start_background([PYTHON, IDLE_CLIENTS, CONTROL, "2000"], stdin=-1, text=True)
    assert idle.stdout.readline().strip() == "held 2000", idle.stderr.read()
    with LoadInside(ns) as load:
        status = ns.run([PYTHON, "-m", "pyboss", "status", "--json", "--control", CONTROL])
        assert json.loads(status.stdout)["state"] == "serving"
        started = time.monotonic()
        ns.run(["timeout", str(TIMEOUT), "systemctl", "reload", "demo.service"])
        took = time.monotonic() - started
    out, err = idle.communicate(input="", timeout=TIMEOUT)
    assert idle.returncode == 0, err
    assert load.failures == 0, load.result
    assert curl(ns)["generation"] == 2
    assert main_pid(ns) == pid            # the same pyboss: it never crashed
    journal = ns.journal("demo.service")
    assert "unexpected error" not in journal and "Traceback" not in journal
    print("2,000 idle control clients at LimitNOFILE=1024: %s; reload took %.3fs under load, "
          "%d requests, 0 failed" % (out.strip(), took, load.result["requests"]))
