"""Real pyboss processes, a real load client, and /proc inspection for the tests."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

PYTHON = sys.executable
PYBOSS = [PYTHON, "-m", "pyboss"]
TIMEOUT = 60     # generous: the machines are shared and noisy


def wait_until(predicate, timeout=TIMEOUT, what="condition"):
    """Poll for a state that no event announces (e.g. a process gone from /proc)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.02)


def write_app(directory, flags=""):
    """A launcher whose next 'build' the test changes by rewriting flags."""
    flags_file = os.path.join(directory, "flags")
    with open(flags_file, "w") as f:
        f.write(flags)
    app = os.path.join(directory, "app")
    with open(app, "w") as f:
        f.write("#!/bin/sh\nexec %s -m pyboss.demo $(cat %s) \"$@\"\n" % (PYTHON, flags_file))
    os.chmod(app, 0o755)
    return app, flags_file


IMPORT_ERROR = "ImportError: no module named nope"


def write_breakable_app(directory):
    """The demo app, announcing itself on stdout; while the returned marker file exists the
    next build is broken: a Python traceback ending in IMPORT_ERROR, exit status 1."""
    marker = os.path.join(directory, "broken")
    app = os.path.join(directory, "breakable-app")
    with open(app, "w") as f:
        f.write("#!/bin/sh\n"
                "echo \"generation $PYBOSS_GENERATION starting as pid $$\"\n"
                "if [ -e %s ]; then exec %s -c 'raise ImportError(\"no module named nope\")'; fi\n"
                "exec %s -m pyboss.demo\n" % (marker, PYTHON, PYTHON))
    os.chmod(app, 0o755)
    return app, marker


class Notifications:
    """A NOTIFY_SOCKET for pyboss itself, so tests await READY=1 instead of sleeping."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "upstream.notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait_for(self, field, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.messages):
                if field in message.split("\n"):
                    del self.messages[:i + 1]
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise AssertionError("pyboss did not send %s within %ss" % (field, timeout))
            self.messages.append(self.sock.recv(4096).decode())

    def next_message(self, timeout=TIMEOUT):
        """The next message pyboss sent, in the order sent."""
        if self.messages:
            return self.messages.pop(0)
        if not select.select([self.sock], [], [], timeout)[0]:
            raise AssertionError("pyboss sent nothing within %ss" % timeout)
        return self.sock.recv(4096).decode()

    def close(self):
        self.sock.close()


class LoggedProcess:
    """A process under test whose output goes to self.log_path, with an upstream notify
    socket; subclasses set proc, log, log_path and upstream."""

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        terminate(self.proc)
        self.log.close()
        self.upstream.close()


class Pyboss(LoggedProcess):
    """One `pyboss exec` under test, with its control socket in a temp dir."""

    def __init__(self, tmp_path, command, *options, listen=("127.0.0.1:0",), env=None,
                 wait_ready=True, name="t", wrapper=(), control=None, cwd=None):
        self.dir = str(tmp_path)
        os.makedirs(self.dir, exist_ok=True)
        # control: another pyboss's control socket (one started after it died).
        self.control = control or os.path.join(self.dir, name + ".sock")
        self.upstream = Notifications(self.dir)
        args = PYBOSS + ["exec", "--control", self.control]
        for spec in listen:
            args += ["--listen", spec]
        args += list(options) + ["--"] + list(command)
        full_env = dict(os.environ, NOTIFY_SOCKET=self.upstream.path, **(env or {}))
        self.log_path = os.path.join(self.dir, name + ".log")
        self.log = open(self.log_path, "w")
        # wrapper: what runs pyboss, e.g. unshare for a PID namespace of its own, or
        # prlimit for a smaller fd limit
        self.proc = subprocess.Popen(list(wrapper) + args, env=full_env, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=cwd)
        self.env = full_env
        if wait_ready:
            self.upstream.wait_for("READY=1")

    @property
    def pid(self):
        return self.proc.pid

    def cli(self, *args, timeout=TIMEOUT, env=None):
        return subprocess.run(PYBOSS + list(args) + ["--control", self.control],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def status(self):
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def address(self, index=0):
        addr = self.status()["listeners"][index]["address"]
        host, _, port = addr.rpartition(":")
        return host.strip("[]"), int(port)

    def serving(self, status=None):
        """The serving generation, or None between a crash and the respawn."""
        found = [g for g in (status or self.status())["generations"] if g["state"] == "serving"]
        return found[0] if found else None

    def reload(self, timeout=TIMEOUT):
        return self.cli("reload", "--wait", timeout=timeout)

    def stop(self):
        result = self.cli("stop")
        self.proc.wait(TIMEOUT)
        return result



def terminate(proc):
    """SIGTERM, and SIGKILL only if it does not go: tests leave no process behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_until_closed(sock):
    """Everything sock receives until the peer closes."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def http_get(address, path="/", timeout=10):
    """One request on a fresh connection; returns the parsed JSON body or raises."""
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: t\r\n\r\n")
        data = read_until_closed(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise ValueError("bad reply: %r" % data[:200])
    return json.loads(body)



def await_generation(address, number):
    """Until generation number answers at address: after a reload's verdict the old
    generation may still take a request or two while it stops accepting."""
    wait_until(lambda: http_get(address)["generation"] == number,
               what="generation %d to answer" % number)

class Load:
    """Client threads, a fresh connection per request, every failure counted."""

    def __init__(self, address, threads=6, path="/"):
        self.address, self.path = address, path
        self.results = []            # (start time, latency, generation or None, error or None)
        self.answers = []            # (start time, end time, pid) of every answered request
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.done.is_set():
            start = time.monotonic()
            try:
                reply, error = http_get(self.address, self.path), None
            except Exception as e:  # noqa: BLE001 - every kind of failure is a finding
                reply, error = None, "%s: %s" % (type(e).__name__, e)
            end = time.monotonic()
            with self.lock:
                self.results.append((start, end - start, reply and reply["generation"], error))
                if reply:
                    self.answers.append((start, end, reply["pid"]))

    def __enter__(self):
        for t in self.threads:
            t.start()
        wait_until(lambda: len(self.results) >= 10, what="the load to get going")
        return self

    def __exit__(self, *exc):
        self.done.set()
        for t in self.threads:
            t.join(TIMEOUT)

    @property
    def errors(self):
        return [r[3] for r in self.results if r[3]]

    @property
    def worst_latency(self):
        return max(r[1] for r in self.results)

    def generations(self):
        return {r[2] for r in self.results if r[2] is not None}


def children(pid):
    """(pid, state) of every live child of pid, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0].decode()))
    return found


def socket_inodes(pid):
    """The inodes of every socket pid holds open, from /proc/PID/fd."""
    found = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            found.add(int(link[8:-1]))
    return found


def install_build(site, version):
    """Copy this checkout's pyboss package into site/ as version VERSION: the 'pyboss
    installed now' for a supervisor started with PYTHONPATH=site."""
    import shutil
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyboss")
    target = os.path.join(str(site), "pyboss")
    staging = target + ".new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
    init = os.path.join(staging, "__init__.py")
    with open(init) as f:
        text = f.read()
    with open(init, "w") as f:
        f.write(re.sub(r'__version__ = "[^"]*"', '__version__ = "%s"' % version, text, count=1))
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    return target


def open_fds(pid):
    return sorted(int(fd) for fd in os.listdir("/proc/%d/fd" % pid))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid, "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
