"""pyboss as a container's entrypoint: PID 1 of a fresh PID namespace, exactly what a
container runtime gives its entrypoint (`unshare --pid --fork --mount-proc`)."""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

import pytest

from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, Load, children, http_get, pid_alive, wait_until

APPS = os.path.join(os.path.dirname(__file__), "apps")
# --kill-child: should the test die, pyboss goes with unshare.
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="PID namespaces need root and unshare (util-linux)")


@pytest.fixture
def start_pid1(start_pyboss):
    """Like start_pyboss, with pyboss as PID 1 of a PID namespace of its own. unshare
    does not pass SIGTERM on, so the teardown sends it to PID 1 itself."""
    started = []

    def start(command, *options, **kw):
        boss = start_pyboss(command, *options, wrapper=PID_NAMESPACE, **kw)
        boss.init = namespace_init(boss)
        started.append(boss)
        return boss

    yield start
    for boss in started:
        if boss.proc.poll() is None:
            os.kill(boss.init, signal.SIGTERM)


def accept_queue(port):
    """Connections waiting in the listening socket's accept queue (/proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                return int(fields[4].split(":")[1], 16)
    return 0


def namespace_init(boss):
    """The host pid of the namespace's PID 1 (unshare's one child): pyboss itself."""
    found = wait_until(lambda: children(boss.proc.pid), what="unshare's child")
    return found[0][0]


def in_namespace(init_pid):
    """(pid, state) of every process in init_pid's PID namespace, seen from the host."""
    namespace = os.readlink("/proc/%d/ns/pid" % init_pid)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/ns/pid" % entry) != namespace:
                continue
            with open("/proc/%s/stat" % entry, "rb") as f:
                found.append((int(entry), f.read().rsplit(b")", 1)[1].split()[0].decode()))
        except OSError:
            continue
    return found


def zombies(init_pid):
    return [pid for pid, state in in_namespace(init_pid) if state == "Z"]


def test_pid1_reaps_a_thousand_double_forked_orphans(start_pid1, tmp_path):
    mark = str(tmp_path / "orphans-done")
    boss = start_pid1([PYTHON, os.path.join(APPS, "orphan_factory.py"), "1000", mark])
    init = boss.init
    with open("/proc/%d/cmdline" % init, "rb") as f:
        assert b"pyboss" in f.read()
    wait_until(lambda: os.path.exists(mark), what="the app's 1,000 orphans to exit")
    # Every orphan has exited; each became a zombie under PID 1 until pyboss reaped it.
    wait_until(lambda: not zombies(init), what="PID 1 to reap every orphan")
    left = zombies(init)
    status = boss.status()
    print("\n1,000 double-forked orphans under PID 1: %d zombies left, %d reaped"
          % (len(left), status["orphans"]["reaped"]))
    assert left == []
    assert status["orphans"]["reaped"] == 1000
    assert http_get(boss.address())["generation"] == 1
    os.kill(init, signal.SIGTERM)
    assert boss.proc.wait(60) == 0


def test_sighup_to_pid1_under_load_reloads_without_a_failed_request(start_pid1):
    boss = start_pid1([PYTHON, "-m", "pyboss.demo"])
    init = boss.init
    address = boss.address()
    with Load(address, threads=6) as load:
        for generation in range(2, 7):
            os.kill(init, signal.SIGHUP)       # from outside the namespace, as a runtime does
            boss.upstream.wait_for("READY=1")
            assert boss.serving()["number"] == generation
    print("\n5 SIGHUPs to PID 1 under load: %d requests, %d failed, worst latency %.1f ms"
          % (len(load.results), len(load.errors), load.worst_latency * 1000))
    assert load.errors == []
    assert {1, 6} <= load.generations()
    # SIGTERM while a slow request is in flight: it is answered, then PID 1 exits 0.
    slow, slow_state = {}, {}

    def slow_request():
        with socket.create_connection(address, timeout=60) as conn:
            conn.sendall(b"GET /sleep?ms=1500 HTTP/1.0\r\n\r\n")
            slow_state["conn"] = True
            slow.update(json.loads(conn.makefile("rb").read().partition(b"\r\n\r\n")[2]))
    request = threading.Thread(target=slow_request)
    request.start()
    # In flight: connected, and taken off the accept queue by the app.
    wait_until(lambda: slow or ("conn" in slow_state and accept_queue(address[1]) == 0),
               what="the slow request to be accepted")
    os.kill(init, signal.SIGTERM)
    request.join(60)
    assert slow.get("generation") == 6
    assert boss.proc.wait(60) == 0


def test_sigterm_to_pid1_drains_the_whole_tree_and_leaves_nothing(start_pid1, tmp_path):
    boss = start_pid1([PYTHON, os.path.join(APPS, "daemonizing_app.py"), str(tmp_path),
                       "--term-delay", "1"])
    init = boss.init
    wait_until(lambda: os.path.exists(tmp_path / "grandchild-1"), what="the daemon")
    assert len(in_namespace(init)) == 3        # pyboss, the app, its daemonized grandchild
    os.kill(init, signal.SIGTERM)
    assert boss.proc.wait(60) == 0
    # The grandchild finished its second of work: pyboss waited for it. Had PID 1 exited
    # earlier, the kernel would have SIGKILLed it on the way and .exited would not exist.
    assert os.path.exists(tmp_path / "grandchild-1.exited")
    assert "every generation is gone; exiting with status 0" in boss.output()
    assert not pid_alive(init)


