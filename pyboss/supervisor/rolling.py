"""--reload-strategy rolling: replace the serving workers a few at a time.

The next generation starts --max-surge workers at a time, in the slots it replaces. Each
one that is ready takes its slot over, and only then does the worker it replaces get the
drain signal. A new worker that fails (exits, cannot be executed, is not ready in time)
stops the roll: the new workers still starting are killed, the old workers that remain
serve on, the slots already replaced keep their new workers, and the reload fails with
"k of N replaced; failed because ...".
"""
import signal

from .generation import Generation


class Roll:
    """Where a rolling reload stands."""

    def __init__(self, slots):
        self.queue = list(slots)      # slots still to replace, in order
        self.total = len(self.queue)
        self.replaced = 0


class RollingReload:
    """The rolling half of the Supervisor's reload (a mixin: it shares the loop and state)."""

    roll = None

    def reload_time(self):
        """The longest a reload may take: --ready-timeout and the settle period (--ready-grace)
        per batch of new workers."""
        if self.settings.reload_strategy != "rolling":
            return self.settings.ready_timeout
        batches = -(-self.settings.workers // self.settings.max_surge)
        return batches * (self.settings.ready_timeout + self.settings.ready_grace)

    def start_roll(self):
        self.number += 1
        self.pending, self.pending_purpose = Generation(self.number), "reload"
        self.roll = Roll(range(self.settings.workers))
        self.log("reload", "reload requested; replacing %d workers with generation %d, %d at "
                 "a time" % (self.roll.total, self.number,
                             min(self.settings.max_surge, self.roll.total)))
        self.roll_next()

    def roll_next(self):
        gen = self.pending
        while self.roll.queue and len(gen.workers) < self.settings.max_surge:
            slot = self.roll.queue.pop(0)
            try:
                worker = self.spawn_worker(gen, slot)
            except OSError as e:
                return self.roll_stopped("cannot fork: %s" % e.strerror)
            self.log("spawn", "%s started to replace slot %d" % (worker, slot),
                     generation=gen.number, pid=worker.pid, slot=slot)

    def roll_worker_ready(self, worker):
        gen, serving = self.pending, self.current
        del gen.workers[worker.slot]
        replaced = serving.workers.get(worker.slot)
        serving.workers[worker.slot] = worker
        self.roll.replaced += 1
        self.log("ready", "%s ready after %.3fs; %d of %d replaced"
                 % (worker, worker.ready_after, self.roll.replaced, self.roll.total),
                 generation=worker.number, pid=worker.pid, slot=worker.slot,
                 ready_after="%.3f" % worker.ready_after)
        if replaced is not None:
            self.retire_worker(replaced, self.settings.drain_signal, self.settings.drain_timeout)
        if self.roll.queue or gen.workers:
            return self.roll_next()
        self.pending = self.roll = None
        serving.number = gen.number
        serving.mark_ready()
        self.failures = 0
        self.reset_slots()
        self.record_reload(gen, "ok", None)
        self.answer({"ok": True, "generation": gen.number, "pid": serving.pid,
                     "pids": [w.pid for w in serving.by_slot()]})
        self.upstream.ready(self.status_line())
        self.start_followup()

    def roll_failed(self, worker):
        lines = self.observed.failure(worker)   # what it wrote last, if known
        self.roll_stopped(worker.failure or "%s %s" % (worker, worker.exit_reason), lines,
                          worker.last_lines)

    def roll_stopped(self, reason, lines="", last_lines=None):
        gen, roll = self.pending, self.roll
        self.pending = self.roll = None
        for worker in gen.workers.values():
            self.readiness.forget(worker)
        if gen.alive:
            self.retire(gen, signal.SIGKILL, 0)
        if self.stopping:
            return
        verdict = "%d of %d replaced; failed because %s" % (roll.replaced, roll.total, reason)
        self.record_reload(gen, "failed", verdict)
        gen.last_lines = last_lines
        self.log("reload-failed", "reload failed: %s%s; %s keeps serving"
                 % (verdict, lines, self.current), level="error", generation=gen.number)
        self.upstream.reload_over("reload failed: %s%s; %s" % (verdict, lines, self.status_line()))
        self.answer({"ok": False, "error": verdict, "last_lines": last_lines})
        self.start_followup()
