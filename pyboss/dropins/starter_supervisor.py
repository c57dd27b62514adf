"""The core supervisor with start_server 0.35's rules.

What changes against `pyboss exec`:
- a generation counts as started once alive for --interval seconds (or, opted in,
  at READY=1); one that dies first is retried, a reload's new one included, at
  most once per --interval, forever, as start_server does;
- the old generations get --signal-on-hup after --kill-old-delay seconds, and
  nothing is ever SIGKILLed: start_server waits for its workers as long as they run;
- the status file lists "GEN:PID" of the serving and the draining generations;
- ENVDIR (also KILL_OLD_DELAY, ENABLE_AUTO_RESTART, AUTO_RESTART_INTERVAL from it)
  is read again before every spawn and every auto-restart check.
"""
import os
import signal
import time

from .. import values
from ..supervisor.log import EventLog
from .starter_files import ignore_enoent, load_envdir, write_status_file
from ..supervisor.core import Supervisor

NEVER = 1e6          # seconds; start_server never SIGKILLs, the timers are cancelled
AUTO_RESTART_TICK = 1.0


def _number(text, default):
    """A number of seconds from the environment or the envdir, read again at every use:
    a bad value (inf, nan, 1e10) falls back to the default instead of breaking a timer."""
    try:
        return values.seconds(text)
    except ValueError:
        return default


class StarterLog(EventLog):
    """The core's log, saying what start_server does where the two differ."""

    def __call__(self, event, message, level="info", generation=None, pid=None, **fields):
        if event == "stop":      # the core would announce a SIGKILL that never comes
            message = message.split(", SIGKILL after")[0] + "; waiting for them to exit"
        super().__call__(event, message, level, generation, pid, **fields)


