"""pyboss with bugs planted in it, to show what a bug in pyboss costs the app.

    faulty_supervisor.py CONTROL_PATH -- COMMAND...

Built as `pyboss exec` builds its supervisor (one listener on 127.0.0.1, an ephemeral
port). SIGUSR1 runs a handler that raises; SIGUSR2 breaks the event loop itself.
"""
import signal
import sys

from pyboss.listeners import ListenerSet, parse_spec
from pyboss.supervisor.control import ControlServer, open_notify_socket
from pyboss.supervisor.core import Supervisor
from pyboss.supervisor.log import EventLog
from pyboss.supervisor.settings import Settings


class FaultySupervisor(Supervisor):
    SIGNALS = Supervisor.SIGNALS + (signal.SIGUSR1, signal.SIGUSR2)
    broken = False

    def handle_SIGUSR1(self):
        raise RuntimeError("planted bug in an event handler")

    def handle_SIGUSR2(self):
        self.broken = self.finished = True

    def run_forever(self):
        super().run_forever()
        if self.broken:
            raise RuntimeError("planted bug in the event loop")


def main():
    control, command = sys.argv[1], sys.argv[3:]
    listeners = ListenerSet.open([parse_spec("127.0.0.1:0", "http")])
    server = ControlServer(control)
    notify = open_notify_socket(server.path.rsplit("/", 1)[0])
    supervisor = FaultySupervisor(Settings(command), listeners, server, notify,
                                  EventLog("faulty"))
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
