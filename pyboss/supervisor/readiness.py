"""When a starting worker counts as ready: its signals, then the settle period.

A generation reports ready by READY=1 on pyboss's notify socket, or by staying alive for
--ready-after, or (--ready-probe PATH) by answering GET PATH with 2xx/3xx on a socket only
it holds -- and READY=1 as well if it speaks sd_notify at all. A report is not yet the
truth: gunicorn sends READY=1 before its workers import the app, and an app may die a
moment after saying it. So the generation then settles: it must stay alive --ready-grace
seconds before the supervisor promotes it (the old generation drains, `reload --wait`
answers). One that dies while settling failed like one that never got ready: a reload
fails and the old generation serves on; a start counts toward --crash-limit.

With --workers N every worker is watched alone (its own settle period, its own probe
socket): the rules hold per worker, and a worker that passes them is reported to the
workers module (supervisor.on_worker_ready), which promotes a generation once all its
workers are ready, or in a rolling reload lets the worker take its slot over.
"""
import os
import time

from .rundir import (SHORTER_DIRECTORY, check_socket_path, make_private_dir,
                     private_dir_pattern)

PROBE_DIR_PREFIX = ".pyboss-probe-"
SETTLING = "settling"        # a worker's state between its report and its promotion


def key(worker):
    return worker.number, worker.slot


class Watch:
    """What one starting worker has shown so far."""
    __slots__ = ("probe_socket", "probe", "probe_ok", "ready_message", "alive_long_enough",
                 "speaks_notify", "timer", "reported_at")

    def __init__(self, probe_socket=None):
        self.probe_socket, self.probe, self.timer = probe_socket, None, None
        self.probe_ok = self.ready_message = self.alive_long_enough = False
        self.speaks_notify = False
        self.reported_at = None


