"""pyboss as a systemd service inside a SystemdNamespace: units, load, and probes.

Shared by tests/test_systemd_supervisor.py and tests/measure_killmode.py.
"""
import json
import textwrap
from pathlib import Path

from pyboss_testing import TIMEOUT, wait_until, write_app
from systemd_harness import python_executable

PYTHON = python_executable()
LOAD_CLIENT = Path(__file__).resolve().parent / "ns_load.py"
HTTP_PORT = 8080


def write_units(tmp_path, listen=None, kill_mode="control-group", service_type="notify",
                pyboss_options="--ready-timeout 20", service_extra="", app_flags="",
                app=None):
    """demo.service (and demo.socket unless listen= is given) in tmp_path/units.

    listen: a --listen value for pyboss to bind itself (no socket unit then).
    app_flags: the demo app's flags; rewrite the returned flags file for the next build.
    """
    launcher, flags = write_app(str(tmp_path), app_flags)
    units = tmp_path / "units"
    units.mkdir(exist_ok=True)
    listens = " ".join("--listen " + spec for spec in ([listen] if isinstance(listen, str)
                                                        else listen or []))
    if not listen:
        (units / "demo.socket").write_text(textwrap.dedent("""\
            [Socket]
            ListenStream=127.0.0.1:%d
            FileDescriptorName=http
            Backlog=4096
            TriggerLimitIntervalSec=10s
            TriggerLimitBurst=50
            """ % HTTP_PORT))
    reload_line = "ExecReload=%s -m pyboss reload --wait --name demo" % PYTHON
    if service_type == "notify-reload":
        reload_line += " --after-sighup"     # SIGHUP starts it; this reports its outcome
    (units / "demo.service").write_text(textwrap.dedent("""\
        [Unit]
        StartLimitIntervalSec=0
        [Service]
        Type=%s
        NotifyAccess=main
        ExecStart=%s -m pyboss exec --name demo %s %s --stop-timeout 10 -- %s
        %s
        RuntimeDirectory=pyboss/%%N
        RuntimeDirectoryPreserve=restart
        FileDescriptorStoreMax=16
        Restart=on-failure
        RestartSec=100ms
        TimeoutStartSec=30s
        TimeoutStopSec=20s
        KillMode=%s
        """ % (service_type, PYTHON, listens, pyboss_options, app or launcher, reload_line,
               kill_mode)) + textwrap.dedent(service_extra))
    return units, Path(flags)


class LoadInside:
    """ns_load.py running inside the namespace; .result once the with block is left."""

    def __init__(self, ns, port=HTTP_PORT, threads=6, host="127.0.0.1"):
        self.proc = ns.start_background([PYTHON, LOAD_CLIENT, "%s:%d" % (host, port),
                                         str(threads)], stdin=-1, text=True)
        self.result = None

    def __enter__(self):
        line = self.proc.stdout.readline().strip()
        if line != "running":
            self.proc.kill()
            raise AssertionError("load client did not get going: %r %s"
                                 % (line, self.proc.stderr.read()))
        return self

    def __exit__(self, *exc):
        out, err = self.proc.communicate(input="", timeout=TIMEOUT * 2)
        assert self.proc.returncode == 0, err
        self.result = json.loads(out.strip().splitlines()[-1])

    @property
    def failures(self):
        return sum(self.result["failures"].values())


def main_pid(ns, unit="demo.service"):
    return int(ns.systemctl("show", "-P", "MainPID", unit).stdout.strip())


def curl(ns, port=HTTP_PORT, check=True):
    result = ns.run(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:%d/" % port],
                    check=check)
    return json.loads(result.stdout) if result.returncode == 0 else None


def listening_inode(ns, port):
    """The inode of the socket listening on 127.0.0.1:port, from `ss` inside."""
    out = ns.run(["ss", "-Hltne", "sport = :%d" % port]).stdout
    inodes = [w.split(":")[1] for w in out.split() if w.startswith("ino:")]
    assert len(inodes) == 1, out
    return int(inodes[0])


def sigkill_pyboss_and_await_restart(ns, unit="demo.service"):
    """SIGKILL pyboss; return the new MainPID once systemd restarted it and it is serving."""
    old = main_pid(ns, unit)
    # The shell's kill: a minimal image has no kill(1) binary (procps).
    ns.run(["sh", "-c", 'kill -KILL "$1"', "sh", str(old)])

    def restarted():
        # One systemctl per poll: the polls are CPU that a latency measurement shares.
        pid, state = ns.systemctl("show", "-P", "MainPID", "-P", "ActiveState",
                                  unit).stdout.split()
        return int(pid) if int(pid) not in (0, old) and state == "active" else None
    return wait_until(restarted, what="systemd to restart pyboss after SIGKILL")


def environ_of(host_pid):
    with open("/proc/%d/environ" % host_pid, "rb") as f:
        return dict(v.split("=", 1) for v in f.read().decode(errors="replace").split("\0")
                    if "=" in v)


def app_processes(ns, unit="demo.service"):
    """Host pids of the unit's processes that are generations (PYBOSS_GENERATION set)."""
    found = []
    for pid in ns.unit_processes(unit):
        try:
            if "PYBOSS_GENERATION" in environ_of(pid):
                found.append(pid)
        except OSError:
            pass
    return found


def journal_json(ns, unit="demo.service"):
    ns.run(["journalctl", "--sync"], check=False)
    out = ns.run(["journalctl", "--no-pager", "-o", "json", "-u", unit], check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

