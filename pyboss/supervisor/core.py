"""The supervisor: generations on shared listeners, and the reload state machine.

SERVING(N) --reload--> N+1 starting --ready--> SERVING(N+1), N draining
                                    --exit/timeout--> N+1 killed, SERVING(N)
Reload requests that arrive while N+1 starts coalesce into one follow-up reload.
A generation is its workers (workers.py; one by default): it is ready once every worker
is. --reload-strategy rolling replaces the workers a few at a time instead (rolling.py).
"""
import os
import signal
import time
from collections import deque

from .generation import DRAINING, Generation
from . import limits
from .loop import EventLoop, describe_failure
from .observe import Observations
from .readiness import Readiness
from .reaper import Reaper
from .sighup import SighupReloads
from .rolling import RollingReload
from .workers import WorkerSlots
from ..systemd.upstream import Upstream
from ..systemd.watchdog import Keepalive

STOPPING_MESSAGE = "pyboss is stopping"


class ReloadFailed(Exception):
    """A new generation did not become ready; the old one keeps serving."""


class Supervisor(RollingReload, WorkerSlots, SighupReloads, EventLoop):
    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGTTIN,
               signal.SIGTTOU)

    def __init__(self, settings, listeners, control, notify, log, upstream=None):
        super().__init__()
        self.settings = settings
        self.listeners = listeners
        self.control = control
        self.notify = notify
        self.log = log
        self.upstream = upstream or Upstream()
        self.keepalive = Keepalive(self)   # EXTEND_TIMEOUT_USEC=, WATCHDOG=1 to systemd
        self.readiness = Readiness(self)   # READY=1, --ready-after, --ready-probe, settling
        self.current = None           # the serving generation
        self.pending = None           # the generation starting up, if any
        self.pending_purpose = None   # "start" | "reload"
        self.waiters = []             # reload --wait callers, for the pending generation
        self.followup = None          # None, or the waiters of one coalesced next reload
        self.old = []                 # draining, or killed after failing, until reaped
        self.number = 0
        self.history = deque(maxlen=20)
        self.reload_requested_at = None
        self.respawn_timer = None
        self.failures = 0             # consecutive generations that never became ready
        self.crashes = 0              # consecutive deaths, for the backoff
        self.stopping = False
        self.stop_waiters = []
        self.exit_code = 0
        self.fatal = None
        self.observed = Observations(settings, self)   # counters, output, recent failures
        self.init_slots()
        control.serve(self, self.on_request, log)
        self.watch(notify, self.on_notify)
        self.reaper = Reaper(self)            # orphans, and generations as whole trees
        self.handle_SIGCHLD = self.reaper.reap
        self.changes = None                                  # --reload-on-change
        if settings.reload_on_change:
            from .watch import ChangeReloads    # only then: the supervisor stays small
            self.changes = ChangeReloads.start(self, settings)

    # -- life cycle -------------------------------------------------------------

    def run(self):
        limits.raise_nofile()
        self.install_signals()
        failed = False
        try:
            if not (self.current or self.pending or self.respawn_timer):
                self.spawn("start")     # else adopted workers serve, or start after backoff
            self.run_forever()
        except BaseException:         # noqa: BLE001 - pyboss's own bug: the app lives on
            failed = True
            self.event_failed(self.run_forever, fatal=True)
            self.exit_code = 70       # EX_SOFTWARE
        finally:
            self.restore_signals()
            self.shutdown(abandon=failed)
        return self.exit_code

    def event_failed(self, callback, fatal=False):
        self.log("bug", describe_failure(callback, fatal), level="error")

    def generations(self):
        gens = [self.current, self.pending] + self.old
        return sorted((g for g in gens if g is not None), key=lambda g: g.number)

    def spawn(self, purpose):
        """Start generation self.number + 1 with a worker in every slot."""
        self.respawn_timer = None
        self.number += 1
        gen = Generation(self.number)
        try:
            for slot in range(self.settings.workers):
                self.spawn_worker(gen, slot)
        except OSError as e:
            self.log("spawn-failed", "cannot start generation %d: %s"
                     % (self.number, e.strerror or e),
                     level="error")
            if gen.workers:         # the slots that did start: killed, reaped from old
                self.retire(gen, signal.SIGKILL, 0)
            self.respawn_timer = self.call_later(self.next_backoff(), lambda: self.spawn(purpose))
            return
        self.pending, self.pending_purpose = gen, purpose
        self.log("spawn", "%s started for %s" % (gen, purpose), generation=gen.number, pid=gen.pid)

    def child_env(self, env):
        """A hook: the environment generation self.number gets (start_server adds its own)."""
        return env

    def on_notify(self):
        for pid, fields, fds in self.notify.receive():
            for fd in fds:
                os.close(fd)      # pyboss keeps no fds for its apps
            worker, gen = self.owner_of(pid)
            if worker is None:
                self.log("notify-rejected", "ignored notify message from pid %d: not one of "
                         "pyboss's generations" % pid, level="warning", pid=pid)
                continue
            if "STATUS" in fields:
                worker.status_text = fields["STATUS"]
            self.keepalive.on_notify(gen, fields)
            if not self.stopping:
                self.readiness.on_notify(worker, fields)

    # -- the reload state machine -------------------------------------------------

    def promote(self, gen):
        gen.mark_ready()
        previous, self.current, self.pending = self.current, gen, None
        self.failures = 0
        self.reset_slots()
        self.log("ready", "%s ready after %.3fs" % (gen, gen.ready_after),
                 generation=gen.number, pid=gen.pid, ready_after="%.3f" % gen.ready_after)
        if previous is not None:
            self.retire(previous, self.settings.drain_signal, self.settings.drain_timeout)
        if self.pending_purpose == "reload":
            self.record_reload(gen, "ok", None)
        self.answer({"ok": True, "generation": gen.number, "pid": gen.pid})
        self.upstream.ready(self.status_line())
        self.start_followup()

    def pending_failed(self, gen):
        for worker in gen.workers.values():
            self.readiness.forget(worker)
        self.pending = None
        reason = gen.failure
        if gen.alive:
            self.retire(gen, signal.SIGKILL, 0)
        if self.stopping:
            return
        detail = reason + self.observed.failure(gen.failed_worker)   # its last lines, if known
        gen.last_lines = gen.failed_worker.last_lines
        # Success or not, systemd awaits a READY=1 for every RELOADING=1.
        self.upstream.reload_over("reload failed: %s; %s" % (detail, self.status_line()))
        if self.pending_purpose == "reload" and self.current is not None:
            self.record_reload(gen, "failed", reason)
            self.log("reload-failed", "reload failed: %s; %s keeps serving" % (detail, self.current),
                     level="error", generation=gen.number, pid=gen.pid)
            self.answer({"ok": False, "error": reason, "last_lines": gen.last_lines})
            self.start_followup()
            return
        self.failures += 1
        self.answer({"ok": False, "error": reason, "last_lines": gen.last_lines})
        if gen.exec_failed and self.number == 1:
            return self.die(2, reason)      # bad input: the command line reports it
        self.log("start-failed", detail, level="error", generation=gen.number, pid=gen.pid)
        if self.failures >= self.settings.crash_limit:
            return self.die(1, "giving up: %s failed %d times in a row without becoming ready "
                            "(last: %s)" % (self.settings.argv[0], self.failures, reason))
        self.schedule_respawn()

    def retire(self, gen, signum, timeout):
        """Send gen its last signal; SIGKILL it if it is still there after timeout."""
        gen.state = DRAINING
        self.old.append(gen)
        gen.signal(signum)
        self.reaper.on_drain(signum)
        if signum != signal.SIGKILL:
            gen.deadline_timer = self.call_later(timeout, lambda: gen.signal(signal.SIGKILL))
        # The limit counts generations: a rolling reload retires one worker at a time.
        draining = [g for g in self.old if g.alive]
        numbers = sorted({g.number for g in draining})
        excess = set(numbers[:max(0, len(numbers) - self.settings.max_draining)])
        for oldest in [g for g in draining if g.number in excess]:
            self.log("drain-limit", "%s killed: more than %d generations draining"
                     % (oldest, self.settings.max_draining), level="warning",
                     generation=oldest.number, pid=oldest.pid)
            oldest.signal(signal.SIGKILL)

    def on_worker_exit(self, worker):
        if not worker.reap():
            return
        self.unwatch(worker.pidfd)
        if worker.exec_fd is not None:
            self.on_exec(worker)   # an exec error can arrive in the same round as the exit
        worker.close()
        if worker.deadline_timer is not None:
            worker.deadline_timer.cancel()
        self.readiness.exited(worker)       # a death while settling says so
        self.readiness.forget(worker)
        gen = self.generation_of(worker)
        if gen is not None:
            gen.forget(worker)
            if not gen.alive:       # what the generation left behind drains like it
                self.reaper.generation_exited(gen, self.settings.drain_signal,
                                              self.settings.drain_timeout)
        if gen in self.old:
            if not gen.workers:
                self.old.remove(gen)
                if gen.deadline_timer is not None:
                    gen.deadline_timer.cancel()
            self.log("exit", "%s %s" % (worker, worker.exit_reason), generation=worker.number,
                     pid=worker.pid)
        elif gen is not None and gen is self.pending:
            self.pending_worker_failed(gen, worker)
        elif gen is not None and gen is self.current:
            self.serving_worker_exited(gen, worker)
        self.maybe_finish()

    def maybe_finish(self):     # stopped once nothing of any generation is left, orphans too
        if self.stopping and not self.finished \
                and not any(g.alive for g in self.generations()) \
                and not self.reaper.remaining():
            self.finish()

    def finish(self):
        self.finished = True
        self.log("stopped", "every generation is gone; exiting with status %d" % self.exit_code)

    def next_backoff(self):
        delay = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** self.crashes)
        self.crashes += 1
        return delay

    def schedule_respawn(self):
        delay = self.next_backoff()
        self.log("respawn", "starting a new generation in %.1fs" % delay, delay="%.1f" % delay)
        self.upstream.status("no generation serving; respawning in %.1fs" % delay)
        self.respawn_timer = self.call_later(delay, lambda: self.spawn("start"))

    def request_reload(self, waiter=None):
        self.reload_for([waiter] if waiter is not None else [])

    def reload_for(self, waiters):
        """One reload on behalf of all these callers (an empty list: a SIGHUP)."""
        if self.stopping:
            for waiter in waiters:
                waiter.reply({"ok": False, "error": STOPPING_MESSAGE})
            return
        if self.pending is not None or (self.current is None and self.respawn_timer is None):
            self.followup = (self.followup or []) + waiters
            return
        self.waiters.extend(waiters)
        self.reload_requested_at = (time.time(), time.monotonic())
        if self.current is None:        # waiting out a backoff: try again right away
            self.respawn_timer.cancel()
        self.upstream.reloading()
        if self.current is not None and self.settings.reload_strategy == "rolling":
            self.start_roll()
        else:
            if self.current is not None:
                self.log("reload", "reload requested; starting generation %d" % (self.number + 1))
            self.spawn("reload" if self.current is not None else "start")
        self.keepalive.extend_timeout()     # systemd's reload timeout runs from now

    def start_followup(self):
        waiters, self.followup = self.followup, None
        if waiters is not None:
            self.reload_for(waiters)

    def answer(self, reply):
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.reply(reply)

    def record_reload(self, gen, outcome, reason):
        requested, started = self.reload_requested_at or (gen.started, gen.started_mono)
        self.history.append(self.observed.reload(gen, outcome, reason, requested, started))

    # -- stop -----------------------------------------------------------------------

    def handle_SIGTERM(self):
        self.stop()

    def handle_SIGINT(self):
        if self.stopping:                 # a second ^C: do not wait any longer
            for gen in self.generations():
                gen.signal(signal.SIGKILL)
        self.stop()

    def stop(self, waiter=None):
        if waiter is not None:
            self.stop_waiters.append(waiter)
        if self.stopping:
            return
        self.stopping = True
        self.log("stop", "stopping: %s to every generation, SIGKILL after %gs"
                 % (signal.Signals(self.settings.stop_signal).name, self.settings.stop_timeout))
        self.upstream.stopping()
        if self.respawn_timer is not None:
            self.respawn_timer.cancel()
        self.cancel_slot_timers()
        failure = {"ok": False, "error": STOPPING_MESSAGE}
        self.answer(failure)
        self.fail_scale(STOPPING_MESSAGE)
        for waiter in self.followup or []:
            waiter.reply(failure)
        self.followup = None
        for gen in self.generations():
            if gen.state != DRAINING or self.settings.drain_signal != self.settings.stop_signal:
                gen.signal(self.settings.stop_signal)
        self.reaper.signal_strays(self.settings.stop_signal)
        self.call_later(self.settings.stop_timeout, self.kill_everything)
        self.maybe_finish()

    def kill_everything(self):
        for gen in self.generations():
            self.log("stop-timeout", "%s still running after %gs: SIGKILL"
                     % (gen, self.settings.stop_timeout), level="warning",
                     generation=gen.number, pid=gen.pid)
            gen.signal(signal.SIGKILL)
        self.reaper.signal_strays(signal.SIGKILL)

    def die(self, code, message):
        self.exit_code, self.fatal = code, message
        if code != 2:
            self.log("fatal", message, level="error")
        self.stop()

    def shutdown(self, abandon=False):
        """After a stop nothing is left to kill. After pyboss's own failure (abandon) the
        generations keep serving on their sockets: pyboss never takes the app down with it."""
        for gen in self.generations():
            self.log("abandoned", "pyboss is failing: %s keeps running without it" % gen,
                     level="error", generation=gen.number, pid=gen.pid)
        self.readiness.close()
        self.listeners.close(final=not self.generations())
        self.notify.close()
        self.control.close()
        self.close()
        for waiter in self.stop_waiters:
            waiter.reply({"ok": self.exit_code == 0, "exit_code": self.exit_code,
                          "error": self.fatal})

    # -- control socket ---------------------------------------------------------------

    def on_request(self, conn, request):
        """A valid request from the control server (control_wire checked it)."""
        command = request["command"]
        if command == "status":
            conn.reply(self.status())
        elif command == "reload" and request.get("wait"):
            self.reload_for_client(conn, after_sighup=request.get("after_sighup", False))
        elif command == "reload":
            self.request_reload()
            conn.reply({"ok": True, "queued": True})
        elif command == "scale":
            # New workers get --ready-timeout each, and a failing one its backoff.
            conn.accepted(self.settings.ready_timeout + self.settings.backoff_max)
            self.scale(request.get("workers"), conn)
        elif command == "stop":
            conn.accepted(self.settings.stop_timeout)
            self.stop(conn)
        else:       # "upgrade": supervise.py serves it where pyboss can upgrade in place
            conn.reply({"ok": False, "error": "this supervisor cannot %s itself" % command})

    def state(self):
        if self.stopping:
            return "stopping"
        if self.current is None:
            return "starting"
        return "reloading" if self.pending is not None else "serving"

    def status(self):
        return {"ok": True, "name": self.settings.name, "pid": os.getpid(),
                "state": self.state(), "command": self.settings.argv, **self.observed.status(),
                "workers": self.settings.workers, "reload_strategy": self.settings.reload_strategy,
                "generations": [g.as_dict() for g in self.generations()],
                "listeners": [l.as_dict() for l in self.listeners],
                "reloads": list(self.history), "orphans": self.reaper.as_dict(),
                "reload_on_change": self.changes and self.changes.as_dict()}

