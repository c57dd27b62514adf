"""Where control sockets live, and proof that nobody else planted or owns what is there.

pyboss creates its directories 0700, verifies the owner and mode of a directory it did not
create before trusting it, never removes a path that is not a socket it can prove stale,
and remembers every directory it created so that stop removes exactly those.
"""
import errno
import os
import socket
import stat

DEFAULT_NAME = "pyboss"
SUN_PATH_MAX = 107          # bytes in a unix socket's address (sun_path[108]), NUL aside
PRIVATE_NAME_CHARS = 8      # the random part of a private directory's name
SHORTER_DIRECTORY = "choose a --control PATH in a shorter directory"


class ControlError(Exception):
    """The control socket cannot be used; the message says why and what to do."""


class NotRunning(ControlError):
    """Nothing serves the control socket: no such file, or nobody listening."""


def runtime_dir():
    if os.environ.get("RUNTIME_DIRECTORY"):
        return os.environ["RUNTIME_DIRECTORY"].split(":")[0]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "pyboss")
    if os.geteuid() == 0:
        return "/run/pyboss"
    return shared_tmp_dir()


def shared_tmp_dir():
    """The last resort of a user without XDG_RUNTIME_DIR: a name anyone could take first."""
    return "/tmp/pyboss-%d" % os.geteuid()


def check_private(directory, strict):
    """Refuse a directory someone else could have planted a socket in.

    It must be a directory owned by us; strict (the shared /tmp fallback) also wants mode
    0700 and no symlink, otherwise it must at least not be writable by group or others
    (systemd's RuntimeDirectory= of a DynamicUser= service is a symlink into
    /run/private, which only root can write to).
    """
    try:
        st = os.lstat(directory) if strict else os.stat(directory)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ControlError("cannot use %s: %s" % (directory, e.strerror))
    fix = "remove it, or set XDG_RUNTIME_DIR, or pass --control PATH in a directory of yours"
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError("refusing %s: it is not a directory (%s)" % (directory, fix))
    if st.st_uid != os.geteuid():
        raise ControlError("refusing %s: it belongs to uid %d, not to uid %d; another user "
                           "may be impersonating pyboss (%s)" % (directory, st.st_uid,
                                                                 os.geteuid(), fix))
    mode = stat.S_IMODE(st.st_mode)
    if (strict and mode & 0o077) or mode & 0o022:
        raise ControlError("refusing %s: its mode is %04o, it must be 0700 so that only you "
                           "can place a socket there (chmod 700 %s, or %s)"
                           % (directory, mode, directory, fix))


def check_default_dir(directory):
    """The directory pyboss chose itself (no --control) must be private to the user."""
    if directory == os.path.normpath(runtime_dir()):
        check_private(directory, strict=directory == shared_tmp_dir())


def make_dirs(directory):
    """Create directory and missing parents 0700; returns those created, outermost first."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    created = []
    try:
        for path in reversed(missing):
            os.mkdir(path, 0o700)
            created.append(path)
    except OSError as e:
        remove_dirs(created)
        raise ControlError("cannot create %s: %s (use --control PATH in a directory you may "
                           "write to)" % (path, e.strerror))
    return created


def make_private_dir(parent, prefix):
    """A new 0700 directory in parent with an unguessable name, as tempfile.mkdtemp makes it.

    Not tempfile itself: it brings shutil, random, bz2 and lzma, about 1.3 MiB of resident
    size, into a supervisor that is to stay lean.
    """
    for _ in range(100):
        # 8 characters, as mkdtemp's: unix socket paths inside must stay under 108 bytes.
        path = os.path.join(parent, prefix + os.urandom(PRIVATE_NAME_CHARS // 2).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name for a directory", parent)


def check_socket_path(path, what, fix):
    """ControlError unless path fits in a unix socket's address. path may stand for one
    that is yet to be made: "X" for each random character of a private directory."""
    length = len(os.fsencode(path))
    if length > SUN_PATH_MAX:
        raise ControlError("%s %s would be %d bytes long, and a unix socket's path can be at "
                           "most %d: %s" % (what, path, length, SUN_PATH_MAX, fix))


def in_directory_of(path, uid):
    """Whether path lies in a directory of uid's own that only root could have made for it:
    the RuntimeDirectory= of a User= or DynamicUser= service (/run/pyboss/NAME, a link to
    /run/private/pyboss/NAME for the latter). Root then believes a socket there served by
    uid: nobody but uid and root can have put it there, wherever a link to it lies."""
    directory = os.path.realpath(os.path.dirname(path))
    try:
        own, parent = os.lstat(directory), os.lstat(os.path.dirname(directory))
    except OSError:
        return False
    return (stat.S_ISDIR(own.st_mode) and own.st_uid == uid and not own.st_mode & 0o022
            and stat.S_ISDIR(parent.st_mode) and parent.st_uid == 0
            and not parent.st_mode & 0o022)


def private_dir_pattern(parent, prefix):
    """The name make_private_dir(parent, prefix) gives, its random part as X's."""
    return os.path.join(parent, prefix + "X" * PRIVATE_NAME_CHARS)


def remove_dirs(created):
    """Remove the directories pyboss created, innermost first, if they are empty."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError:
            pass


def claim(path):
    """Make way for a new control socket at path, or raise ControlError saying why not.

    Only a socket of ours that nobody serves is removed (a pyboss that was killed left
    it); a regular file, someone else's socket or a live pyboss is refused.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError("%s exists and is not a socket: pyboss will not remove it; choose "
                           "another --control path" % path)
    if st.st_uid != os.geteuid():
        raise ControlError("%s is a socket of uid %d: pyboss will not remove it; choose "
                           "another --control path" % (path, st.st_uid))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)     # stale: left behind by a pyboss that was killed
        return
    except OSError as e:
        if e.errno == errno.EAGAIN:     # a full backlog: someone is serving it
            pass
        else:
            raise ControlError("cannot probe %s: %s" % (path, e.strerror))
    finally:
        probe.close()
    raise ControlError("another pyboss is already running with control socket %s: "
                       "stop it first, or give this one another --name" % path)
