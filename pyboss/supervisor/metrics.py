"""pyboss's counters: what only grows, kept by the supervisor whether or not it exports
metrics (metrics_export.py writes them out).

A plain object with to_dict()/from_dict(), so that the counters can be carried to the
next pyboss process across an upgrade or a crash.
"""
# Upper bounds of the reload-duration histogram, in seconds (+Inf is added).
RELOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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
