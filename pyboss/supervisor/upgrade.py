"""`pyboss upgrade` and SIGUSR2: the supervisor replaces its own code, the app runs on.

The supervisor exec()s the pyboss installed now (the same path it was loaded from: a
new .deb, a `pip install -U`) in its own process. exec() keeps the pid (systemd's
MAINPID), the children (every generation stays pyboss's child) and every fd that is
not close-on-exec: the listeners, the control and notify sockets, the state memfd and
the connections of the clients waiting for the answer. The new code restores the
generations, their deadlines and the history from the state it is handed, then
answers those clients with its version.

exec() is a point of no return, so the new code is tried first: a separate process
imports it and checks that it understands this state. If that fails, nothing was
replaced: the old code goes on supervising and the clients get the reason. A reload in
progress is finished first (the upgrade waits for it), and so is a `pyboss scale` waiting
for its new workers.
"""
import os
import signal
import sys

from .. import __version__

TRIAL = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
         "from pyboss.supervisor.supervise import check_handoff; check_handoff()")
TRIAL_TIMEOUT = 60.0
BLOCKED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def package_parent():
    """The directory holding the pyboss package this code came from."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Upgrader:
    def __init__(self, supervisor, handoff, exec_supervisor):
        self.supervisor = supervisor
        self.handoff = handoff              # () -> the state the new image starts from
        self.exec_supervisor = exec_supervisor
        self.waiters = []                   # control connections; None for a SIGUSR2

    def request(self, conn):
        if conn is not None:
            # A reload under way first, then the trial, then the new code's start.
            settings = self.supervisor.settings
            conn.accepted(2 * settings.ready_timeout + TRIAL_TIMEOUT + 30)
        self.waiters.append(conn)
        self.supervisor.log("upgrade", "upgrade requested (pyboss %s running)" % __version__)

    def __call__(self):
        """After every loop turn: upgrade once asked and no reload is under way."""
        supervisor = self.supervisor
        if not self.waiters or supervisor.pending is not None or supervisor.scale_waiters:
            return      # a reload, or a `pyboss scale` waiting for its workers, ends first
        if supervisor.stopping or supervisor.finished:
            return self.answer({"ok": False, "error": "pyboss is stopping"})
        self.upgrade()

    def answer(self, reply):
        waiters, self.waiters = self.waiters, []
        for conn in waiters:
            if conn is not None:
                conn.reply(reply)

    def upgrade(self):
        supervisor = self.supervisor
        state = self.handoff()
        state["upgrade"] = {"from": __version__,
                            "replies": [self._inherit(c) for c in self.waiters if c is not None]}
        error = self.trial(state)
        if error is not None:
            for fd in state["upgrade"]["replies"]:
                os.set_inheritable(fd, False)
            supervisor.log("upgrade-failed", "upgrade failed, pyboss %s keeps supervising: %s"
                           % (__version__, error), level="error")
            return self.answer({"ok": False, "error": error})
        supervisor.log("upgrade-exec", "handing over to the pyboss installed now")
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
        try:
            self.exec_supervisor(state)         # returns only if exec() failed
            error = "cannot exec %s" % sys.executable
        except OSError as e:
            error = "cannot exec %s: %s" % (sys.executable, e.strerror)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        supervisor.log("upgrade-failed", error, level="error")
        self.answer({"ok": False, "error": error})

    @staticmethod
    def _inherit(conn):
        conn.sock.setblocking(True)
        os.set_inheritable(conn.fileno(), True)
        return conn.fileno()

    @staticmethod
    def trial(state):
        """None if the installed pyboss can take over from state, else why not."""
        import json
        import subprocess       # only here: the supervisor image stays lean otherwise
        try:
            result = subprocess.run([sys.executable, "-c", TRIAL, package_parent()],
                                    input=json.dumps(state), capture_output=True, text=True,
                                    timeout=TRIAL_TIMEOUT, close_fds=True)
        except subprocess.TimeoutExpired:
            return "the installed pyboss did not start within %gs" % TRIAL_TIMEOUT
        except OSError as e:
            return "cannot run %s: %s" % (sys.executable, e.strerror)
        if result.returncode != 0:
            lines = [l for l in result.stderr.splitlines() if l.strip()]
            return "the installed pyboss cannot take over: %s" % (
                lines[-1] if lines else "exit status %d" % result.returncode)
        return None
