"""Under a real systemd: every generation's own journal stream, and a failed reload that
says why in `systemctl reload` and `systemctl status`.

Each test boots its own systemd (tests/systemd_harness.py) with pyboss and the demo app
as demo.service.
"""
import json
import re

from pyboss_testing import IMPORT_ERROR, TIMEOUT, write_breakable_app
from supervised_units import PYTHON, app_processes, curl, environ_of, main_pid, write_units


def reload(ns, check=True):
    # A reload that never sees READY=1 would hang `systemctl reload` forever.
    return ns.run(["timeout", str(TIMEOUT), "systemctl", "reload", "demo.service"], check=check)


def journal_of_pid(ns, pid, *fields):
    ns.run(["journalctl", "--sync"])
    return ns.run(["journalctl", "--no-pager", "-o", "json", "_PID=%d" % pid, *fields]).stdout


def messages(journal_json_text):
    return [json.loads(line)["MESSAGE"] for line in journal_json_text.splitlines()]


def test_broken_build_fails_systemctl_reload_and_systemctl_status_shows_its_error(systemd_ns,
                                                                                   tmp_path):
    app, broken = write_breakable_app(str(tmp_path))
    units, _ = write_units(tmp_path, app=app)
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    serving = curl(ns)
    open(broken, "w").close()
    result = reload(ns, check=False)
    assert result.returncode != 0
    assert curl(ns) == serving       # the old generation serves on
    status = ns.systemctl("status", "demo.service", check=False).stdout
    match = re.search(r'Status: "reload failed: generation 2 \(pid (\d+)\) exited with status 1: '
                      r'.*\| %s; serving generation 1 \(pid %d\)"' % (IMPORT_ERROR, serving["pid"]),
                      status)
    assert match, status
    assert ns.systemctl("is-active", "demo.service").stdout.strip() == "active"
    # pyboss read the lines back from generation 2's own journal stream.
    failed_pid = int(match.group(1))
    assert IMPORT_ERROR in messages(journal_of_pid(ns, failed_pid))
    reply = json.loads(ns.run([PYTHON, "-m", "pyboss", "status", "--json", "--control",
                               "/run/pyboss/demo/demo.sock"]).stdout)
    assert reply["output"] == "journal"
    assert reply["failed"][-1]["pid"] == failed_pid
    assert reply["failed"][-1]["last_lines"][-1] == IMPORT_ERROR
    # ExecReload='pyboss reload --wait' said it too, in the unit's journal.
    assert "  | " + IMPORT_ERROR in ns.journal("demo.service")


def test_journal_attributes_each_generations_lines_to_its_own_pid(systemd_ns, tmp_path):
    app, _ = write_breakable_app(str(tmp_path))
    units, _ = write_units(tmp_path, app=app)
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    pyboss_pid = main_pid(ns)
    seen = []
    for generation in (1, 2):
        if generation == 2:
            reload(ns)
        reply = curl(ns)
        assert reply["generation"] == generation
        entries = [json.loads(line) for line in journal_of_pid(ns, reply["pid"]).splitlines()]
        assert [e["MESSAGE"] for e in entries] == \
            ["generation %d starting as pid %d" % (generation, reply["pid"])]
        assert entries[0]["SYSLOG_IDENTIFIER"] == "demo"        # the app's name
        assert entries[0]["_SYSTEMD_UNIT"] == "demo.service"
        seen.append(reply["pid"])
    assert len(set(seen)) == 2
    # Nothing of theirs is attributed to pyboss.
    assert not [m for m in messages(journal_of_pid(ns, pyboss_pid)) if "starting as pid" in m]
    # Every generation's JOURNAL_STREAM names a stream of its own, not pyboss's.
    apps = app_processes(ns)
    [pyboss_host_pid] = [p for p in ns.unit_processes("demo.service") if p not in apps]
    streams = [environ_of(p)["JOURNAL_STREAM"] for p in apps + [pyboss_host_pid]]
    assert len(set(streams)) == len(streams), streams
