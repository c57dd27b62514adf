"""A real systemd as PID 1 of fresh namespaces, for tests of everything systemd does.

The host's PID 1 is not systemd, but systemd is installed: booted as PID 1 of new pid,
mount, cgroup, uts, ipc and net namespaces it comes up in about 0.2 s, with its own
/run, its own cgroup tree and its own loopback. Units come from a directory of the
test's choosing, bound over /run/systemd/system; nothing is written to the host's /etc.

    with SystemdNamespace(units_dir) as ns:
        ns.systemctl("start", "myapp.socket")
        ns.run(["curl", "-sf", "http://127.0.0.1:8080/"])

Or through the pytest fixture ``systemd_ns`` (a factory: ``systemd_ns(units_dir)``).
"""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cgroup2 import cgroup2_root, root_is_a_mount_point
from systemd_backports import systemd_254_usr

SYSTEMD = Path("/lib/systemd/systemd")

# Runs as PID 1 of the new namespaces and becomes systemd. Everything it mounts lives
# in the private mount namespace and goes away with it.
BOOT_SCRIPT = r"""
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/lock /run/empty /run/systemd/system /run/systemd/system.conf.d /run/systemd/journald.conf.d
mount --bind "$UNITS_DIR" /run/systemd/system
# The test's directories over paths inside (a host's own /srv): seen by this instance only.
# Targets under /run are made in the fresh tmpfs; others must exist (nothing is created
# on the shared host).
if [ -n "$BINDS" ]; then
  printf '%s\n' "$BINDS" | while IFS='	' read -r source target; do
    case "$target" in /run/*) mkdir -p "$target" ;; esac
    mount --bind "$source" "$target"
  done
fi
# A newer systemd over /usr goes first: mounted later it would hide the masks below.
if [ -n "$OVERLAY_USR" ]; then
  mount -t overlay overlay -o "ro,lowerdir=$OVERLAY_USR/usr:/usr" /usr
fi
# Host services (postgres, apt timers, sysctl, tmpfiles) must not start against the shared host.
for d in /etc/systemd/system/*.wants /lib/systemd/system/sysinit.target.wants \
         /lib/systemd/system/timers.target.wants /lib/systemd/system/multi-user.target.wants \
         /lib/systemd/system/local-fs.target.wants /lib/systemd/system/getty.target.wants; do
  [ -d "$d" ] && mount --bind /run/empty "$d"
done
# sysinit.target.wants holds systemd-tmpfiles-setup, which would empty the host's /tmp.
if [ -n "$(ls -A /lib/systemd/system/sysinit.target.wants)" ]; then
  echo "refusing to boot: host services still wanted by sysinit.target" >&2
  exit 1
fi
# A unit ignoring SIGTERM would otherwise hold up poweroff for 90 s.
printf '[Manager]\nDefaultTimeoutStopSec=10s\n' > /run/systemd/system.conf.d/test.conf
printf '[Journal]\nStorage=volatile\nReadKMsg=no\n' > /run/systemd/journald.conf.d/test.conf
# PID 1 would write to the machine's serial console.
mount --bind /dev/null /dev/console
mount -t tmpfs tmpfs /var/log/journal 2>/dev/null || true
# Whatever the host has at /sys/fs/cgroup (hybrid: a tmpfs of v1 controllers; pure v2:
# cgroup2 itself, which mount(8) would refuse to mount again; a chroot: nothing) gives
# way to a cgroup2 mount rooted at our cgroup namespace.
umount -R /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
export container=other
exec /lib/systemd/systemd --system --unit=basic.target --log-target=journal
"""

# -r, -w: the root directory of PID 1 inside, which is the chroot's when the tests run in
# one (entering a mount namespace alone would put the host's / back as root).
NSENTER_FLAGS = ("-m", "-p", "-n", "-u", "-i", "-C", "-r", "-w")
_instance_numbers = itertools.count(1)


