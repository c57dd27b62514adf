"""The client commands: quick to start (no click), and answering exactly as click would."""
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, wait_until

# The same commands through click alone (what the console script did before).
CLICK_ONLY = [PYTHON, "-c", "import sys; from pyboss.cli.main import main; sys.argv[0] = "
              "'pyboss'; main()"]


def run(argv, **kw):
    """(exit status, stdout, stderr), the uptimes in it (which move between two runs) masked."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, **kw)
    return result.returncode, mask_uptimes(result.stdout), result.stderr


def mask_uptimes(text):
    text = re.sub(r"\bup [0-9][0-9dhms.]*", "up T", text)
    return re.sub(r'"uptime": [0-9.]+', '"uptime": 0', text)


def imported_modules(argv):
    """(exit status, modules the command imported), from python -X importtime."""
    result = subprocess.run([PYTHON, "-X", "importtime"] + argv[1:], capture_output=True,
                            text=True, timeout=TIMEOUT)
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return result.returncode, modules


@pytest.fixture
def starter(tmp_path):
    """A `pyboss start-server` with a pid and a status file, stopped after the test."""
    pid_file, status_file = tmp_path / "app.pid", tmp_path / "app.status"
    proc = subprocess.Popen(PYBOSS + ["start-server", "--port", "127.0.0.1:0", "--interval",
                                      "0", "--pid-file", str(pid_file), "--status-file",
                                      str(status_file), "--", "sleep", "3600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The first status file line is written once the first generation is declared.
    wait_until(lambda: status_file.exists() and status_file.read_text().strip(),
               what="start-server's first generation")
    yield str(pid_file), str(status_file)
    if proc.poll() is None:
        proc.terminate()
    proc.wait(TIMEOUT)


def test_client_commands_do_not_import_click(start_pyboss, app):
    boss = start_pyboss([app[0]])
    for args in (["status"], ["status", "--json"], ["status", "--check"],
                 ["status", "--timeout", "5"], ["reload"], ["reload", "--wait", "--timeout=30"],
                 ["scale", "2"], ["scale", "--timeout", "30", "1"], ["stop"]):
        code, modules = imported_modules(PYBOSS + args + ["--control", boss.control])
        assert code == 0, args
        assert "pyboss.cli.client" in modules, args
        assert "click" not in modules, args
    assert boss.proc.wait(TIMEOUT) == 0


def test_start_server_restart_and_stop_do_not_import_click(starter):
    pid_file, status_file = starter
    code, modules = imported_modules(PYBOSS + ["start-server", "--restart", "--pid-file",
                                               pid_file, "--status-file", status_file])
    assert code == 0 and "click" not in modules
    with open(status_file) as f:
        assert [line.split(":")[0] for line in f.read().split()] == ["2"]
    code, modules = imported_modules(PYBOSS + ["start-server", "--stop", "--pid-file=" + pid_file])
    assert code == 0 and "click" not in modules
    assert not os.path.exists(pid_file)


def test_lean_and_click_paths_answer_alike(start_pyboss, app, tmp_path):
    boss = start_pyboss([app[0]])
    control = ["--control", boss.control]
    for args in (["status"], ["status", "--json"], ["status", "--check"],
                 ["status", "--control=" + boss.control],
                 ["scale", "1"], ["scale", "--name", "nobody-runs-this", "2"],
                 ["reload", "--name", "nobody-runs-this"], ["stop", "--control",
                                                             str(tmp_path / "none.sock")]):
        argv = args if "--control" in " ".join(args) or "--name" in args else args + control
        lean, clicked = run(PYBOSS + argv), run(CLICK_ONLY + argv)
        assert lean == clicked, argv
    # A reload answers with the generation it made: the same words, the next number.
    lean, clicked = run(PYBOSS + ["reload", "--wait"] + control), \
        run(CLICK_ONLY + ["reload", "--wait"] + control)
    pattern = r"pyboss: reloaded: generation (\d+) \(pid \d+\) serving\n"
    assert re.fullmatch(pattern, lean[1]) and re.fullmatch(pattern, clicked[1])
    assert int(re.fullmatch(pattern, clicked[1]).group(1)) == \
        int(re.fullmatch(pattern, lean[1]).group(1)) + 1
    assert (lean[0], lean[2]) == (clicked[0], clicked[2]) == (0, "")
    status = json.loads(run(PYBOSS + ["status", "--json"] + control)[1])
    assert status["generations"][-1]["number"] == int(re.fullmatch(pattern, clicked[1]).group(1))


@pytest.mark.parametrize("args, named", [
    (["status", "--bogus"], "--bogus"),
    (["reload", "--name", "../x"], "invalid --name '../x'"),
    (["stop", "--control"], "--control"),
    (["reload", "--wait=yes"], "--wait"),
    (["status", "--timeout", "inf"], "--timeout"),
    (["status", "extra"], "extra"),
    (["scale", "0"], "WORKERS"),
    (["scale", "2000"], "WORKERS"),
    (["scale"], "WORKERS"),
    (["scale", "1", "2"], "2"),
    (["start-server", "--restart", "--stop", "--pid-file", "x"],
     "pyboss start-server: --restart and --stop exclude each other"),
    (["start-server", "--restart", "--pid-file", "x"],
     "pyboss start-server: --restart needs --pid-file and --status-file"),
])
def test_client_mistakes_get_clicks_one_line_and_exit_2(args, named):
    code, out, err = run(PYBOSS + args)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and named in err, err
    assert run(CLICK_ONLY + args) == (code, out, err)


def test_client_help_is_clicks():
    code, out, _ = run(PYBOSS + ["reload", "--help"])
    assert code == 0
    assert out.startswith("Usage: pyboss reload [OPTIONS]") and "--wait" in out


def test_bare_pyboss_prints_its_help_line_by_line():
    code, out, err = run(PYBOSS)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0] == "Usage: pyboss [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines
    assert any(line.split()[:1] == ["reload"] for line in lines)


def test_tour_with_its_port_taken_says_so_in_one_line_and_exits_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run([sys.executable, "-m", "pyboss.tour", "--listen",
                              "127.0.0.1:%d" % port])
    assert (code, out) == (2, "")
    [line] = err.splitlines()       # pyboss's own one line, and what to do about it
    assert line.startswith("tour: pyboss exec: cannot listen on tcp://127.0.0.1:%d: Address "
                           "already in use" % port), line
    assert line.endswith("; or run the tour elsewhere: python3 -m pyboss.tour --listen "
                         "127.0.0.1:8081"), line
