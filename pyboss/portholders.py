"""Who holds a port: /proc/net/{tcp,udp}{,6} give the socket inode, /proc/PID/fd the process.

Used to explain "Address already in use", typically after pyboss itself was SIGKILLed and
its generations kept serving: the operator learns which pid and command to stop.
"""
import os

_LISTEN = "0A"      # TCP_LISTEN in /proc/net/tcp's st column


def socket_inodes(kind, port):
    """Inodes of the sockets bound to port (tcp: listening ones) in this net namespace."""
    inodes = set()
    for table in ("/proc/net/%s" % kind, "/proc/net/%s6" % kind):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            if kind == "tcp" and fields[3] != _LISTEN:
                continue
            if fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def _command(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv)
    return text if len(text) <= 100 else text[:97] + "..."


def _generation(pid):
    """'generation N of a pyboss that is gone' for a child of a dead pyboss, else ''."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        with open("/proc/%d/stat" % pid, "rb") as f:
            ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return ""
    number = env.get(b"PYBOSS_GENERATION")
    if number is None:
        return ""
    if "pyboss" in _command(ppid):
        return ", generation %s of pyboss pid %d" % (number.decode(errors="replace"), ppid)
    return ", generation %s of a pyboss that is no longer running" % number.decode(errors="replace")


def holders(kind, port):
    """[(pid, description)] of the processes holding a socket bound to port."""
    wanted = {"socket:[%s]" % inode for inode in socket_inodes(kind, port)}
    found = []
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = "/proc/%s/fd" % entry
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) in wanted:
                    pid = int(entry)
                    found.append((pid, _command(pid) + _generation(pid)))
                    break
            except OSError:
                continue
    return sorted(found)


def describe_holders(kind, port, limit=3):
    """'held by pid 12 (cmd), pid 13 (cmd)' or '' when /proc does not tell."""
    found = holders(kind, port)
    if not found:
        return ""
    text = ", ".join("pid %d (%s)" % item for item in found[:limit])
    if len(found) > limit:
        text += " and %d more" % (len(found) - limit)
    return "held by " + text
