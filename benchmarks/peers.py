"""The supervisors compared, each running the same app on 127.0.0.1, each with an honest
"reload complete" moment:

- pyboss: `pyboss reload --wait` returned 0 (new generation sent READY=1, old signalled);
- start_server: its status file lists the new generation, which it writes right before it
  sends SIGTERM to the old one (after its fixed --interval, default 1 s);
- gunicorn: SIGHUP, then the first reply that comes from a new worker (gunicorn signals
  the old worker as soon as it has forked the new one, so that is the later event);
- app alone: no supervisor, no reload; the throughput baseline and the memory floor.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from benchmarks import install, procfs
from pyboss.supervisor import control
from benchmarks.load import request_once, wait_until_serving

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ReloadOutcome:
    def __init__(self, requested, seconds, ok, message=""):
        self.requested = requested  # on the load client's clock, seconds since load start
        self.seconds = seconds      # request to "reload complete" (or to giving up)
        self.ok = ok
        self.message = message


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_session(process, timeout):
    """SIGTERM to process, then SIGKILL to whatever is left of its process group (it was
    started in a new session) after timeout; waits for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(key, None)
    env.update(extra)
    return env


class Peer:
    name = "?"
    supports_reload = True

    def __init__(self, workdir, config_path):
        self.workdir = workdir
        self.config_path = config_path
        self.port = None
        self.process = None
        self.log_path = os.path.join(workdir, "%s.log" % self.name)

    @classmethod
    def unavailable_reason(cls):
        """None when the peer can run here (after installing it if need be)."""
        return None

    @property
    def supervisor_pid(self):
        return self.process.pid if self.process else None

    def app_command(self):
        return [sys.executable, "-m", "benchmarks.app", self.config_path]

    def _spawn(self, argv, env=None, pass_fds=()):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env or child_env(), cwd=REPO, pass_fds=pass_fds,
                start_new_session=True)

    def start(self):
        self.port = free_port()
        self._launch()
        try:
            wait_until_serving(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError("%s did not start serving; see %s" % (self.name, self.log_path))
        return self

    def app_pids(self):
        return procfs.descendants(self.supervisor_pid)

    def settle(self, timeout=15.0):
        """Wait until the old generations have drained away (one app process left)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(procfs.children(self.supervisor_pid)) > 1:
            time.sleep(0.05)

    def stop(self, timeout=15.0):
        if not self.process:
            return
        stop_session(self.process, timeout)


class Pyboss(Peer):
    name = "pyboss"
    options = []          # more `pyboss exec` options, e.g. --ready-grace 0

    @classmethod
    def unavailable_reason(cls):
        import importlib.util
        for module in ("pyboss.cli", "pyboss.demo"):
            try:
                found = importlib.util.find_spec(module)
            except ImportError:
                found = None
            if found is None:
                return "%s is not importable (run from the pyboss checkout)" % module
        return None

    @staticmethod
    def command():
        beside = os.path.join(os.path.dirname(sys.executable), "pyboss")
        if os.access(beside, os.X_OK):
            return [beside]
        return [sys.executable, "-c", "import sys; from pyboss.cli import main; "
                "sys.argv[0] = 'pyboss'; main()"]

    @property
    def control(self):
        return os.path.join(self.workdir, "pyboss.sock")

    def _launch(self):
        self._spawn(self.command() + [
            "exec", "--control", self.control, "--listen", "127.0.0.1:%d" % self.port]
            + self.options + ["--"] + self.app_command())

    def reload(self, clock, timeout=30.0):
        requested = clock()
        began = time.monotonic()
        try:
            done = subprocess.run(self.command() + ["reload", "--wait", "--control", self.control],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout, env=child_env())
        except subprocess.TimeoutExpired:
            return ReloadOutcome(requested, time.monotonic() - began, False,
                                 "no answer within %.0f s" % timeout)
        message = (done.stderr or done.stdout).decode(errors="replace").strip()
        return ReloadOutcome(requested, time.monotonic() - began, done.returncode == 0,
                             "exit %d%s" % (done.returncode, ": " + message if message else ""))

    def ask(self, request, timeout=30.0):
        """One request on the control socket: what the CLI does, minus its start."""
        return control.request(self.control, request, timeout) or {}

    def reload_via_socket(self, timeout=30.0):
        began = time.monotonic()
        answer = self.ask({"command": "reload", "wait": True}, timeout)
        ok = bool(answer.get("ok"))
        return ReloadOutcome(None, time.monotonic() - began, ok, "" if ok else str(answer))

    def status(self):
        return self.ask({"command": "status"})


class StartServer(Peer):
    name = "start_server"

    def __init__(self, workdir, config_path, interval=None):
        super().__init__(workdir, config_path)
        self.interval = interval
        self.pid_file = os.path.join(workdir, "start_server.pid")
        self.status_file = os.path.join(workdir, "start_server.status")

    @classmethod
    def unavailable_reason(cls):
        return install.ensure_start_server()

    def _launch(self):
        argv = ["start_server", "--port=127.0.0.1:%d" % self.port,
                "--pid-file=" + self.pid_file, "--status-file=" + self.status_file]
        if self.interval is not None:
            argv.append("--interval=%s" % self.interval)
        self._spawn(argv + ["--"] + self.app_command())

    def start(self):
        super().start()
        # The app answers before start_server has declared it (after --interval):
        # a reload asked for earlier would be counted against the first generation.
        deadline = time.monotonic() + 30
        while not self.generations() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def generations(self):
        try:
            with open(self.status_file) as f:
                return [int(line.split(":")[0]) for line in f if ":" in line]
        except FileNotFoundError:
            return []

    def reload(self, clock, timeout=30.0):
        expected = max(self.generations(), default=0) + 1
        requested = clock()
        began = time.monotonic()
        self.process.send_signal(signal.SIGHUP)
        while time.monotonic() - began < timeout:
            if max(self.generations(), default=0) >= expected:
                return ReloadOutcome(requested, time.monotonic() - began, True,
                                     "status file lists generation %d" % expected)
            time.sleep(0.002)
        return ReloadOutcome(requested, time.monotonic() - began, False,
                             "generation %d not in the status file after %.0f s"
                             % (expected, timeout))

    def restart_command(self, clock, timeout):
        """start_server's own reload command: `start_server --restart`."""
        requested = clock()
        began = time.monotonic()
        try:
            done = subprocess.run(["start_server", "--restart", "--pid-file=" + self.pid_file,
                                   "--status-file=" + self.status_file],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return ReloadOutcome(requested, time.monotonic() - began, False,
                                 "`start_server --restart` still waiting after %g s" % timeout)
        text = done.stdout.decode(errors="replace").strip().splitlines()
        return ReloadOutcome(requested, time.monotonic() - began, done.returncode == 0,
                             "exit %d%s" % (done.returncode, ": " + text[-1] if text else ""))


class Gunicorn(Peer):
    name = "gunicorn"

    @classmethod
    def unavailable_reason(cls):
        return install.ensure_python_package("gunicorn", "gunicorn>=21")

    def _launch(self):
        argv = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:%d" % self.port,
                "--workers", "1", "--worker-class", "gthread", "--threads", "4",
                "--graceful-timeout", "5", "--chdir", REPO]
        if self.has_control_socket():
            argv.append("--no-control-socket")  # gunicorn >= 24 would open one in ~/.gunicorn
        self._spawn(argv + ["benchmarks.wsgi_app:application"],
                    env=child_env(BENCH_APP_CONFIG=self.config_path))

    _control_socket_option = None

    @classmethod
    def has_control_socket(cls):
        if cls._control_socket_option is None:
            done = subprocess.run([sys.executable, "-m", "gunicorn", "--help"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            cls._control_socket_option = b"--no-control-socket" in done.stdout
        return cls._control_socket_option

    def reload(self, clock, timeout=30.0):
        old_workers = set(procfs.children(self.supervisor_pid))
        requested = clock()
        began = time.monotonic()
        self.process.send_signal(signal.SIGHUP)
        while time.monotonic() - began < timeout:
            error, pid = request_once(self.port, max(0.1, timeout - (time.monotonic() - began)))
            if error is None and pid not in old_workers:
                return ReloadOutcome(requested, time.monotonic() - began, True,
                                     "new worker %d answered" % pid)
            time.sleep(0.002)
        return ReloadOutcome(requested, time.monotonic() - began, False,
                             "no new worker answered within %.0f s" % timeout)


class AppAlone(Peer):
    """The app on a socket the benchmark binds itself: no supervisor at all."""
    name = "app alone"
    supports_reload = False

    def __init__(self, workdir, config_path):
        super().__init__(workdir, config_path)
        self.log_path = os.path.join(workdir, "app-alone.log")
        self.listener = None

    def _launch(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(socket.SOMAXCONN)
        fd = self.listener.fileno()
        self._spawn(self.app_command(), env=child_env(BENCH_LISTEN_FD=str(fd)), pass_fds=(fd,))

    @property
    def supervisor_pid(self):
        return None

    def app_pids(self):
        return [self.process.pid] if self.process else []

    def stop(self, timeout=15.0):
        super().stop(timeout)
        if self.listener:
            self.listener.close()


PEERS = {"pyboss": Pyboss, "start_server": StartServer, "gunicorn": Gunicorn,
         "alone": AppAlone}
