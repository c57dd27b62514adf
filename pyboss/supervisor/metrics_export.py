"""The metrics in Prometheus text format, served on GET /metrics from the supervisor's own
event loop and kept in a textfile. Imported only when --metrics or --metrics-textfile is
given.

The exposition is written here rather than with prometheus_client, which would cost the
supervisor about 14 MiB of resident memory.

The HTTP side is as small as Prometheus needs: one request per connection, answered and
closed; no threads, nothing that blocks. The textfile (for node_exporter's textfile
collector) is rewritten after every event pyboss logs, each time into a new file that
then replaces the old one with rename(), so a reader sees the old file or the new one,
never half of one.
"""
import os

from .. import __version__
from .metrics import RELOAD_BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GENERATION_STATES = ("starting", "serving", "draining")
MAX_CONNECTIONS = 16        # beyond that the oldest waiting one is dropped
REQUEST_TIMEOUT = 10.0      # seconds a client may take to send its request
MAX_REQUEST = 8192


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if value == float("inf"):
        return "+Inf"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def exposition(supervisor):
    """The supervisor's metrics in Prometheus text format 0.0.4."""
    name = 'name="%s"' % _escape(supervisor.settings.name)
    counters = supervisor.observed.counters
    out = []

    def family(metric, kind, help_text, samples):
        out.append("# HELP %s %s" % (metric, help_text))
        out.append("# TYPE %s %s" % (metric, kind))
        for suffix, labels, value in samples:
            out.append("%s%s{%s} %s" % (metric, suffix, ",".join([name] + labels), _number(value)))

    family("pyboss_info", "gauge", "pyboss's version; always 1.",
           [("", ['version="%s"' % _escape(__version__)], 1)])
    family("pyboss_start_time_seconds", "gauge", "When this pyboss started (Unix time).",
           [("", [], supervisor.observed.started)])
    family("pyboss_reloads_total", "counter", "Reloads by outcome: ok (the new generation "
           "serves) or failed (the old one serves on).",
           [("", ['outcome="%s"' % o], counters.reloads[o]) for o in ("ok", "failed")])
    cumulative, samples = 0, []
    for bound, count in zip(RELOAD_BUCKETS, counters.reload_buckets):
        cumulative += count
        samples.append(("_bucket", ['le="%s"' % _number(bound)], cumulative))
    samples += [("_bucket", ['le="+Inf"'], counters.reload_count),
                ("_sum", [], counters.reload_seconds), ("_count", [], counters.reload_count)]
    family("pyboss_reload_duration_seconds", "histogram", "From the reload request to the new "
           "generation serving, or to the failure.", samples)
    current = supervisor.current
    family("pyboss_last_ready_seconds", "gauge", "How long the serving generation took to "
           "become ready (0 while none serves).",
           [("", [], current.ready_after if current is not None else 0.0)])
    states = [g.state for g in supervisor.generations() if g.alive]
    family("pyboss_generations", "gauge", "Live generations by state.",
           [("", ['state="%s"' % s], states.count(s)) for s in GENERATION_STATES])
    family("pyboss_serving", "gauge", "1 while a generation serves, else 0.",
           [("", [], int(current is not None))])
    family("pyboss_serving_generation", "gauge", "The number of the serving generation "
           "(0 while none serves).", [("", [], current.number if current is not None else 0)])
    family("pyboss_crashes_total", "counter", "Serving generations that exited unasked.",
           [("", [], counters.crashes)])
    family("pyboss_respawns_total", "counter", "Generations started again after a crash or "
           "a failed start.", [("", [], counters.respawns)])
    return "\n".join(out) + "\n"


class MetricsExport:
    def __init__(self, supervisor, sock=None, textfile=None):
        self.supervisor, self.sock, self.textfile = supervisor, sock, textfile
        self.connections = {}       # socket -> [bytes received, timeout timer]
        self.write_scheduled = False
        self.textfile_error = None
        if sock is not None:
            host, port = sock.getsockname()[:2]
            supervisor.observed.metrics["address"] = \
                ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
            sock.setblocking(False)
            supervisor.watch(sock, self.on_accept)
        if textfile is not None:
            supervisor.observed.metrics["textfile"] = textfile
            supervisor.log.observers.append(self.on_event)
            self.write_textfile()

    # -- HTTP ---------------------------------------------------------------------------

    def on_accept(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        if len(self.connections) >= MAX_CONNECTIONS:
            self.drop(next(iter(self.connections)))
        timer = self.supervisor.call_later(REQUEST_TIMEOUT, lambda: self.drop(conn))
        self.connections[conn] = [b"", timer]
        self.supervisor.watch(conn, lambda: self.on_readable(conn))

    def drop(self, conn):
        entry = self.connections.pop(conn, None)
        if entry is not None:
            entry[1].cancel()
            self.supervisor.unwatch(conn)
            conn.close()

    def on_readable(self, conn):
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self.drop(conn)
        entry = self.connections[conn]
        entry[0] += data
        head = entry[0]
        if b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > MAX_REQUEST:
                self.respond(conn, "431 Request Header Fields Too Large", "request too large\n")
            return
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        method = parts[0] if parts else b""
        path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
        if method not in (b"GET", b"HEAD"):
            self.respond(conn, "405 Method Not Allowed", "use GET /metrics\n", head_only=False)
        elif path != b"/metrics":
            self.respond(conn, "404 Not Found", "pyboss serves its metrics on /metrics\n")
        else:
            self.respond(conn, "200 OK", exposition(self.supervisor), CONTENT_TYPE,
                         head_only=method == b"HEAD")

    def respond(self, conn, status, body, content_type="text/plain; charset=utf-8",
                head_only=False):
        body = body.encode()
        head = ("HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                "Connection: close\r\n\r\n" % (status, content_type, len(body))).encode()
        try:
            # A few KiB into an empty socket buffer: one send, never a wait. A client
            # that does not read gets what fitted, and is closed.
            conn.send(head if head_only else head + body)
        except OSError:
            pass
        self.drop(conn)

    # -- textfile -------------------------------------------------------------------------

    def on_event(self, event):
        # After the event's handler is done with the state, not half-way through it.
        if not self.write_scheduled:
            self.write_scheduled = True
            self.supervisor.call_later(0, self.write_textfile)

    def write_textfile(self):
        self.write_scheduled = False
        temporary = "%s.%d.tmp" % (self.textfile, os.getpid())   # not *.prom: not collected
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                data = exposition(self.supervisor).encode()
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.replace(temporary, self.textfile)
        except OSError as e:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            if self.textfile_error != e.strerror:      # once, not after every event
                self.textfile_error = e.strerror
                self.supervisor.log("metrics-textfile", "cannot write %s: %s"
                                    % (self.textfile, e.strerror), level="warning")
            return
        self.textfile_error = None

    def close(self):
        """The last word: the textfile as pyboss leaves it (nothing serving)."""
        for conn in list(self.connections):
            self.drop(conn)
        if self.sock is not None:
            self.sock.close()
        if self.textfile is not None:
            self.write_textfile()