def missing_requirements():
    """Why a real systemd cannot be booted here, or None when it can."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root (running as uid %d)" % os.geteuid()
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return "%s not found on PATH" % tool
    if not os.access(SYSTEMD, os.X_OK):
        return "%s not found: systemd is not installed" % SYSTEMD
    if not root_is_a_mount_point():
        return ("/ is not a mount point (a chroot of a plain directory?), so no mount "
                "namespace can be made private: bind-mount the root onto itself before "
                "chrooting (mount --bind DIR DIR), as tests/fresh-debian does")
    return cgroup2_root()[1]


class CommandFailed(subprocess.CalledProcessError):
    """A command inside failed; its message carries what it said on stderr."""

    def __str__(self):
        return "%s\n%s" % (super().__str__(), (self.stderr or "").strip())


class SystemdNamespace:
    """systemd as PID 1 of fresh namespaces; a context manager that boots and powers off."""

    def __init__(self, units_dir, overlay_usr=None, boot_timeout=30.0, binds=None):
        """binds: {path inside: directory of the test's} mounted over it, private to
        this instance (several instances then have the same path with their own files)."""
        self.units_dir = Path(units_dir).resolve()
        self.binds = {str(inside): Path(source).resolve()
                      for inside, source in (binds or {}).items()}
        self.overlay_usr = Path(overlay_usr).resolve() if overlay_usr else None
        self.boot_timeout = boot_timeout
        self.cgroup = None     # made at boot, in whatever cgroup2 hierarchy there is
        self.pid = None  # PID 1 of the namespaces, as the host sees it
        self._unshare = None
        self._console = None
        self._background = []

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self):
        self.boot()
        return self

    def __exit__(self, *exc_info):
        self.shutdown()

    def boot(self):
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        if not self.units_dir.is_dir():
            raise ValueError("units directory %s does not exist" % self.units_dir)
        root, _ = cgroup2_root()
        self.cgroup = root / ("pyboss-test-%d-%d" % (os.getpid(), next(_instance_numbers)))
        self.cgroup.mkdir()
        # The boot output (unshare/mount errors) is kept for the failure message.
        self._console = tempfile.TemporaryFile(prefix="systemd-ns-console-")
        for inside, source in self.binds.items():
            if not source.is_dir() or "\t" in inside + str(source) or "\n" in inside + str(source):
                raise ValueError("cannot bind %s over %s" % (source, inside))
        env = dict(os.environ, UNITS_DIR=str(self.units_dir),
                   OVERLAY_USR=str(self.overlay_usr or ""),
                   BINDS="\n".join("%s\t%s" % (source, inside)
                                   for inside, source in self.binds.items()))
        # Join the private cgroup before unsharing: two instances sharing one cgroup
        # fight over init.scope.
        launcher = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
        try:
            self._unshare = subprocess.Popen(
                ["sh", "-c", launcher, "sh", str(self.cgroup),
                 "unshare", "--pid", "--fork", "--mount", "--cgroup", "--uts", "--ipc",
                 "--net", "--mount-proc", "sh", "-c", BOOT_SCRIPT],
                stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
            self.pid = self._wait_for_init()
            self._wait_until_running()
        except BaseException:
            self.shutdown()
            raise

    def _wait_for_init(self):
        children = Path("/proc/%d/task/%d/children" % (self._unshare.pid, self._unshare.pid))
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:
            if self._unshare.poll() is not None:
                raise RuntimeError("namespace exited during boot: " + self.console_output())
            try:
                pids = children.read_text().split()
            except FileNotFoundError:
                pids = []
            # unshare is the sh launcher until it execs; its child is PID 1 inside.
            if pids and os.readlink("/proc/%d/exe" % self._unshare.pid).endswith("unshare"):
                return int(pids[0])
            time.sleep(0.005)
        raise TimeoutError("unshare did not fork PID 1 within %.0f s" % self.boot_timeout)

    def _wait_until_running(self):
        # Boot completion is not an event the host can await: poll with a deadline.
        deadline = time.monotonic() + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            if self._unshare.poll() is not None:
                raise RuntimeError("systemd exited during boot: " + self.console_output())
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.02)
        raise TimeoutError("systemd not running after %.0f s (last state %r); %s"
                           % (self.boot_timeout, state, self.console_output()))

    def shutdown(self, timeout=15.0):
        """Power off, wait for the namespaces to end, remove the cgroup; SIGKILL if stuck."""
        for proc in self._background:
            if proc.poll() is None:
                proc.kill()
        if self._unshare is not None and self._unshare.poll() is None:
            if self.pid is not None:
                try:
                    self.run(["systemctl", "start", "poweroff.target", "--no-block"],
                             check=False, timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass  # the SIGKILL below still ends it
            try:
                self._unshare.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # Killing PID 1 of a pid namespace kills everything inside it; unshare
                # then reaps it and exits (killing unshare too would leave a zombie).
                _kill(self.pid if self.pid is not None else self._unshare.pid)
                self._unshare.wait(timeout=10)
        for proc in self._background:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._background.clear()
        if self.cgroup is not None:
            remove_cgroup_tree(self.cgroup, timeout=10)
        if self._console is not None:
            self._console.close()
            self._console = None

    def console_output(self):
        if self._console is None:
            return ""
        self._console.seek(0)
        return self._console.read().decode(errors="replace")

    # -- running things inside ---------------------------------------------------------

    def command(self, argv):
        """argv prefixed so that it runs inside the namespaces."""
        if self.pid is None:
            raise RuntimeError("systemd namespace is not booted")
        return ["nsenter", "-t", str(self.pid), *NSENTER_FLAGS, "--", *[str(a) for a in argv]]

    def run(self, argv, timeout=60, check=True, input=None, env=None):
        """Run argv inside; returns the CompletedProcess with text stdout/stderr."""
        result = subprocess.run(self.command(argv), input=input, capture_output=True,
                                text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
        return result

    def systemctl(self, *args, timeout=60, check=True):
        return self.run(["systemctl", *args], timeout=timeout, check=check)

    def journal(self, unit=None):
        """The journal text of one unit, or all of it."""
        # --sync: everything logged before this call is in what we read.
        self.run(["journalctl", "--sync"], check=False)
        argv = ["journalctl", "--no-pager", "-o", "short-monotonic"]
        if unit:
            argv += ["-u", unit]
        return self.run(argv, check=False).stdout

    def start_background(self, argv, **popen_kwargs):
        """Start argv inside (a load client on the namespace's loopback); killed at shutdown."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.command(argv), **popen_kwargs)
        self._background.append(proc)
        return proc

    def cgroup_processes(self):
        """Host pids of every process in the namespace's cgroup tree."""
        return processes_in(self.cgroup)

    def unit_processes(self, unit, slice_="system.slice"):
        """Host pids of every process in one unit's cgroup (empty once it is gone)."""
        return processes_in(self.cgroup / slice_ / unit)


def processes_in(cgroup):
    """Pids of every process in a cgroup tree (none if it does not exist)."""
    pids = []
    try:
        found = list(Path(cgroup).glob("**/cgroup.procs"))
    except FileNotFoundError:
        return []   # systemd removed the emptied cgroup while it was being listed
    for procs in found:
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


def running(pid):
    """Whether pid is a live process (an unreaped zombie holds nothing but its pid)."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def remove_cgroup_tree(cgroup, timeout):
    """rmdir a cgroup and its children, deepest first, once their processes are gone."""
    if not cgroup.exists():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            for path in sorted(cgroup.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir():
                    path.rmdir()
            return
        except OSError:
            # EBUSY while the last processes of a cgroup are still being reaped.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def remove_orphaned_namespaces():
    """Kill and remove namespaces left by test runs that died without cleaning up.

    Their cgroups are named after the pid of the test process; when that process is
    gone, nothing will ever power them off. Returns the cgroups removed.
    """
    removed = []
    root, reason = cgroup2_root()
    if root is None:
        return removed
    for cgroup in root.glob("pyboss-test-*-*"):
        owner = cgroup.name.split("-")[2]
        if not owner.isdigit() or running(int(owner)):
            continue
        try:
            (cgroup / "cgroup.kill").write_text("1")
        except OSError:
            for pid in processes_in(cgroup):
                _kill(pid)
        remove_cgroup_tree(cgroup, timeout=10)
        removed.append(cgroup)
    return removed


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- pytest fixtures ---------------------------------------------------------------------

@pytest.fixture
def systemd_ns():
    """Factory: ``systemd_ns(units_dir, overlay_usr=None, binds=None)`` -> a booted
    SystemdNamespace.

    Every namespace made is powered off and its cgroup removed at teardown, also when
    the test failed. Skips (with the reason) where the host cannot boot systemd.
    """
    reason = missing_requirements()
    if reason:
        pytest.skip("real systemd unavailable: " + reason)
    remove_orphaned_namespaces()
    made = []

    def make(units_dir, overlay_usr=None, boot_timeout=30.0, binds=None):
        ns = SystemdNamespace(units_dir, overlay_usr=overlay_usr, boot_timeout=boot_timeout,
                              binds=binds)
        made.append(ns)
        ns.boot()
        return ns

    yield make
    errors = []
    for ns in reversed(made):
        try:
            ns.shutdown()
        except Exception as exc:  # keep shutting down the others
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def systemd_254():
    """Path of a systemd 254 /usr tree to pass as overlay_usr=; skips when unavailable."""
    reason = missing_requirements()
    if reason:
        pytest.skip("real systemd unavailable: " + reason)
    try:
        return systemd_254_usr()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip("systemd 254 unavailable: %s" % exc)


def python_executable():
    """The interpreter running the tests; visible inside (only /run is private)."""
    return sys.executable
