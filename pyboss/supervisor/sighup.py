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
    """The Supervisor's SIGHUP: a reload whose outcome waits for its collector."""

    last_sighup = None      # the newest SIGHUP's reload

    def handle_SIGHUP(self):
        self.last_sighup = SignalledReload()
        self.request_reload(self.last_sighup)

    def reload_after_sighup(self, conn):
        """`reload --after-sighup`: the newest SIGHUP's outcome, else a reload of its own."""
        # systemd sent its SIGHUP before it spawned this client: handle it first.
        self.dispatch_signals()
        if self.last_sighup is None or not self.last_sighup.collect(conn):
            self.request_reload(conn)
