"""How pyboss runs the app: the options `exec` (and the drop-ins) hand to the core."""
import signal

# The settle period a generation must stay alive after it reported ready. gunicorn sends
# READY=1 before its workers import the app; with a broken app its master exits 0.1-0.55 s
# later on an idle 2-core machine and up to 1.16 s with the CPUs 150% oversubscribed
# (benchmarks: "a broken build that still sends READY=1"). 3 s covers that with room.
DEFAULT_READY_GRACE = 3.0


class Settings:
    """How pyboss runs the app; plain attributes, handed across exec() as a dict."""

    def __init__(self, argv, name="pyboss", ready_after=None, ready_timeout=60.0,
                 drain_signal=signal.SIGTERM, drain_timeout=30.0, stop_signal=signal.SIGTERM,
                 stop_timeout=30.0, max_draining=4, crash_limit=5, backoff_initial=0.1,
                 backoff_max=10.0, capture_output=False, metrics_textfile=None,
                 reload_on_change=(), reload_debounce=0.2,
                 ready_grace=DEFAULT_READY_GRACE, ready_probe=None, workers=1,
                 reload_strategy="all", max_surge=1):
        self.argv = list(argv)
        self.name = name
        self.ready_after = ready_after          # None: wait for READY=1
        self.ready_timeout = ready_timeout
        self.drain_signal = int(drain_signal)
        self.drain_timeout = drain_timeout
        self.stop_signal = int(stop_signal)
        self.stop_timeout = stop_timeout
        self.max_draining = max_draining
        self.crash_limit = crash_limit          # generations in a row that never got ready
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.capture_output = capture_output    # relay the generations' output (output.py)
        self.metrics_textfile = metrics_textfile
        self.ready_grace = ready_grace          # alive this long after ready, or it failed
        self.ready_probe = ready_probe          # None, or the HTTP path probed per generation
        self.reload_on_change = list(reload_on_change)   # absolute paths to watch
        self.reload_debounce = reload_debounce
        self.workers = workers                  # processes per generation (scale changes it)
        self.reload_strategy = reload_strategy  # "all" | "rolling"
        self.max_surge = max_surge              # rolling: new workers starting at once

    def as_dict(self):
        return dict(vars(self))
