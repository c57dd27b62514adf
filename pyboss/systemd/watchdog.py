"""What keeps systemd's timeouts truthful about the app pyboss runs.

- EXTEND_TIMEOUT_USEC= while a generation is slow to become ready (the first one, or one
  started by a reload): systemd waits as long as pyboss's own --ready-timeout (plus a
  margin) instead of failing the start or reload at TimeoutStartSec=, and never longer.
- WATCHDOG=1 when systemd gave pyboss a watchdog (WatchdogSec=): only while the current
  generation is alive and, if the app itself sends WATCHDOG=1 to pyboss, only while it
  keeps doing so. The app is offered the same WATCHDOG_USEC (and its own WATCHDOG_PID).
"""
import os
import time

EXTEND_MARGIN = 5.0     # seconds beyond pyboss's own deadline, so pyboss reports first
EXTEND_EVERY = 2.0


def watchdog_usec(environ=os.environ):
    """WATCHDOG_USEC meant for this process (WATCHDOG_PID absent or ours), else None."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
        pid = int(environ.get("WATCHDOG_PID", "0") or 0)
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec


class Keepalive:
    def __init__(self, supervisor, environ=os.environ):
        self.supervisor = supervisor
        self.usec = watchdog_usec(environ)
        self.last_ping = {}         # generation number -> when it last sent WATCHDOG=1
        self.silent_since = None    # the current generation stopped pinging at ...
        if supervisor.upstream.active:
            supervisor.call_later(0, self.tick)     # first thing once the loop runs

    def child_env(self):
        """Offer the app the watchdog: it may ping pyboss, which then depends on it."""
        return {"WATCHDOG_USEC": str(self.usec)} if self.usec else {}

    def on_notify(self, gen, fields):
        watchdog = fields.get("WATCHDOG")
        if watchdog == "1":
            self.last_ping = {n: t for n, t in self.last_ping.items() if n >= gen.number - 8}
            self.last_ping[gen.number] = time.monotonic()
        elif watchdog == "trigger" and gen is self.supervisor.current:
            self.supervisor.log("watchdog-trigger", "%s asked for the watchdog action" % gen,
                                level="error", generation=gen.number, pid=gen.pid)
            self.supervisor.upstream.send("WATCHDOG=trigger")

    def tick(self):
        if self.supervisor.finished:
            return
        self.extend_timeout()
        if self.usec:
            self.ping()
        self.supervisor.call_later(min(EXTEND_EVERY, (self.usec or 1e9) / 4e6), self.tick)

    def extend_timeout(self):
        """While systemd waits for pyboss (start, or a reload), let it wait as pyboss does."""
        supervisor, now = self.supervisor, time.monotonic()
        if supervisor.stopping:
            return
        starting = not supervisor.upstream.ready_sent
        pending = supervisor.pending
        reloading = supervisor.pending_purpose == "reload" or supervisor.upstream.reloading_sent
        if pending is not None and (starting or reloading):
            # Ready by --ready-timeout, then settled (--ready-grace) before pyboss reports.
            deadline = pending.started_mono + supervisor.settings.ready_timeout + \
                supervisor.settings.ready_grace
        elif starting and supervisor.respawn_timer is not None \
                and not supervisor.respawn_timer.cancelled:
            deadline = supervisor.respawn_timer.when + supervisor.settings.ready_timeout + \
                supervisor.settings.ready_grace
        else:
            return      # systemd is not waiting (a respawn while serving is pyboss's business)
        usec = int((deadline - now + EXTEND_MARGIN) * 1e6)
        supervisor.upstream.send("EXTEND_TIMEOUT_USEC=%d" % max(usec, 1))

    def ping(self):
        supervisor, gen = self.supervisor, self.supervisor.current
        if gen is None or not gen.alive:
            return
        last = self.last_ping.get(gen.number)
        if last is not None and time.monotonic() - last > self.usec / 1e6:
            if self.silent_since != last:
                self.silent_since = last
                supervisor.log("watchdog-silent", "%s stopped sending WATCHDOG=1: pyboss stops "
                               "pinging systemd's watchdog" % gen, level="error",
                               generation=gen.number, pid=gen.pid)
            return
        supervisor.upstream.send("WATCHDOG=1")
