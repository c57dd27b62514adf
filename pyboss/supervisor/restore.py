"""An earlier pyboss's generations put back together, worker by worker.

Each recorded worker that /proc still shows as that very process (pid and start time)
is adopted into its slot of its generation, with its state and its deadline: a draining
generation keeps its SIGKILL deadline, a starting worker its --ready-timeout, and its
READY=1 queued on the notify socket meanwhile counts. The number of workers in force
is the earlier pyboss's (a `pyboss scale` lasts as long as its generations), and so is
each slot's crash record. A worker of the serving generation that died while no pyboss
ran is respawned into its slot, with the slot's usual backoff.

After a crash, a reload that was under way is settled at once:

- --reload-strategy all: the new generation is promoted once every worker has reported
  ready (its READY=1 waited in the notify socket, kept in the fd store; a worker that
  was settling settles anew), else it is killed and the old one keeps serving;
- rolling: the roll stops where it was. The workers already replaced stay, the new ones
  still starting are killed, and the verdict is "k of N replaced; failed because pyboss
  restarted during the rolling reload".
"""
import os
import signal
import time

from .adopt import AdoptedWorker
from .generation import DRAINING, EXITED, Generation
from .metrics import Counters
from .readiness import SETTLING
from .rolling import Roll
from .state import same_process


def _later(supervisor, deadline, callback):
    return supervisor.call_later(max(0.0, deadline - time.monotonic()), callback)


def _worker(supervisor, record, pidfd):
    worker = AdoptedWorker(record["number"], record["slot"], record["pid"], pidfd, None,
                           supervisor.settings.workers > 1)
    worker.start_time = record["start_time"]
    worker.state = record["state"]
    worker.started, worker.started_mono = record["started"], record["started_mono"]
    worker.ready_after, worker.status_text = record["ready_after"], record["status"]
    return worker


def _adopt_worker(supervisor, record):
    """The recorded worker, watched again; None if it is gone."""
    try:
        pidfd = os.pidfd_open(record["pid"])
    except OSError:
        return None
    # Checked once the pidfd holds the process: a pid reused meanwhile is not it.
    if not same_process(record["pid"], record["start_time"]):
        os.close(pidfd)
        return None
    worker = _worker(supervisor, record, pidfd)
    worker.reaper = supervisor.reaper   # its signals reach its whole process tree
    supervisor.watch(pidfd, lambda: supervisor.on_worker_exit(worker))
    return worker


def _gone_worker(supervisor, record):
    """A recorded worker that exited while no pyboss ran: what reports say of it."""
    worker = _worker(supervisor, record, None)
    worker.exit_status, worker.state, worker.ended_mono = -1, EXITED, time.monotonic()
    worker.exit_reason = "exited while no pyboss was running"
    worker.failure = "%s %s" % (worker, worker.exit_reason)
    return worker


def _restore_counters(supervisor, state):
    supervisor.number = max(supervisor.number, state["number"])
    supervisor.history.extend(state["history"])
    supervisor.failures = state["counters"]["failures"]
    supervisor.crashes = state["counters"]["crashes"]
    if state.get("metrics"):        # the exported counters go on from where they were
        carried = Counters.from_dict(state["metrics"])
        vars(supervisor.observed.counters).update(vars(carried))
    supervisor.reload_requested_at = state["reload_requested_at"]
    supervisor.pending_purpose = state["pending_purpose"]
    supervisor.upstream.ready_sent = state.get("ready_sent", False)


def _restore_slots(supervisor, state):
    settings = supervisor.settings
    if state["workers"] != settings.workers:
        supervisor.log("adopt-workers", "running %d workers per generation as the earlier "
                       "pyboss did (--workers %d was given); 'pyboss scale' changes it"
                       % (state["workers"], settings.workers), level="warning",
                       workers=state["workers"])
        settings.workers = state["workers"]
    for record in state["slots"]:
        slot = record["slot"]
        if record["crashes"]:
            supervisor.slot_crashes[slot] = record["crashes"]
        if record["failures"]:
            supervisor.slot_failures[slot] = record["failures"]
        if record["given_up"]:
            supervisor.given_up.add(slot)
    return {r["slot"]: r["refill_at"] for r in state["slots"] if r["refill_at"] is not None}


