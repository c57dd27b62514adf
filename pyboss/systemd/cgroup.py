"""The processes of this service's cgroup (cgroup v2), found from /proc/self.

Used where pyboss must know everything its unit runs: at start, to stop processes that
no saved state names (strays of an instance stopped while its pyboss was dead), and by
`pyboss sweep` in ExecStopPost=, so that `systemctl stop` leaves nothing behind.
"""
import os


def _cgroup2_mount():
    """(mount point, root inside the hierarchy) of the cgroup2 filesystem, or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                separator = fields.index("-")
                if fields[separator + 1] == "cgroup2":
                    return fields[4], fields[3]
    except (OSError, ValueError, IndexError):
        pass
    return None


def own_cgroup():
    """The directory of the cgroup this process is in, or None without cgroup v2."""
    mount = _cgroup2_mount()
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line[3:].strip() for line in f if line.startswith("0::")), None)
    except OSError:
        return None
    if mount is None or path is None:
        return None
    point, root = mount
    if root != "/" and path.startswith(root):
        path = path[len(root):] or "/"
    return os.path.join(point, path.lstrip("/"))


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
