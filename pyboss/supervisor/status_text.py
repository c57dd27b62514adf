"""A status reply as the lines `pyboss status` prints (the JSON is the control socket's)."""
import time

from . import observe


def _clock(timestamp):
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def _up(entry):
    return "up %s  " % observe.duration(entry["uptime"]) if "uptime" in entry else ""


def _ready(ready_after):
    return "ready after %.3fs" % ready_after if ready_after is not None else "not ready"


def format_status(status):
    """A status reply as the lines `pyboss status` prints."""
    lines = []
    lines.append("pyboss %r (pid %d): %s" % (status["name"], status["pid"], status["state"]))
    lines.extend(observe.format_self(status))
    lines.append("  command: %s" % " ".join(status["command"]))
    if status.get("workers", 1) != 1 or status.get("reload_strategy", "all") != "all":
        lines.append("  workers: %d, reload strategy %s" % (status["workers"],
                                                             status["reload_strategy"]))
    lines.append("  listeners:")
    for l in status["listeners"]:
        lines.append("    %-12s %-6s %-28s %s" % (l["name"], l["kind"], l["address"], l["origin"]))
    lines.append("  generations:")
    for g in status["generations"]:
        workers = g.get("workers", [])
        if status.get("workers", 1) == 1 and len(workers) <= 1:
            lines.append("    #%-4d pid %-8d %-9s started %s  %s%s%s" % (
                g["number"], g["pid"], g["state"], _clock(g["started"]), _up(g),
                _ready(g["ready_after"]), "  (%s)" % g["status"] if g.get("status") else ""))
            continue
        lines.append("    #%-4d %-9s started %s  %s" % (
            g["number"], g["state"], _clock(g["started"]), _ready(g["ready_after"])))
        for w in workers:
            lines.append("      slot %-3d pid %-8d %-9s %s%s%s%s" % (
                w["slot"], w["pid"], w["state"], _up(w), _ready(w["ready_after"]),
                "  generation %d" % w["number"] if w["number"] != g["number"] else "",
                "  (%s)" % w["status"] if w.get("status") else ""))
    if status["reloads"]:
        lines.append("  last reloads:")
    for r in status["reloads"]:
        lines.append("    #%-4d %-7s %.3fs at %s%s" % (
            r["generation"], r["outcome"], r["duration"],
            time.strftime("%H:%M:%S", time.localtime(r["requested"])),
            ": " + r["reason"] if r["reason"] else ""))
    lines.extend(observe.format_failed(status))
    changes = status.get("reload_on_change")
    if changes:
        lines.append("  reload on change: %s" % ", ".join(changes["paths"]))
        lines.append("    %d change(s): %d reloaded, %d failed%s" % (
            changes["changes"], changes["reloaded"], changes["failed"],
            " (last: %s)" % changes["last_error"] if changes["failed"] else ""))
    if status.get("orphans", {}).get("reaped"):
        lines.append("  orphans reaped: %d" % status["orphans"]["reaped"])
    return "\n".join(lines)
