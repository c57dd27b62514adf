"""What pyboss tells its own service manager (systemd) through sd_notify."""
import os

from .. import sd


class Upstream:
    """Holds the NOTIFY_SOCKET pyboss was given; children never see it."""

    def __init__(self, environ=os.environ):
        self.socket_path = environ.pop("NOTIFY_SOCKET", None)
        self.ready_sent = False
        self.reloading_sent = False     # RELOADING=1 sent, its READY=1 not yet

    @property
    def active(self):
        return bool(self.socket_path)

    def send(self, *lines, fds=()):
        if self.socket_path:
            try:
                sd.notify("\n".join(lines), fds=fds, socket_path=self.socket_path, block=False)
            except OSError:
                pass    # the manager is gone or not reading; serving goes on

    def ready(self, status):
        self.ready_sent = True
        self.reloading_sent = False
        self.send("READY=1", "STATUS=" + status)

    def reloading(self):
        if not self.ready_sent:
            return      # systemd is still starting the service: READY=1 comes anyway
        # MONOTONIC_USEC lets Type=notify-reload tell this reload from an earlier one.
        self.reloading_sent = True
        self.send("RELOADING=1", "MONOTONIC_USEC=%d" % sd.monotonic_usec(),
                  "STATUS=reloading")

    def reload_over(self, status):
        """READY=1 if a RELOADING=1 awaits it: systemd stays "reloading" until then."""
        if self.reloading_sent:
            self.ready(status)

    def stopping(self):
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text):
        self.send("STATUS=" + text)
