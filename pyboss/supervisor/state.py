"""What the next pyboss needs to carry on: generations, history, counters.

A pyboss that is SIGKILLed, crashes, or replaces its own code (`pyboss upgrade`) leaves
its generations running. The next pyboss finds them here:

- under systemd, in a memfd kept in the fd store (FDNAME=pyboss+state), which systemd
  hands back to the pyboss that Restart= starts;
- outside systemd, in NAME.state beside the control socket, mode 0600, replaced
  atomically (written to a temporary file, then renamed).

A generation is recorded with its pid *and* its start time from /proc/PID/stat: a pid
reused by another process after a reboot or a long outage is never mistaken for it.
The state is written after every turn of the event loop that changed it.
"""
import binascii     # crc32 as zlib has it, without zlib in the supervisor
import json
import os
import struct

from .. import __version__

FORMAT = 1                      # what a pyboss must understand to adopt from this state
SLOT_SIZE = 1 << 20             # memfd: two slots, written in turn; a torn write loses one
_HEADER = struct.Struct("<4sQII")   # magic, sequence, length, crc32
_MAGIC = b"PBST"


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks after boot), or None if pid is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None             # a zombie serves nothing
    return int(fields[19])


_own = {}


def own_start_time():
    pid = os.getpid()
    if pid not in _own:
        _own[pid] = start_time(pid)
    return _own[pid]


def same_process(pid, recorded_start):
    return recorded_start is not None and start_time(pid) == recorded_start


def _deadline(gen):
    timer = gen.deadline_timer
    return None if timer is None or timer.cancelled else round(timer.when, 3)


def snapshot(supervisor):
    """The supervisor's state as plain data (JSON-able); generations alive only."""
    roles = {}
    if supervisor.current is not None:
        roles[supervisor.current.number] = "current"
    if supervisor.pending is not None:
        roles[supervisor.pending.number] = "pending"
    generations = []
    for gen in supervisor.generations():
        if not gen.alive:
            continue
        if getattr(gen, "start_time", None) is None:
            gen.start_time = start_time(gen.pid)
        generations.append({
            "number": gen.number, "pid": gen.pid, "start_time": gen.start_time,
            "role": roles.get(gen.number, "old"), "state": gen.state,
            "started": gen.started, "started_mono": gen.started_mono,
            "ready_after": gen.ready_after, "status": gen.status_text,
            "deadline": _deadline(gen)})
    return {
        "format": FORMAT, "version": __version__,
        "supervisor": {"pid": os.getpid(), "start_time": own_start_time()},
        "name": supervisor.settings.name, "argv": supervisor.settings.argv,
        "listeners": [dict(l.as_dict(), created_path=l.created_path,
                           created_inode=l.created_inode) for l in supervisor.listeners],
        "notify": {"path": supervisor.notify.bound_path,
                   "private_dir": supervisor.notify.private_dir},
        "number": supervisor.number, "pending_purpose": supervisor.pending_purpose,
        "generations": generations, "history": list(supervisor.history),
        "counters": {"failures": supervisor.failures, "crashes": supervisor.crashes},
        "metrics": supervisor.observed.counters.to_dict(),     # what /metrics counts
        "reload_requested_at": supervisor.reload_requested_at,
        "ready_sent": supervisor.upstream.ready_sent,
    }


class StateFile:
    """NAME.state beside the control socket (outside systemd)."""
    kind = "file"

    def __init__(self, path):
        self.path = path

    @staticmethod
    def beside(control_path):
        base = control_path[:-5] if control_path.endswith(".sock") else control_path
        return StateFile(base + ".state")

    def read(self):
        try:
            with open(self.path, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def write(self, data):
        temporary = "%s.%d.tmp" % (self.path, os.getpid())
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    def remove(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def handoff(self):
        return {"kind": self.kind, "path": self.path}


class StateMemfd:
    """A memfd in systemd's fd store; two slots so that a write cut short by SIGKILL
    leaves the previous state readable."""
    kind = "memfd"

    def __init__(self, fd, sequence=0):
        self.fd = fd
        self.sequence = sequence

    @classmethod
    def create(cls):
        return cls(os.memfd_create("pyboss-state", os.MFD_CLOEXEC))

    def _slots(self):
        found = []
        for slot in (0, 1):
            header = os.pread(self.fd, _HEADER.size, slot * SLOT_SIZE)
            if len(header) < _HEADER.size:
                continue
            magic, sequence, length, crc = _HEADER.unpack(header)
            if magic != _MAGIC or length > SLOT_SIZE - _HEADER.size:
                continue
            payload = os.pread(self.fd, length, slot * SLOT_SIZE + _HEADER.size)
            if len(payload) == length and binascii.crc32(payload) == crc:
                found.append((sequence, payload))
        return sorted(found)

    def read(self):
        slots = self._slots()
        if not slots:
            return None
        self.sequence, payload = slots[-1]
        try:
            return json.loads(payload)
        except ValueError:
            return None

    def write(self, data):
        if len(data) > SLOT_SIZE - _HEADER.size:
            raise ValueError("state of %d bytes does not fit a slot" % len(data))
        self.sequence += 1
        header = _HEADER.pack(_MAGIC, self.sequence, len(data), binascii.crc32(data))
        os.pwrite(self.fd, header + data, (self.sequence % 2) * SLOT_SIZE)

    def remove(self):
        os.ftruncate(self.fd, 0)        # the fd itself stays in the store, empty

    def handoff(self):
        os.set_inheritable(self.fd, True)
        return {"kind": self.kind, "fd": self.fd, "sequence": self.sequence}


def from_handoff(data):
    if data is None:
        return None
    if data["kind"] == "file":
        return StateFile(data["path"])
    os.set_inheritable(data["fd"], False)
    return StateMemfd(data["fd"], data["sequence"])


class Persistence:
    """Writes the supervisor's snapshot after every loop turn that changed it; removes it
    once pyboss stopped for good (nothing is left to adopt)."""

    def __init__(self, supervisor, store):
        self.supervisor = supervisor
        self.store = store
        self.last = None
        self.failed = False

    def __call__(self):
        supervisor = self.supervisor
        if supervisor.finished:
            if supervisor.stopping:
                self.store.remove()
            return
        data = json.dumps(snapshot(supervisor), sort_keys=True).encode()
        if data == self.last:
            return
        try:
            self.store.write(data)
            self.last, self.failed = data, False
        except (OSError, ValueError) as e:
            if not self.failed:
                supervisor.log("state-unsaved", "cannot save pyboss's state (%s): a pyboss "
                               "started after this one dies could not adopt its generations"
                               % e, level="warning")
            self.failed = True
