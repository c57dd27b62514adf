"""The load: client threads, a fresh TCP connection per request, every failure counted.

A request is "GET / HTTP/1.0"; the reply must be a complete HTTP 200 whose body is the
app's JSON ({"generation": N, "pid": P}). Anything else -- refused, reset, timed out,
truncated or garbled -- is an error of the named kind. Every request is kept with its
start time (seconds since the load started) and its latency, so that latency can be
drawn over time and lined up with the reload moments.
"""
import json
import os
import socket
import threading
import time

REQUEST = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"


class Sample:
    __slots__ = ("start", "latency", "error", "pid")

    def __init__(self, start, latency, error, pid):
        self.start = start      # seconds since the load began (monotonic clock)
        self.latency = latency  # seconds
        self.error = error      # None, or "refused" / "reset" / "timeout" / "garbled" / "oserror"
        self.pid = pid          # pid of the process that answered, when the reply was good


def request_once(port, timeout):
    """One request on a fresh connection; returns (error kind or None, pid or None)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(REQUEST)
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except ConnectionRefusedError:
        return "refused", None
    except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
        return "reset", None
    except socket.timeout:
        return "timeout", None
    except OSError:
        return "oserror", None
    return parse_reply(b"".join(chunks))


def parse_reply(reply):
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep or not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        return "garbled", None
    try:
        pid = json.loads(body)["pid"]
    except (ValueError, KeyError, TypeError):
        return "garbled", None
    return None, pid


class LoadClient:
    """threads x (request, pause) until stop() or the duration runs out.

    pause=0 is a closed loop at full speed (throughput); a small pause gives a steady
    load that leaves CPU for the reloads being measured.
    """

    def __init__(self, port, threads=4, pause=0.005, timeout=5.0, duration=None, cpus=None):
        self.port = port
        self.cpus = cpus  # pin the client threads here (the server gets the other CPUs)
        self.threads = threads
        self.pause = pause
        self.timeout = timeout
        self.duration = duration
        self.samples = []
        self.origin = None
        self._stop = threading.Event()
        self._workers = []
        self._lock = threading.Lock()

    def start(self):
        self.origin = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, name="load-%d" % index, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def now(self):
        """Seconds since the load started, on the clock the samples use."""
        return time.monotonic() - self.origin

    def _run(self):
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # 0: this thread only
        deadline = None if self.duration is None else self.origin + self.duration
        local = []
        while not self._stop.is_set():
            began = time.monotonic()
            if deadline is not None and began >= deadline:
                break
            error, pid = request_once(self.port, self.timeout)
            local.append(Sample(began - self.origin, time.monotonic() - began, error, pid))
            if self.pause:
                self._stop.wait(self.pause)
        with self._lock:
            self.samples.extend(local)

    def stop(self):
        self._stop.set()
        for worker in self._workers:
            # A request in flight ends by its own timeout at the latest.
            worker.join(self.timeout + 5)
        self.samples.sort(key=lambda s: s.start)
        return self.samples

    def wait(self):
        """Let a load with a duration run out, then collect."""
        for worker in self._workers:
            worker.join((self.duration or 0) + self.timeout + 5)
        return self.stop()


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(samples, elapsed=None):
    """requests, errors (total and by kind), latency p50/p99/max in ms, requests per second."""
    latencies = sorted(s.latency for s in samples if s.error is None)
    kinds = {}
    for sample in samples:
        if sample.error:
            kinds[sample.error] = kinds.get(sample.error, 0) + 1
    worst = max((s.latency for s in samples), default=None)

    def ms(value):
        return None if value is None else value * 1000.0

    return {
        "requests": len(samples),
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        # The worst includes failed requests: a 5 s timeout is a 5 s stall to the user.
        "max_ms": ms(worst),
        "rps": (len(samples) - sum(kinds.values())) / elapsed if elapsed else None,
    }


def wait_until_serving(port, timeout=30.0):
    """Poll until one request succeeds; returns the answering pid or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        error, pid = request_once(port, 2.0)
        if error is None:
            return pid
        time.sleep(0.02)
    raise TimeoutError("nothing answered on 127.0.0.1:%d within %.0f s" % (port, timeout))