def test_sigint_to_pid1_stops(start_pid1):
    boss = start_pid1([PYTHON, "-m", "pyboss.demo"])
    os.kill(boss.init, signal.SIGINT)
    assert boss.proc.wait(60) == 0
    assert "stopping: SIGTERM to every generation" in boss.output()


PODMAN_SCRIPT = os.path.join(APPS, "podman_rootfs.sh")


def test_under_podman_sighup_reloads_under_load_and_stop_drains(start_pyboss, tmp_path, request):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (tests/debian-packages lists it)")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    store = tempfile.mkdtemp(prefix="pyboss-podman-", dir="/tmp")   # runroot: 50 chars at most
    request.addfinalizer(lambda: shutil.rmtree(store, ignore_errors=True))
    # podman's default RLIMIT_NOFILE (1048576) and RLIMIT_NPROC can be above what the
    # host lets even root set without CAP_SYS_RESOURCE: ask for modest ones.
    conf = tmp_path / "containers.conf"
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=%d:%d", "nproc=4096:4096"]\n'
                    % (nofile, nofile))
    name = "pyboss-test-%d" % os.getpid()
    podman = ["podman", "--root", store + "/root", "--runroot", store + "/run"]
    boss = start_pyboss([PYTHON, "-m", "pyboss.demo"], "--stop-timeout", "8",
                        wrapper=["unshare", "--mount", "sh", PODMAN_SCRIPT, str(rootfs),
                                 store, name],
                        env={"CONTAINERS_CONF": str(conf)}, wait_ready=False)

    def serving():
        assert boss.proc.poll() is None, "podman run exited: %s" % boss.output()
        return os.path.exists(boss.control) and boss.serving()
    wait_until(serving, what="pyboss to serve in the container")
    assert boss.status()["pid"] == 1           # PID 1 of the container
    with Load(boss.address(), threads=4) as load:
        for generation in range(2, 5):
            kill = subprocess.run(podman + ["kill", "-s", "HUP", name], capture_output=True,
                                  text=True, timeout=60)
            assert kill.returncode == 0, kill.stderr
            wait_until(lambda: (boss.serving() or {}).get("number") == generation,
                       what="generation %d to serve after podman kill -s HUP" % generation)
    print("\npodman: 3 'podman kill -s HUP' under load: %d requests, %d failed"
          % (len(load.results), len(load.errors)))
    assert load.errors == []
    stop = subprocess.run(podman + ["stop", "-t", "10", name], capture_output=True, text=True,
                          timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert boss.proc.wait(60) == 0             # podman run: the container's exit status
    assert "every generation is gone; exiting with status 0" in boss.output()


def containerfile_instruction(text, instruction):
    """The exec-form JSON array of a Containerfile instruction (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if line.startswith(instruction + " "):
            rest = line[len(instruction) + 1:]
            return json.loads(rest[rest.index("["):])
    raise AssertionError("no %s in the Containerfile" % instruction)


def test_example_containerfile_entrypoint_runs_as_pid1_and_its_healthcheck_passes(tmp_path):
    """The image's ENTRYPOINT + CMD, run as PID 1 of fresh PID, mount and network
    namespaces (no image needed: the host has pyboss); its HEALTHCHECK from inside."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "examples", "container", "Containerfile")) as f:
        text = f.read()
    local = {"pyboss": PYBOSS, "python3": [PYTHON]}
    command = containerfile_instruction(text, "ENTRYPOINT") + containerfile_instruction(text, "CMD")
    command = [part for word in command for part in local.get(word, [word])]
    healthcheck = containerfile_instruction(text, "HEALTHCHECK")
    healthcheck = [part for word in healthcheck for part in local.get(word, [word])]
    # A private /run (pyboss's default control socket) and a loopback of its own.
    inside = "mount -t tmpfs tmpfs /run && ip link set lo up && exec \"$@\""
    log = open(tmp_path / "container.log", "w")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net",
                             "sh", "-c", inside, "sh"] + command, stdout=log, stderr=subprocess.STDOUT)
    try:
        init = wait_until(lambda: children(proc.pid), what="PID 1")[0][0]
        enter = ["nsenter", "-t", str(init), "-m", "-n", "-p", "--"]

        def healthy():
            assert proc.poll() is None, (tmp_path / "container.log").read_text()
            return subprocess.run(enter + healthcheck, capture_output=True, text=True,
                                  timeout=TIMEOUT).returncode == 0
        wait_until(healthy, what="the HEALTHCHECK to pass")
        result = subprocess.run(enter + healthcheck, capture_output=True, text=True, timeout=TIMEOUT)
        assert result.stdout.startswith("serving: generation 1 (pid "), result.stderr
        os.kill(init, signal.SIGHUP)
        wait_until(lambda: "serving: generation 2 " in subprocess.run(
            enter + healthcheck, capture_output=True, text=True, timeout=TIMEOUT).stdout,
            what="generation 2 after SIGHUP")
        os.kill(init, signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
