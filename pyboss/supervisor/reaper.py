"""Containment: pyboss as a child subreaper, and a generation as its whole process tree.

An app that daemonizes (fork, setsid, fork, exit) leaves a grandchild whose parent is
gone. As a child subreaper (or as PID 1 of a container) pyboss becomes that orphan's
parent, so it must reap it, and it must know which generation it came from: draining
or stopping a generation has to reach such processes too, or they keep the port.

How a process is tied to its generation, and why this way:
- Live descendants are found by walking /proc/PID/task/TID/children down from the
  generation's main process (and from its orphans). Walking needs no privilege and
  sees every process still under its parent.
- An orphan (now pyboss's own child) is known by the PYBOSS_GENERATION=N it inherited
  in its environment, or by an earlier walk that saw it under that generation (pid and
  start time, so a reused pid is never mistaken for it).
Process groups and sessions do not work for this: setsid(), the very step that
daemonizing takes, leaves both. Cgroups would, but need delegation that neither a
container entrypoint nor a plain user has; the proc connector needs CAP_NET_ADMIN.
Orphans that carry no mark (they scrubbed their environment, or came from `docker
exec`) are reaped all the same, get the drain signal when a generation drains if they
are older than the generation now serving (so never one of its own), and the stop
signal when pyboss stops.
"""
import os
import signal

PR_SET_CHILD_SUBREAPER = 36
_MARK = b"PYBOSS_GENERATION="
_subreaper = False      # this process is one already: the attribute outlives exec()


def become_subreaper():
    """True if the kernel now hands pyboss the orphans of its descendants."""
    global _subreaper
    if not _subreaper:
        try:
            # Here, not at the top: `pyboss exec` becomes the subreaper before it exec()s
            # the lean supervisor image, which then need not carry ctypes (0.35 MiB).
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
    return _subreaper


def inherited_subreaper():
    """This process became a child subreaper before its exec(): it still is one."""
    global _subreaper
    _subreaper = True


def proc_stat(pid):
    """(state, ppid, starttime) from /proc/PID/stat, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            # The command name may hold spaces and parentheses: split after the last ')'.
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def children_of(pid):
    """The pids whose parent is pid (zombies included: they stay until reaped)."""
    found = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return found
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid), "rb") as f:
                found.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            if not os.path.exists("/proc/%d/task/%s" % (pid, tid)):
                continue      # that thread just ended
            return _children_by_scan(pid)    # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return found


def _children_by_scan(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None and fields[1] == pid:
                found.append(int(entry))
    return found


def generation_mark(pid):
    """The PYBOSS_GENERATION=N a process inherited, as an int, or None."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            for entry in f.read().split(b"\0"):
                if entry.startswith(_MARK):
                    return int(entry[len(_MARK):])
    except (OSError, ValueError):
        pass
    return None


