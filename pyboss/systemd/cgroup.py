"""The processes of this service's cgroup (cgroup v2), found from /proc/self.

Used where pyboss must know everything its unit runs: at start, to stop processes that
no saved state names (strays of an instance stopped while its pyboss was dead), and by
`pyboss sweep` in ExecStopPost=, so that `systemctl stop` leaves nothing behind.
"""
import os


def _cgroup2_mounts():
    """[(mount point, root inside the hierarchy)] of every cgroup2 mount, in mount order."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                separator = fields.index("-")
                if fields[separator + 1] == "cgroup2":
                    found.append((fields[4], fields[3]))
    except (OSError, ValueError, IndexError):
        pass
    return found


def own_cgroup():
    """The directory of the cgroup this process is in, or None without cgroup v2.

    A container may see its host's cgroup2 mount as well as its own, mounted later:
    the last mount under which the cgroup exists is the one that shows it."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line[3:].strip() for line in f if line.startswith("0::")), None)
    except OSError:
        return None
    if path is None:
        return None
    for point, root in reversed(_cgroup2_mounts()):
        relative = path
        if root != "/" and relative.startswith(root):
            relative = relative[len(root):] or "/"
        directory = os.path.join(point, relative.lstrip("/"))
        if os.path.isdir(directory):
            return directory
    return None


def processes(cgroup=None):
    """Pids in the cgroup and below it (empty if it cannot be read)."""
    cgroup = cgroup or own_cgroup()
    pids = []
    if cgroup is None:
        return pids
    for directory, _subdirs, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    pids += [int(p) for p in f.read().split()]
            except (OSError, ValueError):
                pass
    return pids
