"""When a starting generation counts as ready: its signals, then the settle period.

A generation reports ready by READY=1 on pyboss's notify socket, or by staying alive for
--ready-after, or (--ready-probe PATH) by answering GET PATH with 2xx/3xx on a socket only
it holds -- and READY=1 as well if it speaks sd_notify at all. A report is not yet the
truth: gunicorn sends READY=1 before its workers import the app, and an app may die a
moment after saying it. So the generation then settles: it must stay alive --ready-grace
seconds before the supervisor promotes it (the old generation drains, `reload --wait`
answers). One that dies while settling failed like one that never got ready: a reload
fails and the old generation serves on; a start counts toward --crash-limit.
"""
import os
import time

from .rundir import make_private_dir
from .probe import PROBE_NAME, HttpProbe, ProbeSocket

SETTLING = "settling"        # a generation's state between its report and its promotion


class Watch:
    """What one starting generation has shown so far."""
    __slots__ = ("probe_socket", "probe", "probe_ok", "ready_message", "alive_long_enough",
                 "speaks_notify", "timer", "reported_at")

    def __init__(self, probe_socket=None):
        self.probe_socket, self.probe, self.timer = probe_socket, None, None
        self.probe_ok = self.ready_message = self.alive_long_enough = False
        self.speaks_notify = False
        self.reported_at = None


