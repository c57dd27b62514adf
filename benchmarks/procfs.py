"""What the kernel says about a process: resident memory, CPU ticks, open fds, children.

Read from /proc so that the figures are the supervisor process's own, never its app's.
"""
import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    """Resident set size in KiB (VmRSS), or None if the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cpu_ticks(pid):
    """utime + stime of the process itself (children not included), in clock ticks."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except (FileNotFoundError, ProcessLookupError):
        return None


def children(pid):
    """Direct children of pid (all threads), from /proc/PID/task/*/children."""
    found = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                found.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
    return found


def descendants(pid):
    result = []
    pending = children(pid)
    while pending:
        child = pending.pop()
        result.append(child)
        pending.extend(children(child))
    return result


def tree_rss_kib(pid):
    """RSS of pid and all its descendants (what the service costs in total)."""
    total = 0
    for member in [pid] + descendants(pid):
        total += rss_kib(member) or 0
    return total


def pin_tree(pid, cpus):
    """Pin every thread of pid and its descendants to cpus; threads they start later
    inherit it. Returns False where the kernel refused."""
    ok = True
    for member in [pid] + descendants(pid):
        try:
            tasks = os.listdir("/proc/%d/task" % member)
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                os.sched_setaffinity(int(task), cpus)
            except OSError:
                ok = False
    return ok
