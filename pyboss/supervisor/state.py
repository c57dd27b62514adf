"""What the next pyboss needs to carry on: generations, history, counters.

A pyboss that is SIGKILLed, crashes, or replaces its own code (`pyboss upgrade`) leaves
its generations running. The next pyboss finds them here:

- under systemd, in a memfd kept in the fd store (FDNAME=pyboss+state), which systemd
  hands back to the pyboss that Restart= starts;
- outside systemd, in NAME.state beside the control socket, mode 0600, replaced
  atomically (written to a temporary file, then renamed).

A generation is recorded with each of its workers (one unless `--workers`): slot, pid
*and* start time from /proc/PID/stat (a pid reused by another process after a reboot or a
long outage is never mistaken for it), state, when it got ready, its deadline. Beside
them: the number of workers in force (`pyboss scale` lasts as long as its generations),
each slot's crash record and respawn time, and where a rolling reload stands.
The state is written after every turn of the event loop that changed it.
"""
import json
import os
import struct

from .. import __version__

FORMAT = 2                      # what a pyboss must understand to adopt from this state
READABLE = (1, 2)               # 1: one process per generation, before --workers
SLOT_SIZE = 1 << 20             # memfd: two slots, written in turn; a torn write loses one
_HEADER = struct.Struct("<4sQII")   # magic, sequence, length, checksum
_MAGIC = b"PBS2"                    # checksum: _checksum()
_MAGIC_CRC32 = b"PBST"              # checksum: crc32, as pyboss 0.1.0 wrote it
_PRIME = (1 << 61) - 1


def _checksum(payload):
    """The payload as one number, mod a prime, in 32 bits: a torn write changes it. Not
    crc32: binascii, like zlib, costs the supervisor over 100 KiB of resident size."""
    return int.from_bytes(payload, "little") % _PRIME & 0xFFFFFFFF


def _intact(magic, payload, checksum):
    if magic == _MAGIC:
        return _checksum(payload) == checksum
    import binascii                 # only to take over from an earlier pyboss
    return binascii.crc32(payload) == checksum


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


def _deadline_of(timer):
    return None if timer is None or timer.cancelled else round(timer.when, 3)


def _deadline(gen_or_worker):
    return _deadline_of(gen_or_worker.deadline_timer)


def _worker(worker):
    if getattr(worker, "start_time", None) is None:
        worker.start_time = start_time(worker.pid)
    return {"slot": worker.slot, "number": worker.number, "pid": worker.pid,
            "start_time": worker.start_time, "state": worker.state,
            "started": worker.started, "started_mono": worker.started_mono,
            "ready_after": worker.ready_after, "status": worker.status_text,
            "deadline": None if worker.ready else _deadline(worker)}


def _role(supervisor, gen):
    if gen is supervisor.current:
        return "current"
    return "pending" if gen is supervisor.pending else "old"


def snapshot(supervisor):
    """The supervisor's state as plain data (JSON-able); live workers only."""
    generations = []
    for gen in supervisor.generations():
        workers = [_worker(w) for w in gen.by_slot() if w.alive]
        if not workers:
            continue
        generations.append({
            "number": gen.number, "pid": workers[0]["pid"], "role": _role(supervisor, gen),
            "state": gen.state, "created": gen.created, "created_mono": gen.created_mono,
            "ready_after": gen.ready_after, "deadline": _deadline(gen), "workers": workers})
    roll = supervisor.roll
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
        "workers": supervisor.settings.workers,
        "slots": [{"slot": slot, "crashes": supervisor.slot_crashes.get(slot, 0),
                   "failures": supervisor.slot_failures.get(slot, 0),
                   "given_up": slot in supervisor.given_up,
                   "refill_at": _deadline_of(supervisor.slot_timers.get(slot))}
                  for slot in sorted(set(supervisor.slot_crashes) | set(supervisor.slot_failures)
                                     | supervisor.given_up | set(supervisor.slot_timers))],
        "roll": None if roll is None else {"queue": roll.queue, "total": roll.total,
                                           "replaced": roll.replaced},
    }


def readable(state):
    """state as this pyboss reads it (a state of one process per generation becomes one
    of one-worker generations), or None if it is none this pyboss understands."""
    if not isinstance(state, dict) or state.get("format") not in READABLE:
        return None
    if state["format"] == 1:
        generations = []
        for gen in state["generations"]:
            worker = dict(gen, slot=0, deadline=gen["deadline"] if gen["role"] != "old"
                          else None)
            generations.append(dict(gen, created=gen["started"],
                                    created_mono=gen["started_mono"], workers=[worker],
                                    deadline=gen["deadline"] if gen["role"] == "old" else None))
        state = dict(state, format=FORMAT, generations=generations, workers=1, slots=[],
                     roll=None)
    return state


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
                return readable(json.loads(f.read()))
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
            magic, sequence, length, checksum = _HEADER.unpack(header)
            if magic not in (_MAGIC, _MAGIC_CRC32) or length > SLOT_SIZE - _HEADER.size:
                continue
            payload = os.pread(self.fd, length, slot * SLOT_SIZE + _HEADER.size)
            if len(payload) == length and _intact(magic, payload, checksum):
                found.append((sequence, payload))
        return sorted(found)

    def read(self):
        slots = self._slots()
        if not slots:
            return None
        self.sequence, payload = slots[-1]
        try:
            return readable(json.loads(payload))
        except ValueError:
            return None

    def write(self, data):
        if len(data) > SLOT_SIZE - _HEADER.size:
            raise ValueError("state of %d bytes does not fit a slot" % len(data))
        self.sequence += 1
        header = _HEADER.pack(_MAGIC, self.sequence, len(data), _checksum(data))
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
