"""The test harness boots a real systemd whose socket activation and fd store behave as on a host."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cgroup2 import cgroup2_mounts, cgroup2_root
from systemd_harness import (SystemdNamespace, missing_requirements, processes_in,
                             python_executable, remove_orphaned_namespaces, running)

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def bootable():
    """For tests that drive SystemdNamespace themselves: skip, saying why, where the host
    cannot boot systemd (as the systemd_ns fixture does)."""
    reason = missing_requirements()
    if reason:
        pytest.skip("real systemd unavailable: " + reason)

# A stdlib service: serves HTTP on the socket systemd hands it, or binds one itself and
# pushes it into the fd store. Each response says where the socket came from and its inode.
TINY_SERVICE = textwrap.dedent("""\
    import array, os, socket, sys

    def notify(message, fds=()):
        address = os.environ["NOTIFY_SOCKET"]
        if address.startswith("@"):
            address = "\\0" + address[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            sock.sendmsg([message.encode()], ancillary, 0, address)

    if os.environ.get("LISTEN_PID") == str(os.getpid()):
        listener = socket.socket(fileno=3)
        origin = os.environ["LISTEN_FDNAMES"].split(":")[0]
    else:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(sys.argv[1])))
        listener.listen(16)
        origin = "bound"
        notify("FDSTORE=1\\nFDNAME=kept", [listener.fileno()])
    notify("READY=1")
    inode = os.fstat(listener.fileno()).st_ino
    while True:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            body = "%s %d %d" % (origin, inode, os.getpid())
            conn.sendall(("HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                          % (len(body), body)).encode())
""")


def write_units(directory, units):
    directory.mkdir(exist_ok=True)
    for name, text in units.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def tiny_service_units(tmp_path):
    script = tmp_path / "tiny_service.py"
    script.write_text(TINY_SERVICE)
    return write_units(tmp_path / "units", {
        "tiny.socket": """\
            [Socket]
            ListenStream=127.0.0.1:8080
            FileDescriptorName=web
            """,
        "tiny.service": """\
            [Service]
            Type=notify
            ExecStart=%s %s 0
            """ % (python_executable(), script),
        "stored.service": """\
            [Unit]
            StartLimitIntervalSec=0
            [Service]
            Type=notify
            FileDescriptorStoreMax=4
            ExecStart=%s %s 8081
            """ % (python_executable(), script),
    })


def curl(ns, port):
    return ns.run(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:%d/" % port]).stdout


def test_boots_systemd_as_pid_1_of_its_own_namespaces(systemd_ns, tmp_path):
    ns = systemd_ns(write_units(tmp_path / "units", {}))
    assert ns.systemctl("is-system-running", check=False).stdout.strip() in ("running", "degraded")
    assert ns.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    # Host services stay out: only the bare basic.target set is up.
    assert "postgresql" not in ns.systemctl("list-units", "--no-pager").stdout


def test_socket_activated_service_answers_curl_inside_the_namespace(systemd_ns, tmp_path):
    ns = systemd_ns(tiny_service_units(tmp_path))
    ns.systemctl("start", "tiny.socket")
    origin, _, _ = curl(ns, 8080).split()
    assert origin == "web"  # LISTEN_FDNAMES from FileDescriptorName=
    # A client started in the background shares the namespace's loopback too.
    client = ns.start_background(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:8080/"],
                                 text=True)
    out, err = client.communicate(timeout=30)
    assert (client.returncode, out.split()[0]) == (0, "web"), err
    assert ns.systemctl("is-active", "tiny.service").stdout.strip() == "active"
    assert len(ns.unit_processes("tiny.service")) == 1
    ns.systemctl("stop", "tiny.service")
    assert ns.unit_processes("tiny.service") == []


def test_fd_store_hands_the_stored_socket_back_after_restart(systemd_ns, tmp_path):
    ns = systemd_ns(tiny_service_units(tmp_path))
    ns.systemctl("start", "stored.service")
    origin, inode, pid = curl(ns, 8081).split()
    assert origin == "bound"
    ns.systemctl("restart", "stored.service")
    assert curl(ns, 8081).split()[:2] == ["kept", inode]
    assert curl(ns, 8081).split()[2] != pid


def test_shutdown_leaves_no_process_and_no_cgroup(bootable, tmp_path):
    with SystemdNamespace(tiny_service_units(tmp_path)) as ns:
        ns.systemctl("start", "tiny.socket")
        curl(ns, 8080)
        pids = ns.cgroup_processes()
        cgroup = ns.cgroup
        assert len(pids) >= 3  # unshare, systemd, journald, the service
    assert not cgroup.exists()
    assert not [pid for pid in pids if running(pid)]


def test_shutdown_kills_a_namespace_stuck_in_poweroff(bootable, tmp_path):
    units = write_units(tmp_path / "units", {
        "stubborn.service": """\
            [Service]
            ExecStart=/bin/sh -c 'trap "" TERM; while :; do sleep 1; done'
            """,
    })
    ns = SystemdNamespace(units)
    with ns:
        ns.systemctl("start", "stubborn.service")
        pids = ns.cgroup_processes()
        # poweroff waits DefaultTimeoutStopSec (10 s) for the stubborn unit; the
        # harness must not: it SIGKILLs PID 1 and still cleans up.
        ns.shutdown(timeout=0.5)
    assert not ns.cgroup.exists()
    assert not [pid for pid in pids if running(pid)]


def test_systemd_254_overlay_runs_the_newer_systemd(systemd_ns, systemd_254, tmp_path):
    ns = systemd_ns(write_units(tmp_path / "units", {}), overlay_usr=systemd_254)
    assert ns.systemctl("--version").stdout.startswith("systemd 254")
    assert ns.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"


def test_namespaces_of_a_killed_test_run_are_removed_by_the_next(bootable, tmp_path):
    units = write_units(tmp_path / "units", {})
    booter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from systemd_harness import SystemdNamespace\n"
         "ns = SystemdNamespace(sys.argv[1]); ns.boot(); print(ns.cgroup, flush=True)\n"
         "time.sleep(600)", str(units)],
        cwd=HERE, stdout=subprocess.PIPE, text=True)
    booted = Path(booter.stdout.readline().strip())
    left = processes_in(booted)
    assert left, "the booted namespace should have processes"
    booter.kill()
    booter.wait()
    # The booter may have reached the hierarchy through a mount of its own, gone with it.
    cgroup = cgroup2_root()[0] / booted.name
    assert cgroup in remove_orphaned_namespaces()
    assert not cgroup.exists()
    assert not [pid for pid in left if running(pid)]


# Boots one systemd with the harness and prints where its cgroup was and what it said.
BOOT_AND_REPORT = """\
import json, sys
from systemd_harness import SystemdNamespace
with SystemdNamespace(sys.argv[1]) as ns:
    state = ns.systemctl("is-system-running", check=False).stdout.strip()
    cgroup = ns.cgroup
    print(json.dumps({"cgroup": str(cgroup), "state": state}))
print(json.dumps({"left": cgroup.exists()}))
"""


# Whatever is mounted at /sys/fs/cgroup goes (in a bare root, nothing is).
UNMOUNT_CGROUPS = "if mountpoint -q /sys/fs/cgroup; then umount -R /sys/fs/cgroup; fi"


def boot_in_a_mount_namespace(tmp_path, prepare):
    """Run the harness in `unshare --mount` after the shell commands `prepare`."""
    units = write_units(tmp_path / "units", {})
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         prepare + ' && exec "$@"', "sh", sys.executable, "-c", BOOT_AND_REPORT, str(units)],
        cwd=HERE, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    booted, after = [json.loads(line) for line in result.stdout.splitlines()]
    return booted["cgroup"], booted["state"], after["left"]


def test_boots_on_a_pure_cgroup2_layout(bootable, tmp_path):
    # As on a Debian 12 booted by systemd: cgroup2 itself at /sys/fs/cgroup, no unified/.
    cgroup, state, left = boot_in_a_mount_namespace(
        tmp_path, UNMOUNT_CGROUPS + " && mount -t cgroup2 cgroup2 /sys/fs/cgroup")
    assert state in ("running", "degraded")
    assert cgroup.startswith("/sys/fs/cgroup/pyboss-test-"), cgroup
    assert not left


def test_boots_where_no_cgroup2_is_mounted(bootable, tmp_path):
    # As in a chroot with /sys bound in but not its submounts: the harness mounts cgroup2
    # in a mount namespace of its own and reaches it through its helper's /proc/PID/root.
    mounted_here = cgroup2_mounts()
    cgroup, state, left = boot_in_a_mount_namespace(tmp_path, UNMOUNT_CGROUPS)
    assert state in ("running", "degraded")
    assert cgroup.startswith("/proc/") and "/root/sys/fs/cgroup/pyboss-test-" in cgroup, cgroup
    assert not left
    # The namespaces were private: nothing was mounted or unmounted here.
    assert cgroup2_mounts() == mounted_here