def restore(supervisor, state, after_crash, command_changed=False):
    """Make supervisor carry on with state's live workers; returns them."""
    _restore_counters(supervisor, state)
    settings = supervisor.settings
    refills = {} if command_changed else _restore_slots(supervisor, state)
    if not after_crash:
        # The same process after an upgrade: its children are workers and their
        # orphans, not helpers of its own that the reaper must leave alone.
        supervisor.reaper.helpers.clear()
    adopted, starting, gone_pending = [], [], []
    for record in state["generations"]:
        gen = Generation(record["number"])
        gen.created, gen.created_mono = record["created"], record["created_mono"]
        gen.ready_after = record["ready_after"]
        gone = []
        for worker_record in record["workers"]:
            worker = _adopt_worker(supervisor, worker_record)
            if worker is None:
                gone.append(_gone_worker(supervisor, worker_record))
                supervisor.log("adopt-gone", "%s is gone: not adopted" % gone[-1],
                               level="warning", generation=worker_record["number"],
                               pid=worker_record["pid"], slot=worker_record["slot"])
                continue
            gen.workers[worker.slot] = worker
            adopted.append(worker)
            if not worker.ready:
                starting.append((worker, worker_record["deadline"]))
            supervisor.log("adopted", "%s adopted (%s)" % (worker, worker.state),
                           generation=worker.number, pid=worker.pid, slot=worker.slot)
        gen._state = record["state"]        # each worker keeps its own
        role = record["role"]
        if command_changed or not gen.workers:
            if gen.workers:
                supervisor.retire(gen, settings.drain_signal, settings.drain_timeout)
            elif role == "pending" and after_crash:
                supervisor.pending, gone_pending = gen, gone    # its verdict follows
        elif role == "current":
            supervisor.current = gen
        elif role == "pending":
            supervisor.pending, gone_pending = gen, gone
        else:
            gen.state = DRAINING
            supervisor.old.append(gen)
            if record["deadline"] is not None:
                gen.deadline_timer = _later(supervisor, record["deadline"],
                                            lambda gen=gen: gen.signal(signal.SIGKILL))
    roll = state.get("roll")
    if roll is not None and supervisor.pending is not None and not command_changed:
        supervisor.roll = Roll(roll["queue"])
        supervisor.roll.total, supervisor.roll.replaced = roll["total"], roll["replaced"]
    if not command_changed:
        _resume_starting(supervisor, starting)
        _refill_missing(supervisor, refills)
    if after_crash:
        settle_reload(supervisor, gone_pending)
    if supervisor.current is not None and supervisor.pending is None:
        supervisor.upstream.ready(supervisor.status_line())
    return adopted


def _resume_starting(supervisor, starting):
    """Workers not ready yet: their --ready-timeout runs on, their readiness too."""
    for worker, deadline in starting:
        if deadline is None:
            deadline = time.monotonic() + supervisor.settings.ready_timeout
        worker.deadline_timer = _later(supervisor, deadline,
                                       lambda worker=worker: supervisor.on_ready_timeout(worker))
    for worker, _ in starting:
        if supervisor.generation_of(worker) in (supervisor.current, supervisor.pending):
            supervisor.readiness.adopted(worker, settling=worker.state == SETTLING)


def _refill_missing(supervisor, refills):
    """Slots of the serving generation without a worker: respawned when the earlier
    pyboss would have, or (the worker died while no pyboss ran) after the slot's backoff."""
    gen = supervisor.current
    if gen is None:
        return
    for slot in range(supervisor.settings.workers):
        if slot in gen.workers or slot in supervisor.given_up:
            continue
        if slot in refills:
            supervisor.slot_timers[slot] = _later(
                supervisor, refills[slot], lambda slot=slot: supervisor.refill_slot(gen, slot))
        else:
            supervisor.schedule_refill(gen, slot)


def settle_reload(supervisor, gone):
    """A reload cut short by pyboss's death (gone: the new workers that died meanwhile)."""
    if supervisor.roll is not None:
        supervisor.roll_stopped("pyboss restarted during the rolling reload")
    supervisor.on_notify()      # messages that waited for this pyboss
    gen = supervisor.pending
    if gen is None:
        return
    ready_after = supervisor.settings.ready_after
    if ready_after is not None:
        for worker in gen.by_slot():
            if time.monotonic() - worker.started_mono >= ready_after:
                supervisor.readiness.alive_long_enough(worker)
    if supervisor.pending is not gen:
        return                  # promoted
    waiting = [w for w in gen.by_slot() if not w.ready and w.state != SETTLING]
    if gone:
        failed = gone[0]
    elif not waiting or supervisor.current is None:
        return      # every worker reported ready and settles anew, or nothing else serves
    else:
        failed = waiting[0]
        failed.failure = "pyboss restarted during the reload and %s was not ready yet" % failed
    gen.failure, gen.failed_worker = failed.failure, failed
    supervisor.pending_failed(gen)
