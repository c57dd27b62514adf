"""Where the systemd harness makes its cgroups: a cgroup2 hierarchy, on any layout.

- hybrid (our machines and CI): cgroup2 is mounted at /sys/fs/cgroup/unified;
- pure cgroup v2 (a Debian 12 booted by systemd, most CI runners): at /sys/fs/cgroup;
- a chroot, or a container, where none is mounted (or only read-only): the harness
  mounts one itself, in a mount namespace of its own held open by a helper process,
  and reaches it through /proc/HELPER/root. The host's mount table is never touched.

Every mount of cgroup2 shows the same single hierarchy, so cgroups made through one
are found again through another (how a later run removes what a killed one left).
"""
import atexit
import os
import shutil
import subprocess
from pathlib import Path

# The helper mounts over /sys/fs/cgroup in its own namespace: that path exists wherever
# sysfs is mounted, which booting systemd needs anyway.
PRIVATE_MOUNT_POINT = "/sys/fs/cgroup"

_helper = None          # the process holding our own mount namespace, once started
_helper_failure = None  # why it could not mount cgroup2, once tried


def _unescape(field):
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def cgroup2_mounts(mountinfo="/proc/self/mountinfo"):
    """Mount points of cgroup2 in this mount namespace, hierarchy roots first."""
    found = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            if "-" not in fields:
                continue
            after = fields[fields.index("-") + 1:]
            if after and after[0] == "cgroup2":
                # fields[3] is the mount's root inside the hierarchy ("/" unless a bind).
                found.append((fields[3] != "/", Path(_unescape(fields[4]))))
    return [path for _, path in sorted(found, key=lambda item: item[0])]


def root_is_a_mount_point(mountinfo="/proc/self/mountinfo"):
    """False in a chroot of a plain directory: there `unshare --mount` cannot make "/"
    private (EINVAL), so no private mount namespace can be had."""
    with open(mountinfo) as f:
        return any(line.split()[4] == "/" for line in f if len(line.split()) > 4)


def _writable(path):
    return os.access(path, os.W_OK | os.X_OK) and (path / "cgroup.procs").exists()


def _stop_helper():
    if _helper is not None and _helper.poll() is None:
        _helper.kill()
        _helper.wait()


def _private_mount():
    """cgroup2 mounted in a mount namespace of our own; (path, None) or (None, why not)."""
    global _helper, _helper_failure
    if _helper is not None and _helper.poll() is None:
        return Path("/proc/%d/root%s" % (_helper.pid, PRIVATE_MOUNT_POINT)), None
    if _helper_failure:
        return None, _helper_failure
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            _helper_failure = "no cgroup2 mounted, and %s (util-linux) is missing to mount " \
                              "one" % tool
            return None, _helper_failure
    # --pdeathsig: the helper (and with it the namespace) ends with this process,
    # even when it is SIGKILLed.
    script = 'mount -t cgroup2 cgroup2 "$1" && echo mounted && exec sleep infinity'
    helper = subprocess.Popen(
        ["setpriv", "--pdeathsig", "KILL", "unshare", "--mount", "--propagation", "private",
         "sh", "-c", script, "sh", PRIVATE_MOUNT_POINT],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if helper.stdout.readline().strip() != "mounted":
        helper.wait()
        _helper_failure = ("no writable cgroup2 hierarchy is mounted, and mounting one in a "
                           "mount namespace of our own failed: %s"
                           % (helper.stderr.read().strip() or "exit %d" % helper.returncode))
        return None, _helper_failure
    helper.stdout.close()
    _helper = helper
    atexit.register(_stop_helper)
    return _private_mount()


def cgroup2_root():
    """(a writable cgroup2 hierarchy's path, None), or (None, the reason there is none)."""
    for path in cgroup2_mounts():
        if _writable(path):
            return path, None
    return _private_mount()