def send(pid, parent, signum):
    """Signal pid only while it is still parent's child: a pid found in a walk may have
    exited and been reused since. Through a pidfd, so the check and the kill agree."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        fields = proc_stat(pid)
        if fields is None or fields[1] != parent or fields[0] == "Z":
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


class Reaper:
    """Reaps every orphan that lands on pyboss and signals generations as whole trees."""

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.pid = os.getpid()
        self.subreaper = os.getpid() == 1 or become_subreaper()
        # Children pyboss had before it supervised anything (start_server's log command)
        # are not the app's: never reaped, signalled or waited for here.
        self.helpers = set(children_of(self.pid))
        self.seen = {}          # (pid, start time) -> generation number, from walks
        self.reaped = 0
        self.remnant_timers = {}    # generation number -> SIGKILL timer for its leftovers

    def orphans(self):
        """pyboss's children that are not the main process of a live generation's worker."""
        mains = {w.pid for g in self.supervisor.generations() for w in g.workers.values()
                 if w.alive}
        return [p for p in children_of(self.pid) if p not in mains and p not in self.helpers]

    def owner(self, pid):
        fields = proc_stat(pid)
        if fields is not None and (pid, fields[2]) in self.seen:
            return self.seen[(pid, fields[2])]
        return generation_mark(pid)

    def collect(self):
        """Reap every orphan that exited (never a generation's main process: its own
        pidfd handler collects that, with its status)."""
        for pid in self.orphans():
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                self.reaped += 1

    def reap(self):
        """On SIGCHLD."""
        self.collect()
        if self.remnant_timers:
            owners = {self.owner(p) for p in self.orphans()}
            for number in [n for n in self.remnant_timers if n not in owners]:
                self.remnant_timers.pop(number).cancel()     # all of it is gone
        self.supervisor.maybe_finish()

    def signal_tree(self, gen, signum):
        """Signal gen's main process (while it lives), every process below it, and its
        orphans with theirs: the whole generation."""
        roots = [(p, self.pid) for p in self.orphans() if self.owner(p) == gen.number]
        if gen.alive and gen.pidfd is not None:
            try:
                signal.pidfd_send_signal(gen.pidfd, signum)
            except ProcessLookupError:
                pass
            roots.append((gen.pid, None))
        self._signal_below(roots, gen.number, signum)

    def _signal_below(self, roots, number, signum):
        queue, done = list(roots), set()
        while queue:
            pid, parent = queue.pop()
            if pid in done:
                continue
            done.add(pid)
            if parent is not None:
                send(pid, parent, signum)
            for child in children_of(pid):
                fields = proc_stat(child)
                if fields is not None and number is not None:
                    self.seen[(child, fields[2])] = number
                queue.append((child, pid))
        alive = {(p, f[2]) for p, f in ((p, proc_stat(p)) for p, _ in self.seen) if f}
        self.seen = {k: v for k, v in self.seen.items() if k in alive}

    def signal_strays(self, signum, unmarked_only=False, started_before=None):
        """Signal pyboss's other orphans: those of no live generation (and, unless
        unmarked_only, also the leftovers of generations whose main process is gone);
        with started_before (a /proc start time), only those that started earlier."""
        live = {g.number for g in self.supervisor.generations() if g.alive}
        for pid in self.orphans():
            owner = self.owner(pid)
            if owner in live or (unmarked_only and owner is not None):
                continue
            fields = proc_stat(pid)
            if started_before is not None and (fields is None or fields[2] >= started_before):
                continue
            self._signal_below([(pid, self.pid)], owner, signum)

    def on_drain(self, signum):
        """A generation drains: orphans nobody can place get the drain signal too, but
        only those older than the generation now serving, which cannot be its own (a
        failed start's SIGKILL is for that generation alone)."""
        current = self.supervisor.current
        fields = current is not None and current.alive and proc_stat(current.pid)
        if signum not in (0, signal.SIGKILL) and fields:
            self.signal_strays(signum, unmarked_only=True, started_before=fields[2])

    def generation_exited(self, gen, drain_signal, drain_timeout):
        """gen's main process is gone. Whatever it left behind is drained like gen
        itself (the drain signal now, SIGKILL after the drain timeout): a leftover
        daemon must not serve old code on the shared port."""
        leftovers = [p for p in self.orphans() if self.owner(p) == gen.number]
        if not leftovers or gen.number in self.remnant_timers:
            return
        self.supervisor.log("leftovers", "%s left %d process(es) behind (pid %s): %s, "
                            "SIGKILL after %gs" % (gen, len(leftovers),
                                                   ", ".join(map(str, leftovers)),
                                                   signal.Signals(drain_signal).name,
                                                   drain_timeout),
                            level="warning", generation=gen.number, pid=gen.pid)
        self._signal_below([(p, self.pid) for p in leftovers], gen.number, drain_signal)
        self.remnant_timers[gen.number] = self.supervisor.call_later(
            drain_timeout, lambda: self.kill_leftovers(gen.number))

    def kill_leftovers(self, number):
        self.remnant_timers.pop(number, None)
        roots = [(p, self.pid) for p in self.orphans() if self.owner(p) == number]
        self._signal_below(roots, number, signal.SIGKILL)

    def remaining(self):
        """Orphans still there: pyboss has not stopped until there are none."""
        self.collect()
        return self.orphans()

    def as_dict(self):
        return {"subreaper": self.subreaper, "reaped": self.reaped,
                "orphans": len(self.orphans())}
