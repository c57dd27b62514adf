"""Which paths a unit's sandbox hides from its own service, and a sandbox that hides none
of the paths pyboss, its Python and the app live at.

A service whose ExecStart= program (or the interpreter behind it, or the code it
imports) sits in a directory its own sandbox replaces fails with 203/EXEC or an
ImportError, and `systemd-analyze verify` says nothing: it checks paths outside the
sandbox. Both `pyboss units` (choosing the settings) and `pyboss check` (judging a unit)
ask the same questions here.
"""
import os
import stat

# Replaced by an empty private directory (PrivateTmp=yes; DynamicUser=yes implies it).
TMP_DIRS = ("/tmp", "/var/tmp")
# Made inaccessible by ProtectHome=yes (empty with tmpfs; readable with read-only).
HOME_DIRS = ("/home", "/root", "/run/user")


def is_under(path, directories):
    return any(path == d or path.startswith(d + "/") for d in directories)


def _shebang_interpreter(path):
    """The absolute interpreter on a script's #! line, or None."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words and words[0].startswith("/") else None


def executable_chain(program):
    """A program's path, what it links to, and (for a script) its interpreter's, in order.

    A venv's bin/python is a link to the interpreter it was made from; a console script
    like bin/pyboss names the venv's python on its #! line. Each must be visible.
    """
    chain, todo = [], [program]
    while todo and len(chain) < 8:
        path = todo.pop(0)
        for step in (path, os.path.realpath(path)):
            if step not in chain:
                chain.append(step)
        interpreter = _shebang_interpreter(os.path.realpath(path))
        if interpreter and interpreter not in chain:
            todo.append(interpreter)
    return chain


def unreachable_by_others(path):
    """The first directory on the way to path another user cannot enter (no o+x), or None."""
    real = os.path.realpath(path)
    step = os.path.dirname(real)
    while True:
        try:
            if not os.stat(step).st_mode & stat.S_IXOTH:
                return step
        except OSError:
            return None     # not there (yet): nothing to judge
        parent = os.path.dirname(step)
        if parent == step:
            return None
        step = parent


class Sandbox:
    """The settings of a unit that decide what its service can see."""

    def __init__(self, private_tmp=True, protect_home="yes", dynamic_user=True,
                 inaccessible=(), temporary=()):
        self.private_tmp = private_tmp
        self.protect_home = protect_home        # "no", "yes", "read-only" or "tmpfs"
        self.dynamic_user = dynamic_user
        self.inaccessible = tuple(inaccessible)
        self.temporary = tuple(temporary)

    def hides(self, path):
        """The setting that keeps the service from running or reading path, or None.

        path as written: pass what it links to as well (executable_chain does)."""
        if is_under(path, TMP_DIRS) and (self.private_tmp or self.dynamic_user):
            return "PrivateTmp=yes" if self.private_tmp else \
                "DynamicUser=yes (which implies PrivateTmp=yes)"
        if is_under(path, HOME_DIRS) and self.protect_home in ("yes", "tmpfs"):
            return "ProtectHome=%s" % self.protect_home
        for directory in self.inaccessible:
            if is_under(path, (directory,)):
                return "InaccessiblePaths=%s" % directory
        for directory in self.temporary:
            if is_under(path, (directory,)):
                return "TemporaryFileSystem=%s" % directory
        if self.dynamic_user:
            closed = unreachable_by_others(path)
            if closed:
                return "DynamicUser=yes (%s is closed to other users)" % closed
        return None


def sandbox_for(paths):
    """(Sandbox, {setting: why}) that hides none of paths: the strictest that still runs."""
    real = [p for path in paths for p in dict.fromkeys((path, os.path.realpath(path)))]
    why = {}
    in_tmp = [p for p in real if is_under(p, TMP_DIRS)]
    in_home = [p for p in real if is_under(p, HOME_DIRS)]
    closed = [(os.path.realpath(p), unreachable_by_others(p)) for p in paths]
    closed = [(p, c) for p, c in closed if c]
    sandbox = Sandbox()
    if in_tmp:
        sandbox.private_tmp = sandbox.dynamic_user = False
        why["PrivateTmp"] = why["DynamicUser"] = (
            "%s lives under %s, which PrivateTmp=yes (implied by DynamicUser=yes) would "
            "replace with an empty directory"
            % (in_tmp[0], next(d for d in TMP_DIRS if is_under(in_tmp[0], (d,)))))
    if in_home:
        sandbox.protect_home = "read-only"
        why["ProtectHome"] = ("%s lives in a home directory, which ProtectHome=yes would "
                              "hide: readable only" % in_home[0])
    if closed and sandbox.dynamic_user:
        sandbox.dynamic_user = False
        why["DynamicUser"] = ("%s is closed to other users (%s has no o+x), so a dynamic "
                              "user could not run it" % closed[0])
    return sandbox, why
