"""Worker slots: the processes of a generation, each with its own readiness and respawn.

`pyboss exec --workers N` runs every generation as N processes on the same listeners,
in slots 0..N-1 (PYBOSS_WORKER). Each worker's READY=1 (or --ready-after) counts for that
worker alone; a starting generation is ready once every slot is. A serving worker that
dies is respawned alone in its slot, with backoff; a slot whose workers fail
--crash-limit times in a row without becoming ready is given up (the others serve on) until
the next reload or scale. A generation whose every worker is gone is started anew, as a
one-worker generation always was.

`scale` (the control command, SIGTTIN/SIGTTOU) changes N while serving: new slots start
ready-checked, surplus workers get the drain signal.
"""
import os
import signal
import time

from .. import sd
from .generation import Generation, Worker, is_descendant

MAX_WORKERS = 1024


class WorkerSlots:
    """The per-worker half of the Supervisor (a mixin: it shares the loop and state)."""

    def init_slots(self):
        self.slot_crashes = {}      # slot -> consecutive deaths, for its backoff
        self.slot_failures = {}     # slot -> workers in a row that never became ready
        self.slot_timers = {}       # slot -> the timer that refills it
        self.given_up = set()       # slots past the crash limit, until the next reload/scale
        self.scale_waiters = []

    def spawn_worker(self, gen, slot):
        """Fork a worker of generation gen into slot; raises OSError if it cannot."""
        extra = dict(self.keepalive.child_env(), PYBOSS_GENERATION=str(gen.number),
                     PYBOSS_WORKER=str(slot))
        names, fds = self.readiness.child_listeners(gen.number, slot, self.listeners)
        env = sd.child_env(os.environ, names, self.notify.path, extra)
        try:
            worker = self.observed.output.spawn(Worker.spawn, gen.number, slot,
                                                self.settings.argv, self.child_env(env), fds,
                                                self.settings.workers > 1)
        except OSError:
            self.readiness.spawn_failed(gen.number, slot)
            raise
        self.readiness.spawned(worker)
        worker.reaper = self.reaper     # signals reach the worker's whole process tree
        gen.workers[slot] = worker
        self.watch(worker.pidfd, lambda: self.on_worker_exit(worker))
        self.watch(worker.exec_fd, lambda: self.on_exec(worker))
        worker.deadline_timer = self.call_later(self.settings.ready_timeout,
                                                lambda: self.on_ready_timeout(worker))
        if gen is self.current:
            self.log("spawn", "%s started in slot %d" % (worker, slot), generation=gen.number,
                     pid=worker.pid, slot=slot)
        return worker

    def owner_of(self, pid):
        """The worker pid is, or descends from, and its generation; (None, None) if none."""
        for gen in self.generations():
            for worker in gen.workers.values():
                if worker.alive and (worker.pid == pid or is_descendant(pid, worker.pid)):
                    return worker, gen
        return None, None

    def generation_of(self, worker):
        for gen in self.generations():
            if gen.workers.get(worker.slot) is worker:
                return gen
        return None

    # -- one worker's events --------------------------------------------------------------

    def on_exec(self, worker):
        self.unwatch(worker.exec_fd)
        error = worker.read_exec_result()
        if error is not None:
            worker.exec_failed = True
            worker.failure = "cannot execute %s: %s" % (self.settings.argv[0], error)
            return          # the exit (status 127) follows at once and is handled there
        if self.worker_starting(worker):
            self.readiness.exec_succeeded(worker)

    def worker_starting(self, worker):
        """Whether worker is alive and still to pass the readiness rules."""
        gen = self.generation_of(worker)
        return not (self.stopping or not worker.alive or worker.ready or gen is None
                    or gen in self.old)

    def worker_settling(self, worker, state):
        """worker reported ready and now settles; a generation all of whose workers settle
        or serve settles too (status shows it)."""
        worker.state = state
        gen = self.generation_of(worker)
        if gen is self.pending and self.roll is None \
                and all(w.state == state or w.ready for w in gen.workers.values()):
            gen._state = state

    def on_ready_timeout(self, worker):
        gen = self.generation_of(worker)
        if worker.ready or not worker.alive or gen is None or gen in self.old:
            return
        worker.failure = self.readiness.not_ready_reason(worker)
        if gen is self.pending:
            self.pending_worker_failed(gen, worker)
        else:       # a respawned or added worker: its exit counts against its slot
            self.log("start-failed", worker.failure, level="error", generation=worker.number,
                     pid=worker.pid, slot=worker.slot)
            worker.signal(signal.SIGKILL)

    def on_worker_ready(self, worker):
        """worker passed the readiness rules (readiness.py), settle period included."""
        if not self.worker_starting(worker):
            return
        gen = self.generation_of(worker)
        worker.deadline_timer.cancel()
        self.readiness.forget(worker)
        worker.mark_ready()
        if gen is self.pending:
            if self.roll is not None:
                self.roll_worker_ready(worker)
            elif gen.all_ready(self.settings.workers):
                self.promote(gen)
        elif gen is self.current:
            self.slot_failures.pop(worker.slot, None)
            self.log("ready", "%s ready after %.3fs" % (worker, worker.ready_after),
                     generation=worker.number, pid=worker.pid, slot=worker.slot,
                     ready_after="%.3f" % worker.ready_after)
            self.answer_scale()

    def pending_worker_failed(self, gen, worker):
        """A worker of the starting generation exited or timed out before it was ready."""
        if self.roll is not None:
            return self.roll_failed(worker)
        gen.failure = worker.failure or "%s %s" % (worker, worker.exit_reason)
        gen.exec_failed, gen.failed_worker = worker.exec_failed, worker
        self.pending_failed(gen)

    def serving_worker_exited(self, gen, worker):
        if self.stopping:
            self.log("exit", "%s %s" % (worker, worker.exit_reason), generation=worker.number,
                     pid=worker.pid)
            if not gen.workers:
                self.current = None
            return
        lines = self.observed.failure(worker)   # what it wrote last, if known
        if worker.ready:
            self.log("crash", "%s %s while serving%s" % (worker, worker.exit_reason, lines),
                     level="error", generation=worker.number, pid=worker.pid, slot=worker.slot)
        else:
            self.log("start-failed", (worker.failure or "%s %s before it was ready"
                     % (worker, worker.exit_reason)) + lines, level="error",
                     generation=worker.number, pid=worker.pid, slot=worker.slot)
        ran_well = time.monotonic() - worker.started_mono > self.settings.backoff_max
        if not gen.workers:       # the whole generation is gone: start a new one
            self.current = None
            self.cancel_slot_timers()
            if self.roll is not None:
                self.roll_stopped("every serving worker exited")
            if ran_well:
                self.crashes = 0    # it ran well for a while: not a tight loop
            if self.pending is None:
                self.schedule_respawn()
            return
        self.respawn_slot(gen, worker, ran_well)

    # -- respawning one slot ---------------------------------------------------------------

    def respawn_slot(self, gen, worker, ran_well):
        slot = worker.slot
        if ran_well:
            self.slot_crashes[slot] = 0
        if not worker.ready:
            self.slot_failures[slot] = self.slot_failures.get(slot, 0) + 1
            self.fail_scale("%s" % (worker.failure or "%s %s" % (worker, worker.exit_reason)))
        self.schedule_refill(gen, slot)

    def schedule_refill(self, gen, slot):
        """A new worker in slot of gen after the slot's backoff, unless it is given up."""
        if slot >= self.settings.workers:
            return
        if self.slot_failures.get(slot, 0) >= self.settings.crash_limit:
            self.given_up.add(slot)
            self.log("slot-given-up", "worker slot %d failed %d times in a row without becoming "
                     "ready; the other workers serve on, the next reload or scale tries again"
                     % (slot, self.slot_failures[slot]), level="error", slot=slot)
            return
        crashes = self.slot_crashes.get(slot, 0)
        delay = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** crashes)
        self.slot_crashes[slot] = crashes + 1
        self.log("respawn", "starting a new worker in slot %d in %.1fs" % (slot, delay),
                 slot=slot, delay="%.1f" % delay)
        self.slot_timers[slot] = self.call_later(delay, lambda: self.refill_slot(gen, slot))

    def refill_slot(self, gen, slot):
        self.slot_timers.pop(slot, None)
        if gen is not self.current or self.stopping or slot in gen.workers \
                or slot >= self.settings.workers:
            return
        try:
            self.spawn_worker(gen, slot)
        except OSError as e:
            self.log("spawn-failed", "cannot fork: %s" % e.strerror, level="error", slot=slot)
            self.slot_timers[slot] = self.call_later(self.settings.backoff_max,
                                                     lambda: self.refill_slot(gen, slot))

    def cancel_slot_timers(self, slots=None):
        for slot in list(self.slot_timers):
            if slots is None or slot in slots:
                self.slot_timers.pop(slot).cancel()

    def reset_slots(self):
        """A new generation serves: every slot starts with a clean record."""
        self.cancel_slot_timers()
        self.slot_crashes.clear()
        self.slot_failures.clear()
        self.given_up.clear()

    def retire_worker(self, worker, signum, timeout):
        """Drain one worker (replaced, or surplus after a scale) as a generation of its own."""
        self.retire(Generation(worker.number, {worker.slot: worker}), signum, timeout)

    # -- scaling -----------------------------------------------------------------------

    def scale(self, count, waiter=None):
        """Run `count` workers from now on; waiter gets its answer once they are all ready."""
        def refuse(error):
            if waiter is not None:
                waiter.reply({"ok": False, "error": error})
        if isinstance(count, bool) or not isinstance(count, int) \
                or not 1 <= count <= MAX_WORKERS:
            return refuse("invalid number of workers %r: give 1 to %d" % (count, MAX_WORKERS))
        if self.stopping:
            return refuse("pyboss is stopping")
        if self.pending is not None or self.current is None:
            return refuse("a generation is starting: scale again once 'pyboss status' says "
                          "serving")
        gen, previous = self.current, self.settings.workers
        self.settings.workers = count
        self.log("scale", "scaling from %d to %d workers" % (previous, count), workers=count)
        self.cancel_slot_timers(range(count, MAX_WORKERS))
        self.given_up.clear()
        self.slot_failures.clear()
        for slot in sorted(gen.workers):
            if slot >= count:
                self.retire_worker(gen.workers.pop(slot), self.settings.drain_signal,
                                   self.settings.drain_timeout)
        if waiter is not None:
            self.scale_waiters.append(waiter)
        for slot in range(count):
            if slot not in gen.workers and slot not in self.slot_timers:
                try:
                    self.spawn_worker(gen, slot)
                except OSError as e:
                    self.fail_scale("cannot fork: %s" % e.strerror)
                    self.slot_timers[slot] = self.call_later(
                        self.settings.backoff_max, lambda slot=slot: self.refill_slot(gen, slot))
        self.answer_scale()
        self.upstream.status(self.status_line())

    def answer_scale(self):
        gen = self.current
        if self.scale_waiters and gen is not None and gen.all_ready(self.settings.workers):
            waiters, self.scale_waiters = self.scale_waiters, []
            for waiter in waiters:
                waiter.reply({"ok": True, "workers": self.settings.workers,
                              "pids": [w.pid for w in gen.by_slot()]})

    def fail_scale(self, reason):
        waiters, self.scale_waiters = self.scale_waiters, []
        for waiter in waiters:
            waiter.reply({"ok": False, "error": "%s; pyboss tries again with backoff" % reason})

    def status_line(self):
        if self.current is None:
            return "no generation serving"
        numbers = sorted({w.number for w in self.current.workers.values()})
        if len(numbers) > 1:    # a rolling reload that stopped half-way
            return "serving generations %s (pids %s)" % (
                " and ".join(map(str, numbers)),
                ", ".join(str(w.pid) for w in self.current.by_slot()))
        return "serving %s" % self.current

    def handle_SIGTTIN(self):
        self.scale(self.settings.workers + 1)

    def handle_SIGTTOU(self):
        self.scale(max(1, self.settings.workers - 1))