class StarterSupervisor(Supervisor):
    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)   # one worker: no TTIN/TTOU
    def __init__(self, settings, listeners, control, notify, log, options):
        super().__init__(settings, listeners, control, notify, log)
        self.options = options
        # After Upstream took NOTIFY_SOCKET: what every generation inherits, before ENVDIR.
        self.base_env = dict(os.environ, **options.env)
        self.status_file = options.status_file
        self.status_written = None
        self.retry_timer = None
        self.last_spawn = 0.0
        self.last_restart = time.monotonic()
        self.signal_on_term = settings.stop_signal

    def run(self):
        # ENVDIR may switch auto-restart on later, so it is checked with one too.
        if self.base_env.get("ENVDIR") or self.auto_restart_enabled(self.base_env):
            self.call_later(self.auto_restart_tick_length(), self.auto_restart_check)
        return super().run()

    # -- the environment, read again each time ---------------------------------------

    def current_env(self):
        env = dict(self.base_env)
        env.update(load_envdir(env.get("ENVDIR")))
        return env

    def child_env(self, env):
        env.update(self.options.env)
        env.update(load_envdir(self.base_env.get("ENVDIR")))
        env["SERVER_STARTER_PORT"] = self.listeners.server_starter_port()
        env["SERVER_STARTER_GENERATION"] = str(self.number)
        return env

    def kill_old_delay(self):
        env = self.current_env()
        if env.get("KILL_OLD_DELAY") is not None:
            return max(0.0, _number(env["KILL_OLD_DELAY"], 0.0))
        return 5.0 if self.auto_restart_enabled(env) else 0.0

    @staticmethod
    def auto_restart_enabled(env):
        return env.get("ENABLE_AUTO_RESTART", "") not in ("", "0")

    @staticmethod
    def auto_restart_interval(env):
        return _number(env.get("AUTO_RESTART_INTERVAL"), 0) or 360.0

    # -- spawning and the started rule -------------------------------------------------

    def spawn(self, purpose):
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        self.last_spawn = time.monotonic()
        super().spawn(purpose)

    def next_backoff(self):
        # start_server tries again once --interval has passed since the last attempt.
        return max(0.1, self.last_spawn + self.options.interval - time.monotonic())

    def pending_failed(self, gen):
        retry_reload = self.pending_purpose == "reload" and self.current is not None
        super().pending_failed(gen)
        if retry_reload and not self.stopping and self.pending is None:
            delay = self.next_backoff()
            self.log("retry", "new worker %d seems to have failed to start; trying again in "
                     "%.1fs while %s keeps serving" % (gen.pid, delay, self.current),
                     level="warning", generation=gen.number, pid=gen.pid)
            self.retry_timer = self.call_later(delay, self.retry)

    def retry(self):
        self.retry_timer = None
        if not self.stopping and self.pending is None:
            self.request_reload()

    def promote(self, gen):
        # Written before the core tells anyone (READY=1, reload --wait) the worker started.
        self.update_status_file(promoting=gen)
        super().promote(gen)
        self.last_restart = time.monotonic()

    # -- old generations ---------------------------------------------------------------

    def retire(self, gen, signum, timeout):
        if signum == signal.SIGKILL:       # a new generation that failed: no grace
            return super().retire(gen, signum, timeout)
        delay = self.kill_old_delay()
        if delay <= 0:
            super().retire(gen, signum, timeout)
            gen.deadline_timer.cancel()    # start_server never SIGKILLs an old worker
            return
        self.log("kill-old-delay", "%s gets %s in %gs (kill-old-delay)"
                 % (gen, signal.Signals(signum).name, delay), generation=gen.number, pid=gen.pid)
        super().retire(gen, 0, timeout)    # signal 0: draining from now on, signalled later
        gen.deadline_timer.cancel()
        gen.delayed_signal = signum
        gen.deadline_timer = self.call_later(delay, lambda: self.signal_old(gen))

    def signal_old(self, gen):
        signum = getattr(gen, "delayed_signal", None)
        gen.delayed_signal = None
        if signum:
            gen.signal(signum)

    def on_worker_exit(self, worker):
        super().on_worker_exit(worker)
        self.update_status_file()

    def update_status_file(self, promoting=None):
        if not self.status_file:
            return
        listed = [g for g in [self.current] + self.old
                  if g is not None and g.alive and g.ready_after is not None] + [promoting]
        listed = [g for g in listed if g is not None]
        content = sorted((g.number, g.pid) for g in listed)
        if content != self.status_written:
            try:
                write_status_file(self.status_file, content)
            except OSError as e:      # serving matters more than the file: say it, go on
                self.log("status-file", "cannot write %s: %s" % (self.status_file, e.strerror),
                         level="error")
                return
            self.status_written = content

    # -- auto-restart ------------------------------------------------------------------

    def auto_restart_tick_length(self):
        env = self.current_env()
        if not self.auto_restart_enabled(env):
            return AUTO_RESTART_TICK
        return min(AUTO_RESTART_TICK, self.auto_restart_interval(env) / 4)

    def auto_restart_check(self):
        if self.stopping:
            return
        env = self.current_env()
        if self.auto_restart_enabled(env) and self.current is not None and self.pending is None:
            interval = self.auto_restart_interval(env)
            elapsed = time.monotonic() - self.last_restart
            draining = any(g.alive for g in self.old if g.ready_after is not None)
            if elapsed >= interval and not draining:
                self.log("auto-restart", "auto-restart after %.0fs (interval=%g)" % (elapsed, interval))
                self.request_reload()
            elif elapsed >= 2 * interval:
                self.log("auto-restart", "auto-restart forced after %.0fs with old workers still "
                         "running (interval=%g)" % (elapsed, interval))
                self.request_reload()
        self.call_later(self.auto_restart_tick_length(), self.auto_restart_check)

    # -- stop --------------------------------------------------------------------------

    def handle_SIGTERM(self):
        self.settings.stop_signal = self.signal_on_term
        self.stop()

    def handle_SIGINT(self):
        self.settings.stop_signal = signal.SIGTERM      # start_server: TERM on anything but TERM
        super().handle_SIGINT()

    def stop(self, waiter=None):
        first = not self.stopping
        super().stop(waiter)
        if not first:
            return
        for gen in self.old:             # still waiting out kill-old-delay
            if getattr(gen, "delayed_signal", None):
                gen.delayed_signal = None
                gen.deadline_timer.cancel()
                if self.settings.drain_signal == self.settings.stop_signal:
                    gen.signal(self.settings.stop_signal)   # the core took it as sent

    def kill_everything(self):
        pass                             # start_server waits for its workers, however long

    def shutdown(self, abandon=False):
        try:
            super().shutdown(abandon)
        finally:
            if self.status_written is not None:
                ignore_enoent(os.unlink, self.status_file)
