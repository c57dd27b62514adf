"""pyboss's metrics: counters kept by the supervisor, and the Prometheus text exposition.

The exposition is written here rather than with prometheus_client, which would cost the
supervisor about 14 MiB of resident memory. The counters are a plain object with
to_dict()/from_dict() so that they can be carried to the next pyboss process.
"""
from .. import __version__

# Upper bounds of the reload-duration histogram, in seconds (+Inf is added).
RELOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GENERATION_STATES = ("starting", "serving", "draining")


class Counters:
    """What only grows: reloads by outcome, their durations, crashes, respawns."""

    def __init__(self):
        self.reloads = {"ok": 0, "failed": 0}
        self.reload_buckets = [0] * len(RELOAD_BUCKETS)   # not cumulative: one per bound
        self.reload_count = 0
        self.reload_seconds = 0.0
        self.crashes = 0          # a serving generation died without being asked to
        self.respawns = 0         # generations started again after a crash or a failed start

    def reload(self, outcome, seconds):
        self.reloads[outcome] += 1
        self.reload_count += 1
        self.reload_seconds += seconds
        for i, bound in enumerate(RELOAD_BUCKETS):
            if seconds <= bound:
                self.reload_buckets[i] += 1
                break

    def to_dict(self):
        return {"reloads": dict(self.reloads), "reload_buckets": list(self.reload_buckets),
                "reload_count": self.reload_count, "reload_seconds": self.reload_seconds,
                "crashes": self.crashes, "respawns": self.respawns}

    @classmethod
    def from_dict(cls, data):
        """Counters from to_dict()'s output; what is missing or malformed starts at 0."""
        counters = cls()
        reloads = data.get("reloads") or {}
        for outcome in counters.reloads:
            counters.reloads[outcome] = _count(reloads.get(outcome))
        buckets = data.get("reload_buckets") or []
        if len(buckets) == len(RELOAD_BUCKETS):
            counters.reload_buckets = [_count(b) for b in buckets]
        counters.reload_count = _count(data.get("reload_count"))
        seconds = data.get("reload_seconds")
        if isinstance(seconds, (int, float)) and 0 <= seconds < float("inf"):
            counters.reload_seconds = float(seconds)
        counters.crashes = _count(data.get("crashes"))
        counters.respawns = _count(data.get("respawns"))
        return counters


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


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
