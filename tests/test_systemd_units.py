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


def test_generated_units_let_a_failed_reload_say_why(systemd_ns, tmp_path):
    # The hardened unit (DynamicUser=, PrivateTmp=, ProtectSystem=strict) must still let
    # pyboss read a failed generation's last lines back from the journal.
    units = tmp_path / "units"
    units.mkdir()
    marker = "/run/pyboss-test-broken-build"      # /run of the namespace: the unit sees it
    script = ('echo "generation $PYBOSS_GENERATION starting"; if [ -e %s ]; then exec "$0" -c '
              '"raise ImportError(\'no module named nope\')"; fi; exec "$0" -m pyboss.demo' % marker)
    written = pyboss("units", "demo", "--listen", "http=127.0.0.1:8080", "--ready-timeout", "20",
                     "--output", units, "--", "/bin/sh", "-c", script, sys.executable)
    assert written.returncode == 0, written.stderr
    ns = systemd_ns(units)
    ns.systemctl("start", "demo.socket", "demo.service")
    ns.run(["touch", marker])
    result = ns.run(["timeout", "60", "systemctl", "reload", "demo.service"], check=False)
    assert result.returncode != 0
    status = ns.systemctl("status", "demo.service", check=False).stdout
    assert "ImportError: no module named nope; serving generation 1" in status, status
