"""Units written by `pyboss units` run the app under a real systemd, socket-activated."""
import json
import sys

from unit_tools import pyboss


def test_generated_units_serve_the_demo_under_socket_activation(systemd_ns, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    # Quotes, $, % and spaces in COMMAND must reach the app exactly as given.
    command = ["/bin/sh", "-c", 'exec "$0" -m pyboss.demo # 100%% of "$HOME"', sys.executable]
    written = pyboss("units", "demo", "--listen", "http=127.0.0.1:8080", "--ready-timeout", "20",
                     "--output", units, "--", *command)
    assert written.returncode == 0, written.stderr
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket")
    # Socket activation: nothing runs until the first connection arrives.
    assert ns.systemctl("is-active", "demo.service", check=False).stdout.strip() == "inactive"

    def get():
        return json.loads(ns.run(["curl", "-sS", "--max-time", "10",
                                  "http://127.0.0.1:8080/"]).stdout)

    assert get()["generation"] == 1
    # The generation answers during its settle period; systemd hears READY=1 after it:
    # `systemctl start` waits for that (a reload before would merge into the start job).
    ns.systemctl("start", "demo.service")
    status = json.loads(ns.run([sys.executable, "-m", "pyboss", "status", "--json",
                                "--control", "/run/pyboss/demo/demo.sock"]).stdout)
    assert [(l["name"], l["origin"]) for l in status["listeners"]] == [("http", "inherited")]

    # ExecReload= makes `systemctl reload` return once generation 2 serves.
    ns.run(["timeout", "60", "systemctl", "reload", "demo.service"])
    assert get()["generation"] == 2

    ns.systemctl("stop", "demo.service")
    assert ns.unit_processes("demo.service") == []
    assert ns.systemctl("is-active", "demo.socket").stdout.strip() == "active"
