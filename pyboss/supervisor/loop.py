"""A single-threaded event loop: a selector, timers, and signals that only enqueue.

Signal handlers append to a queue and the wakeup fd interrupts select(); the loop
then calls handle_<SIGNAME>() from its own context. Nothing runs inside a handler,
so no state is ever touched half-way (gunicorn's arbiter does the same).
"""
import heapq
import itertools
import os
import selectors
import signal
import sys
import time
from collections import deque


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self):
        self.cancelled = True


class EventLoop:
    SIGNALS = ()

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self._timers = []
        self._seq = itertools.count()
        self._signals = deque()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._drain_wakeup)
        self.finished = False
        self.idle_hooks = []        # called before every wait: state saving, upgrade

    def install_signals(self):
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            signal.signal(signum, lambda signum, _frame: self._signals.append(signum))
        # An image exec()ed by `pyboss upgrade` starts with these blocked: none is lost.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)

    def restore_signals(self):
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)

    def call_later(self, delay, callback):
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def watch(self, fileobj, callback):
        self.selector.register(fileobj, selectors.EVENT_READ, callback)

    def unwatch(self, fileobj):
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def _drain_wakeup(self):
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def run_forever(self):
        while not self.finished:
            for hook in self.idle_hooks:
                hook()
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for key, _ in self.selector.select(timeout):
                # An earlier callback in this batch may have unwatched this one.
                if self.selector.get_map().get(key.fd) is key:
                    self.dispatch(key.data)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                timer = heapq.heappop(self._timers)[2]
                if not timer.cancelled:
                    self.dispatch(timer.callback)
            self.dispatch_signals()

    def dispatch_signals(self):
        """Handle the signals received so far (also from a callback that must see them)."""
        while self._signals:
            name = signal.Signals(self._signals.popleft()).name
            self.dispatch(getattr(self, "handle_" + name))

    def dispatch(self, callback):
        """One event's bug is one event's problem: the loop goes on."""
        try:
            callback()
        except Exception:       # noqa: BLE001 - whatever it was, it must not end the loop
            self.event_failed(callback)

    def event_failed(self, callback, fatal=False):
        """A hook: report an unexpected exception raised while handling one event."""
        sys.stderr.write(describe_failure(callback, fatal) + "\n")

    def close(self):
        self.selector.close()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)


def describe_failure(callback, fatal):
    """The exception being handled, with its traceback, as one log message."""
    import traceback
    return "unexpected error in %s; %s:\n%s" % (
        getattr(callback, "__qualname__", callback),
        "pyboss cannot go on" if fatal else "pyboss carries on", traceback.format_exc().rstrip())
