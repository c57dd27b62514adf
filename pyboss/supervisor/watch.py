"""--reload-on-change: reload the app once when a watched file or directory changes.

inotify (through ctypes: no dependency) only wakes pyboss up; whether something really
changed is decided by comparing a fingerprint of each watched path (what it resolves
to, inode, size, mtime; a directory's entries) before and after. That one rule covers
the ways files are replaced in practice:
- written in place (an event on the file's name in its directory);
- replaced by rename, as editors and certificate tools do (a new inode under the name);
- Kubernetes ConfigMap and Secret volumes, which write a new `..TIMESTAMP` directory
  and swap the `..data` symlink to it by rename: every symlink on the way from the
  watched path to the real file is followed, and the directory holding each link is
  watched too;
- a path that does not exist yet: its nearest existing ancestor is watched until it
  appears.
Watches are re-armed after every batch of events, since a swap moves the targets.
Events are debounced: one reload once the burst has been quiet for --reload-debounce.
"""
import os
import stat
import struct
import time

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_ONLYDIR = 0x400, 0x800, 0x01000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
DIRECTORY_EVENTS = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
                    | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_EVENT = struct.Struct("iIII")
MAX_POSTPONE = 5      # a steady stream of writes postpones the reload at most 5 debounces


def _is_scratch(name):
    """Editors' swap and backup files: their coming and going is no change."""
    return name.endswith((".swp", ".swx", "~")) or name == "4913"


class Inotify:
    def __init__(self):
        import ctypes       # here: only --reload-on-change needs it in the supervisor
        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))

    def fileno(self):
        return self.fd

    def add(self, directory):
        """The watch descriptor, or raises OSError (EACCES, ENOSPC: out of watches)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), DIRECTORY_EVENTS)
        if wd < 0:
            errno = self._ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), directory)
        return wd

    def remove(self, wd):
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self):
        """How many events were waiting (their content does not matter: see above)."""
        count = 0
        try:
            while True:
                data = os.read(self.fd, 65536)
                offset = 0
                while offset + _EVENT.size <= len(data):
                    _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                    offset += _EVENT.size + length
                    count += 1
        except BlockingIOError:
            pass
        return count

    def close(self):
        os.close(self.fd)


def directories_to_watch(path):
    """The directories whose events can mean that path changed (see the module text)."""
    found, hops = set(), 0
    while hops < 40:
        parts = path.split(os.sep)
        for i in range(2, len(parts)):          # a symlinked directory on the way
            prefix = os.sep.join(parts[:i])
            if os.path.islink(prefix):
                found.add(os.path.dirname(prefix) or os.sep)
        parent = os.path.dirname(path) or os.sep
        if not os.path.lexists(path):
            while not os.path.isdir(parent):
                parent = os.path.dirname(parent)
            found.add(parent)
            break
        found.add(parent)
        if os.path.islink(path):
            path = os.path.normpath(os.path.join(parent, os.readlink(path)))
            hops += 1
            continue
        if os.path.isdir(path):
            found.add(path)
        break
    return found


def _entry(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def fingerprint(path):
    """What path is now; a different value means a change worth a reload."""
    here = _entry(path)
    if here is None or not stat.S_ISDIR(here[5]):
        return here
    try:
        names = sorted(n for n in os.listdir(path) if not _is_scratch(n))
    except OSError:
        return here[:3]
    # A directory's own mtime moves with every swap file: only its entries count.
    return here[:3] + tuple((n, _entry(os.path.join(path, n))) for n in names)


class ChangeReloads:
    """Watches the --reload-on-change paths and asks the supervisor for one reload per
    change; a failed reload is logged and counted, and the next change tries again."""

    @classmethod
    def start(cls, supervisor, settings):
        paths = getattr(settings, "reload_on_change", None)
        if not paths:
            return None
        return cls(supervisor, paths, settings.reload_debounce)

    def __init__(self, supervisor, paths, debounce):
        self.supervisor = supervisor
        self.paths = list(paths)
        self.debounce = debounce
        self.inotify = Inotify()
        self.watches = {}              # wd -> directory
        self.unwatchable = set()       # directories already reported
        self.rearm()
        self.last = [fingerprint(p) for p in self.paths]
        self.timer = None
        self.first_event = None
        self.changes = self.reloaded = self.failed = 0
        self.last_error = None
        self.last_change = None
        supervisor.watch(self.inotify, self.on_events)

    def rearm(self):
        wanted = set()
        for path in self.paths:
            wanted |= directories_to_watch(path)
        watches = {}
        for directory in sorted(wanted):
            try:
                watches[self.inotify.add(directory)] = directory
            except OSError as e:
                if directory not in self.unwatchable:
                    self.unwatchable.add(directory)
                    self.supervisor.log("watch-failed", "cannot watch %s for --reload-on-change:"
                                        " %s" % (directory, e.strerror), level="error")
        for wd in set(self.watches) - set(watches):
            self.inotify.remove(wd)
        self.watches = watches

    def on_events(self):
        if not self.inotify.read():
            return
        now = time.monotonic()
        if self.timer is None:
            self.first_event = now
        else:
            self.timer.cancel()
        delay = min(self.debounce, self.first_event + MAX_POSTPONE * self.debounce - now)
        self.timer = self.supervisor.call_later(max(0.0, delay), self.settle)

    def settle(self):
        self.timer = None
        self.rearm()
        now = [fingerprint(p) for p in self.paths]
        changed = [p for p, old, new in zip(self.paths, self.last, now) if old != new]
        self.last = now
        if not changed or self.supervisor.stopping:
            return
        self.changes += 1
        self.last_change = time.time()
        self.supervisor.log("change", "%s changed: reloading" % ", ".join(changed))
        self.supervisor.request_reload(self)

    def reply(self, outcome):
        """The verdict of a reload this watcher asked for (the waiter interface)."""
        if outcome.get("ok"):
            self.reloaded += 1
            return
        if self.supervisor.stopping:
            return
        self.failed += 1
        self.last_error = outcome.get("error")
        self.supervisor.log("change-reload-failed", "reload after a change failed: %s; the old "
                            "generation keeps serving, the next change tries again"
                            % self.last_error, level="error")

    def as_dict(self):
        return {"paths": self.paths, "changes": self.changes, "reloaded": self.reloaded,
                "failed": self.failed, "last_error": self.last_error,
                "last_change": self.last_change and round(self.last_change, 3),
                "pending": self.timer is not None,
                "watching": sorted(self.watches.values())}

    def close(self):
        self.supervisor.unwatch(self.inotify)
        self.inotify.close()