class Readiness:
    """The supervisor's readiness rules; supervisor.on_worker_ready(worker) when they hold."""

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.settings = supervisor.settings
        self.watches = {}            # (generation number, slot) -> Watch, while it starts
        self.probe_dir = None
        self.created_probe_dir = False

    # -- spawning ---------------------------------------------------------------------

    def child_listeners(self, number, slot, listeners):
        """(names, fds) the worker of generation NUMBER in SLOT gets: the app's listeners,
        then its probe socket."""
        names, fds = listeners.names, listeners.fds()
        if self.settings.ready_probe is None:
            return names, fds
        from .probe import PROBE_NAME, ProbeSocket     # --ready-probe only: stays small
        probe_socket = ProbeSocket(self.directory(), number, slot)
        self.watches[number, slot] = Watch(probe_socket)
        return names + [PROBE_NAME], fds + [probe_socket.fileno()]

    def directory(self):
        """pyboss's private directory (the notify socket's), or one made beside the control
        socket when the notify socket came from elsewhere."""
        if self.probe_dir is None:
            self.probe_dir = getattr(self.supervisor.notify, "private_dir", None)
            if self.probe_dir is None:
                parent = os.path.dirname(self.supervisor.control.path)
                self.probe_dir = make_private_dir(parent, PROBE_DIR_PREFIX)
                self.created_probe_dir = True
        return self.probe_dir

    def spawned(self, worker):
        watch = self.watches.setdefault(key(worker), Watch())
        if watch.probe_socket is not None:
            watch.probe_socket.release()

    def spawn_failed(self, number, slot):
        watch = self.watches.pop((number, slot), None)
        if watch is not None and watch.probe_socket is not None:
            watch.probe_socket.remove()

    def exec_succeeded(self, worker, running_for=0.0):
        """The new build runs: start the clocks and the probe that need it running
        (running_for: how long it has run already, when adopted while starting)."""
        watch = self.watches.get(key(worker))
        if watch is None:
            return
        if self.settings.ready_after is not None:
            delay = max(0.0, self.settings.ready_after - running_for)
            watch.timer = self.supervisor.call_later(delay,
                                                     lambda: self.alive_long_enough(worker))
        if watch.probe_socket is not None:
            from .probe import HttpProbe
            watch.probe = HttpProbe(self.supervisor, watch.probe_socket.path,
                                    self.settings.ready_probe, lambda: self.probe_answered(worker))
            watch.probe.start()

    # -- the signals --------------------------------------------------------------------

    def on_notify(self, worker, fields):
        watch = self.watches.get(key(worker))
        if watch is None:
            return
        watch.speaks_notify = True
        if fields.get("READY") == "1":
            watch.ready_message = True
            self.check(worker, watch)

    def alive_long_enough(self, worker):
        watch = self.watches.get(key(worker))
        if watch is not None and worker.alive:
            watch.timer = None
            watch.alive_long_enough = True
            self.check(worker, watch)

    def probe_answered(self, worker):
        watch = self.watches.get(key(worker))
        if watch is None:
            return
        watch.probe_ok = True
        # A READY=1 sent before the app served may still sit in the notify queue.
        self.supervisor.on_notify()
        self.check(worker, watch)

    def check(self, worker, watch):
        if watch.reported_at is not None or not self.supervisor.worker_starting(worker):
            return
        if self.settings.ready_probe is not None:
            reported = watch.probe_ok and (watch.ready_message or not watch.speaks_notify)
        else:
            reported = watch.ready_message or watch.alive_long_enough
        if reported:
            self.settle(worker, watch)

    # -- the settle period --------------------------------------------------------------

    def settle(self, worker, watch):
        worker.deadline_timer.cancel()
        watch.reported_at = time.monotonic()
        grace = self.settings.ready_grace
        if not grace:
            return self.supervisor.on_worker_ready(worker)
        self.supervisor.worker_settling(worker, SETTLING)
        self.supervisor.log("settling", "%s reported ready after %.3fs; promoted if it is "
                            "still alive in %gs" % (worker, watch.reported_at - worker.started_mono,
                                                    grace),
                            generation=worker.number, pid=worker.pid, slot=worker.slot)
        watch.timer = self.supervisor.call_later(grace, lambda: self.settled(worker))

    def adopted(self, worker, settling=False):
        """A starting worker taken over from the pyboss before this one: its READY=1,
        queued on the notify socket meanwhile, counts, --ready-after counts from its start,
        and its probe socket (which it holds; the file is where that pyboss bound it) is
        asked again. One that had reported ready, and was settling, when that pyboss died
        settles anew, in full."""
        watch = self.watches.setdefault(key(worker), Watch())
        if self.settings.ready_probe is not None and watch.probe_socket is None:
            from .probe import ProbeSocket
            watch.probe_socket = ProbeSocket.left_behind(self.directory(), worker.number,
                                                         worker.slot)
        if settling:
            watch.ready_message = True
            return self.settle(worker, watch)
        self.exec_succeeded(worker, time.monotonic() - worker.started_mono)

    def settled(self, worker):
        watch = self.watches.get(key(worker))
        if watch is not None:
            watch.timer = None
            self.supervisor.on_worker_ready(worker)    # which checks it still counts

    def exited(self, worker):
        """A starting worker is gone: say so truthfully if it had reported ready."""
        watch = self.watches.get(key(worker))
        if watch is not None and watch.reported_at is not None and worker.failure is None:
            worker.failure = "%s %s %.1fs after it reported ready (inside the --ready-grace of " \
                "%gs)" % (worker, worker.exit_reason, time.monotonic() - watch.reported_at,
                          self.settings.ready_grace)

    def not_ready_reason(self, worker):
        """Why worker was not ready by --ready-timeout, and what to do about it."""
        watch = self.watches.get(key(worker)) or Watch()
        timeout = self.settings.ready_timeout
        if self.settings.ready_probe is not None:
            if watch.probe_ok:
                return "%s answered the probe but never sent READY=1 within %gs" % (worker, timeout)
            last = watch.probe.last if watch.probe is not None else "never started"
            return "%s did not answer GET %s on its probe socket with 2xx or 3xx within %gs " \
                "(last attempt: %s)" % (worker, self.settings.ready_probe, timeout, last)
        if self.settings.ready_after is not None:
            return "%s not alive long enough within %gs" % (worker, timeout)
        return "%s never sent READY=1 within %gs: for an app that does not speak sd_notify, " \
            "use --ready-after SECONDS or --ready-probe PATH" % (worker, timeout)

    # -- the end ------------------------------------------------------------------------

    def forget(self, worker):
        """The worker is ready, failed or gone: its timers, probe and probe socket go."""
        watch = self.watches.pop(key(worker), None)
        if watch is not None:
            self.end(watch)

    @staticmethod
    def end(watch):
        if watch.timer is not None:
            watch.timer.cancel()
        if watch.probe is not None:
            watch.probe.cancel()
        if watch.probe_socket is not None:
            watch.probe_socket.remove()

    def close(self):
        watches, self.watches = self.watches, {}
        for watch in watches.values():
            self.end(watch)
        if self.created_probe_dir:
            try:
                os.rmdir(self.probe_dir)
            except OSError:
                pass


def check_probe_paths(notify, control_path, workers):
    """ControlError unless the probe sockets will fit in a unix socket's address: in the
    notify socket's private directory, or in one made beside the control socket."""
    from .probe import longest_name
    directory = getattr(notify, "private_dir", None) or \
        private_dir_pattern(os.path.dirname(control_path), PROBE_DIR_PREFIX)
    check_socket_path(os.path.join(directory, longest_name(workers)), "a --ready-probe socket",
                      SHORTER_DIRECTORY)