class Readiness:
    """The supervisor's readiness rules; it calls supervisor.promote(gen) when one holds."""

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.settings = supervisor.settings
        self.watches = {}            # generation number -> Watch, while it starts
        self.probe_dir = None
        self.created_probe_dir = False

    # -- spawning ---------------------------------------------------------------------

    def child_listeners(self, number, listeners):
        """(names, fds) generation NUMBER gets: the app's listeners, then its probe socket."""
        names, fds = listeners.names, listeners.fds()
        if self.settings.ready_probe is None:
            return names, fds
        probe_socket = ProbeSocket(self.directory(), number)
        self.watches[number] = Watch(probe_socket)
        return names + [PROBE_NAME], fds + [probe_socket.fileno()]

    def directory(self):
        """pyboss's private directory (the notify socket's), or one made beside the control
        socket when the notify socket came from elsewhere."""
        if self.probe_dir is None:
            self.probe_dir = getattr(self.supervisor.notify, "private_dir", None)
            if self.probe_dir is None:
                parent = os.path.dirname(self.supervisor.control.path)
                self.probe_dir = make_private_dir(parent, ".pyboss-probe-")
                self.created_probe_dir = True
        return self.probe_dir

    def spawned(self, gen):
        watch = self.watches.setdefault(gen.number, Watch())
        if watch.probe_socket is not None:
            watch.probe_socket.release()

    def spawn_failed(self, number):
        watch = self.watches.pop(number, None)
        if watch is not None and watch.probe_socket is not None:
            watch.probe_socket.remove()

    def exec_succeeded(self, gen):
        """The new build runs: start the clocks and the probe that need it running."""
        watch = self.watches.get(gen.number)
        if watch is None:
            return
        if self.settings.ready_after is not None:
            watch.timer = self.supervisor.call_later(self.settings.ready_after,
                                                     lambda: self.alive_long_enough(gen))
        if watch.probe_socket is not None:
            watch.probe = HttpProbe(self.supervisor, watch.probe_socket.path,
                                    self.settings.ready_probe, lambda: self.probe_answered(gen))
            watch.probe.start()

    # -- the signals --------------------------------------------------------------------

    def on_notify(self, gen, fields):
        watch = self.watches.get(gen.number)
        if watch is None:
            return
        watch.speaks_notify = True
        if fields.get("READY") == "1":
            watch.ready_message = True
            self.check(gen, watch)

    def alive_long_enough(self, gen):
        watch = self.watches.get(gen.number)
        if watch is not None and gen.alive:
            watch.timer = None
            watch.alive_long_enough = True
            self.check(gen, watch)

    def probe_answered(self, gen):
        watch = self.watches.get(gen.number)
        if watch is None:
            return
        watch.probe_ok = True
        # A READY=1 sent before the app served may still sit in the notify queue.
        self.supervisor.on_notify()
        self.check(gen, watch)

    def check(self, gen, watch):
        if watch.reported_at is not None or gen is not self.supervisor.pending \
                or not gen.alive or self.supervisor.stopping:
            return
        if self.settings.ready_probe is not None:
            reported = watch.probe_ok and (watch.ready_message or not watch.speaks_notify)
        else:
            reported = watch.ready_message or watch.alive_long_enough
        if reported:
            self.settle(gen, watch)

    # -- the settle period --------------------------------------------------------------

    def settle(self, gen, watch):
        gen.deadline_timer.cancel()
        watch.reported_at = time.monotonic()
        grace = self.settings.ready_grace
        if not grace:
            return self.supervisor.promote(gen)
        gen.state = SETTLING
        self.supervisor.log("settling", "%s reported ready after %.3fs; promoted if it is "
                            "still alive in %gs" % (gen, watch.reported_at - gen.started_mono,
                                                    grace),
                            generation=gen.number, pid=gen.pid)
        watch.timer = self.supervisor.call_later(grace, lambda: self.settled(gen))

    def adopted(self, gen):
        """A starting generation taken over from the pyboss before this one: its READY=1,
        queued on the notify socket meanwhile, counts (its probe socket went with that
        pyboss)."""
        self.watches.setdefault(gen.number, Watch())

    def resume_settling(self, gen):
        """An adopted generation had reported ready, and was settling, when the pyboss
        before this one died: its settle period starts again, in full."""
        watch = self.watches.setdefault(gen.number, Watch())
        watch.ready_message = True
        self.settle(gen, watch)

    def settled(self, gen):
        supervisor = self.supervisor
        if gen is supervisor.pending and gen.alive and not supervisor.stopping:
            supervisor.promote(gen)

    def exited(self, gen):
        """A starting generation is gone: say so truthfully if it had reported ready."""
        watch = self.watches.get(gen.number)
        if watch is not None and watch.reported_at is not None and gen.failure is None:
            gen.failure = "%s %s %.1fs after it reported ready (inside the --ready-grace of " \
                "%gs)" % (gen, gen.exit_reason, time.monotonic() - watch.reported_at,
                          self.settings.ready_grace)

    def not_ready_reason(self, gen):
        """Why gen was not ready by --ready-timeout, and what to do about it."""
        watch = self.watches.get(gen.number) or Watch()
        timeout = self.settings.ready_timeout
        if self.settings.ready_probe is not None:
            if watch.probe_ok:
                return "%s answered the probe but never sent READY=1 within %gs" % (gen, timeout)
            last = watch.probe.last if watch.probe is not None else "never started"
            return "%s did not answer GET %s on its probe socket with 2xx or 3xx within %gs " \
                "(last attempt: %s)" % (gen, self.settings.ready_probe, timeout, last)
        if self.settings.ready_after is not None:
            return "%s not alive long enough within %gs" % (gen, timeout)
        return "%s never sent READY=1 within %gs: for an app that does not speak sd_notify, " \
            "use --ready-after SECONDS or --ready-probe PATH" % (gen, timeout)

    # -- the end ------------------------------------------------------------------------

    def forget(self, gen):
        """gen was promoted or failed: its timers, its probe and its probe socket go."""
        watch = self.watches.pop(gen.number, None)
        if watch is None:
            return
        if watch.timer is not None:
            watch.timer.cancel()
        if watch.probe is not None:
            watch.probe.cancel()
        if watch.probe_socket is not None:
            watch.probe_socket.remove()

    def close(self):
        for gen in self.supervisor.generations():
            self.forget(gen)
        for number in list(self.watches):      # spawns that never became a generation
            self.spawn_failed(number)
        if self.created_probe_dir:
            try:
                os.rmdir(self.probe_dir)
            except OSError:
                pass
