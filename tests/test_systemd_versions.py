"""Units written by `pyboss units` for systemd 252 and 254, run by that very systemd.

252 is the host's; 254 comes from Debian's backports, laid over /usr in the namespace.
The app is the demo behind a launcher whose flags file is its next "build".
"""
import os
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyboss_testing import TIMEOUT, wait_until, write_app
from supervised_units import LoadInside, curl, listening_inode, main_pid, write_units

VERSIONS = [252, 254]


def generate(tmp_path, version, *options, python=sys.executable, listen=True):
    """NAME=demo units for systemd `version` in tmp_path/units; (units dir, flags file)."""
    launcher, flags = write_app(str(tmp_path))
    units = tmp_path / "units"
    units.mkdir()
    listens = ["--listen", "http=127.0.0.1:8080"] if listen else []
    options = options or ("--ready-timeout", "20")
    result = subprocess.run([python, "-m", "pyboss", "units", "demo", "--systemd-version",
                             str(version), *listens, *options,
                             "--output", str(units), "--", launcher],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return units, Path(flags)


@pytest.fixture
def boot(systemd_ns, request):
    """boot(units, version) -> a SystemdNamespace running that systemd version."""
    def make(units, version):
        overlay = request.getfixturevalue("systemd_254") if version == 254 else None
        ns = systemd_ns(units, overlay_usr=overlay)
        running = ns.run(["systemctl", "--version"]).stdout.split()[1]
        assert running == str(version)
        return ns
    return make


def reload(ns, check=True):
    # A reload that never sees READY=1 would hang `systemctl reload` forever.
    return ns.run(["timeout", str(TIMEOUT), "systemctl", "reload", "demo.service"],
                  check=check)


@pytest.mark.parametrize("version", VERSIONS)
def test_generated_units_start_and_reload_under_load_fail_no_request(boot, tmp_path, version):
    units, _ = generate(tmp_path, version)
    ns = boot(units, version)
    ns.systemctl("start", "demo.socket")
    assert curl(ns)["generation"] == 1      # socket activation started pyboss
    wait_started(ns)
    expected = "notify-reload" if version >= 253 else "notify"
    assert ns.systemctl("show", "-P", "Type", "demo.service").stdout.strip() == expected
    with LoadInside(ns) as load:
        for _ in range(5):
            reload(ns)
    assert load.failures == 0, load.result
    # The last old generation may accept for a moment after its drain signal; then only
    # generation 6 answers: one reload per `systemctl reload`, --after-sighup started none.
    wait_until(lambda: [curl(ns)["generation"] for _ in range(5)] == [6] * 5,
               what="generation 6 alone to answer")
    assert len(load.result["generations"]) >= 3, load.result["generations"]
    print("systemd %d, 5 reloads: %d requests, worst latency %.3fs"
          % (version, load.result["requests"], load.result["worst_latency"]))


@pytest.mark.parametrize("version", VERSIONS)
def test_broken_build_fails_systemctl_reload_and_old_generation_serves(boot, tmp_path,
                                                                         version):
    units, flags = generate(tmp_path, version, "--ready-timeout", "3")
    ns = boot(units, version)
    ns.systemctl("start", "demo.socket", "demo.service")
    serving = curl(ns)
    flags.write_text("--no-ready")          # the next build never becomes ready
    result = reload(ns, check=False)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert curl(ns) == serving
    assert ns.systemctl("is-active", "demo.service").stdout.strip() == "active"
    assert "reload failed: generation 2" in \
        ns.systemctl("show", "-P", "StatusText", "demo.service").stdout
    flags.write_text("")                    # fixed: the next reload works again
    reload(ns)
    assert curl(ns)["generation"] == 3


@pytest.mark.parametrize("version", VERSIONS)
def test_ten_restarts_in_five_seconds_leave_the_socket_unit_listening(boot, tmp_path,
                                                                      version):
    units, _ = generate(tmp_path, version)
    ns = boot(units, version)
    ns.systemctl("start", "demo.socket", "demo.service")
    inode = listening_inode(ns, 8080)
    started = time.monotonic()
    for _ in range(10):
        # With a start limit of 5 (systemd's default, and pyboss's units before), the
        # sixth fails "start of the service was attempted too often", and the socket
        # unit goes down with the service.
        ns.systemctl("restart", "demo.service")
    took = time.monotonic() - started
    assert ns.systemctl("is-active", "demo.socket").stdout.strip() == "active"
    assert ns.systemctl("is-active", "demo.service").stdout.strip() == "active"
    assert listening_inode(ns, 8080) == inode
    assert curl(ns)["generation"] == 1
    assert "start-limit-hit" not in ns.journal()
    print("systemd %d: 10 restarts in %.1fs" % (version, took))


def without_socket_unit(units, port):
    """The generated service with pyboss binding the listener itself (no demo.socket)."""
    (units / "demo.socket").unlink()
    service = units / "demo.service"
    lines = [line for line in service.read_text().splitlines()
             if not line.startswith(("Requires=", "After=", "Sockets="))]
    text = "\n".join(lines) + "\n"
    text = text.replace(" exec --name demo ", " exec --name demo --listen http=127.0.0.1:%d "
                        % port, 1)
    service.write_text(text)


def test_fd_store_preserve_keeps_pybosss_own_listener_across_restart_and_stop(boot, tmp_path):
    units, _ = generate(tmp_path, 254)
    without_socket_unit(units, 8080)
    assert "FileDescriptorStorePreserve=yes" in (units / "demo.service").read_text()
    # Enabled, as installed: systemd keeps the stopped unit, and its fd store, in memory
    # (a unit nothing refers to is unloaded once stopped, and its store closed with it).
    (units / "multi-user.target.wants").mkdir()
    (units / "multi-user.target.wants" / "demo.service").symlink_to("../demo.service")
    ns = boot(units, 254)
    ns.systemctl("start", "multi-user.target")
    inode = listening_inode(ns, 8080)
    with LoadInside(ns) as load:
        ns.systemctl("restart", "demo.service")
        assert curl(ns)["generation"] == 1
    assert load.failures == 0, load.result
    assert listening_inode(ns, 8080) == inode
    # Stopped, the listener stays open in the fd store: a connection waits, not refused,
    # and the next pyboss, handed the very same socket, serves it.
    ns.systemctl("stop", "demo.service")
    assert ns.unit_processes("demo.service") == []
    assert listening_inode(ns, 8080) == inode
    waiting = ns.start_background(["curl", "-sS", "--max-time", str(TIMEOUT),
                                   "http://127.0.0.1:8080/"], text=True)
    wait_until(lambda: "ESTAB" in ns.run(["ss", "-Htn", "dport = :8080"]).stdout,
               what="the client's connection to be queued")
    ns.systemctl("start", "demo.service")
    out, err = waiting.communicate(timeout=TIMEOUT)
    assert waiting.returncode == 0, err
    assert '"generation": 1' in out
    assert "listener http (tcp 127.0.0.1:8080) is back from the fd store" in \
        ns.journal("demo.service")
    # A fresh start, as the unit's comment says: the store emptied while stopped.
    ns.systemctl("stop", "demo.service")
    ns.systemctl("clean", "--what=fdstore", "demo.service")
    assert ns.run(["ss", "-Hltn", "sport = :8080"]).stdout.strip() == ""
    ns.systemctl("start", "demo.service")
    assert listening_inode(ns, 8080) != inode


def sitepackages():
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def venv_under(directory):
    """A venv in directory whose python imports this checkout's pyboss (and what the test
    venv has installed: click); its python."""
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (site / "pyboss-checkout.pth").write_text("\n".join([repo] + sitepackages()) + "\n")
    return venv / "bin" / "python"


def wait_started(ns):
    """Started once its first generation settled (READY=1): a reload before that would
    join systemd's start job instead of reloading."""
    wait_until(lambda: ns.systemctl("is-active", "demo.service", check=False).stdout.strip()
               == "active", what="demo.service to be active")


@pytest.mark.parametrize("version", VERSIONS)
def test_units_for_pyboss_in_a_venv_under_tmp_run(boot, tmp_path, version):
    assert str(tmp_path).startswith("/tmp/")
    python = venv_under(tmp_path)
    units, _ = generate(tmp_path, version, python=python)
    service = (units / "demo.service").read_text()
    assert "ExecStart=%s -m pyboss exec" % python in service
    assert "PrivateTmp=no" in service and "DynamicUser=no" in service
    ns = boot(units, version)
    ns.systemctl("start", "demo.socket")
    assert curl(ns)["generation"] == 1
    wait_started(ns)
    reload(ns)
    assert curl(ns)["generation"] == 2
    assert main_pid(ns) > 0


def test_units_for_254_pass_systemd_254s_own_verify(systemd_254, tmp_path):
    units, _ = generate(tmp_path, 254)
    shared = next(systemd_254.glob("usr/lib/*/systemd/libsystemd-shared-*.so")).parent
    libs = "%s:%s" % (shared, shared.parent)    # its libsystemd-shared, its libsystemd
    analyze = [str(systemd_254 / "usr/bin/systemd-analyze")]
    env = dict(os.environ, LD_LIBRARY_PATH=libs)
    version = subprocess.run(analyze + ["--version"], capture_output=True, text=True,
                             env=env, timeout=60).stdout
    assert version.startswith("systemd 254 ")
    result = subprocess.run(analyze + ["verify", *map(str, sorted(units.iterdir()))],
                            capture_output=True, text=True, env=env, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The host's 252 does not know three of its lines, and says so.
    result = subprocess.run(["systemd-analyze", "verify", str(units / "demo.service")],
                            capture_output=True, text=True, timeout=120)
    assert "notify-reload" in result.stderr and "FileDescriptorStorePreserve" in result.stderr


def test_slow_generation_extends_the_reload_timeout_under_notify_reload(boot, tmp_path):
    # TimeoutStartSec=1s bounds a reload too, but the app needs 3s (pyboss's own
    # --ready-timeout is 20s): pyboss's EXTEND_TIMEOUT_USEC= must reach systemd 254
    # while it waits for RELOADING=1's READY=1 and for ExecReload=.
    units, flags = write_units(tmp_path, service_type="notify-reload")
    ns = boot(units, 254)
    ns.systemctl("start", "demo.socket", "demo.service")
    assert curl(ns)["generation"] == 1
    # Short only from now on: pyboss's own start (slow on a busy machine) is not the point.
    (units / "demo.service.d").mkdir()
    (units / "demo.service.d" / "short.conf").write_text("[Service]\nTimeoutStartSec=1s\n")
    ns.systemctl("daemon-reload")
    assert ns.systemctl("show", "-P", "TimeoutStartUSec", "demo.service").stdout.strip() == "1s"
    flags.write_text("--ready-delay 3")
    reload(ns)
    assert curl(ns)["generation"] == 2
    assert ns.systemctl("show", "-P", "NRestarts", "demo.service").stdout.strip() == "0"
    assert "timed out" not in ns.journal("demo.service")
