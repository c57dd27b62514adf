"""A real `pyboss start-server` (or Perl's start_server) under test, with a real
start_server-style app (tests/apps/starter_app.py) and its files in a temp dir."""
import json
import os
import signal
import socket
import subprocess

from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, LoggedProcess, Notifications, wait_until

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "starter_app.py")


def request_unix(path, timeout=10):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        return _read_answer(conn)


def request_tcp(address, timeout=10):
    with socket.create_connection(address, timeout=timeout) as conn:
        return _read_answer(conn)


def _read_answer(conn):
    conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return json.loads(data)
        data += chunk


def request_udp(address, timeout=10):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"hello", address)
        return json.loads(sock.recv(65536))


def ports_of(server_starter_port):
    """{'127.0.0.1:4000': 3, 'app.sock': 5} from 'HOST:PORT=FD;PATH=FD'."""
    return {k: int(v) for k, _, v in (e.rpartition("=") for e in server_starter_port.split(";"))}


class StartServer(LoggedProcess):
    """`pyboss start-server ARGS -- python starter_app.py FLAGS_FILE` in directory d."""

    def __init__(self, d, *args, flags="", wait=True, env=None, command=None, perl=False):
        self.dir = str(d)
        self.sock = os.path.join(self.dir, "app.sock")
        self.pid_file = os.path.join(self.dir, "app.pid")
        self.status_file = os.path.join(self.dir, "app.status")
        self.flags_file = os.path.join(self.dir, "flags")
        self.set_flags(flags)
        self.upstream = Notifications(self.dir)
        starter = ["start_server"] if perl else PYBOSS + ["start-server"]
        command = command or [PYTHON, APP, self.flags_file]
        self.log_path = os.path.join(self.dir, "start_server.log")
        self.log = open(self.log_path, "w")
        full_env = dict(os.environ, NOTIFY_SOCKET=self.upstream.path, **(env or {}))
        self.proc = subprocess.Popen(starter + list(args) + ["--"] + command, cwd=self.dir,
                                     env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.upstream.wait_for("READY=1")

    def set_flags(self, text):
        with open(self.flags_file, "w") as f:
            f.write(text)

    def cli(self, *args, timeout=TIMEOUT):
        return subprocess.run(PYBOSS + ["start-server"] + list(args), capture_output=True,
                              text=True, timeout=timeout, cwd=self.dir)

    def get(self):
        return request_unix(self.sock)

    def status(self):
        """{generation: pid} from the status file."""
        with open(self.status_file) as f:
            return {int(g): int(p) for g, _, p in (line.partition(":") for line in f.read().split())}

    def wait_status(self, generations, what=None):
        def matches():
            try:
                return sorted(self.status()) == sorted(generations)
            except FileNotFoundError:
                return False
        wait_until(matches, what=what or "status file listing generations %s" % generations)
        return self.status()

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)

