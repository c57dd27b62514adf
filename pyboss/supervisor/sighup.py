"""The outcome of a reload a SIGHUP started, kept for whoever asks for it.

Under Type=notify-reload, `systemctl reload` sends pyboss SIGHUP and counts the READY=1
that follows as success, whatever became of the new generation. Its ExecReload=
(`pyboss reload --wait --after-sighup`, spawned right after the signal) asks for that
reload's outcome instead of starting another reload, and exits 1 if it failed.
"""


class SignalledReload:
    """Stands in line as a reload waiter; hands its reply to one collector, now or later."""

    request = None      # a waiter's parsed request: a signal carries none

    def __init__(self):
        self.outcome = None
        self.collector = None
        self.collected = False

    def reply(self, message):
        self.outcome = message
        if self.collector is not None:
            self.collector.reply(message)
            self.collector = None

    def collect(self, conn):
        """Give conn this reload's outcome (at once, or when it comes); False if taken."""
        if self.collected:
            return False
        self.collected = True
        if self.outcome is not None:
            conn.reply(self.outcome)
        else:
            self.collector = conn
        return True


class SighupReloads:
    """The Supervisor's SIGHUP, a reload whose outcome waits for its collector, and the
    clients that wait for a reload (reload --wait, --after-sighup)."""

    last_sighup = None      # the newest SIGHUP's reload

    def handle_SIGHUP(self):
        self.last_sighup = SignalledReload()
        self.request_reload(self.last_sighup)

    def reload_for_client(self, conn, after_sighup=False):
        """`reload --wait`; with after_sighup, the newest SIGHUP's reload instead, if its
        outcome is still to be collected (else a reload of its own, as --wait)."""
        if after_sighup:
            self.dispatch_signals()     # systemd sent its SIGHUP before it ran this client
        # The pending generation's time, then this reload's own if it is a follow-up.
        conn.accepted((2 if self.pending else 1) * self.reload_time()
                      + self.settings.backoff_max)
        if not (after_sighup and self.last_sighup is not None and self.last_sighup.collect(conn)):
            self.request_reload(conn)
