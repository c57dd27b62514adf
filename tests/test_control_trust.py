"""The control socket's place and trust: pyboss removes only what it created, refuses a
directory someone else could have planted a socket in, and believes only an answer from
its own user or root."""
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest


from other_user import BASE_PYTHON, pyboss_argv, readable_copy
from pyboss_testing import PYBOSS, TIMEOUT, wait_until

FAKE_SERVER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(4096)
        c.sendall(b'{"ok": true, "generation": 999, "pid": 1, "exit_code": 0}\\n')
    except OSError:
        pass
    c.close()
"""


def as_user(uid, args, env=None, **kw):
    return subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]
                          + args, capture_output=True, text=True, timeout=TIMEOUT,
                          env=env, **kw)


@pytest.fixture
def shared_dir():
    """A sticky world-writable directory like /tmp, where two users meet."""
    path = tempfile.mkdtemp(prefix="pyboss-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def other_uid():
    """A uid of nobody on this machine, distinct per test run."""
    return 40000 + os.getpid() % 20000


def test_control_naming_a_regular_file_is_refused_and_kept(tmp_path, app):
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    result = subprocess.run(PYBOSS + ["exec", "--control", str(precious), "--", app[0]],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss exec: %s exists and is not a socket: pyboss will not remove it; choose "
        "another --control path" % precious]
    assert precious.read_text() == "keep me"


def test_control_naming_another_users_socket_is_refused_and_kept(shared_dir, app, other_uid):
    path = os.path.join(shared_dir, "theirs.sock")
    as_user(other_uid, [BASE_PYTHON, "-c", "import socket; socket.socket(socket.AF_UNIX)"
                        ".bind(%r)" % path]).check_returncode()
    result = subprocess.run(PYBOSS + ["exec", "--control", path, "--", app[0]],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss exec: %s is a socket of uid %d: pyboss will not remove it; choose another "
        "--control path" % (path, other_uid)]
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_every_directory_pyboss_created_is_removed_on_stop(tmp_path, start_pyboss, app):
    control = tmp_path / "a" / "b" / "c" / "x.sock"
    boss = start_pyboss([app[0]], "--control", str(control))      # the last --control wins
    boss.control = str(control)
    assert boss.status()["state"] == "serving"
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    result = subprocess.run(PYBOSS + ["stop", "--control", str(control)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    boss.proc.wait(TIMEOUT)
    assert not (tmp_path / "a").exists()


@contextlib.contextmanager
def fake_pyboss(uid, path):
    """FAKE_SERVER listening at path as uid, until the with block is left."""
    fake = subprocess.Popen(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid,
                             "--clear-groups", BASE_PYTHON, "-c", FAKE_SERVER, path],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline() == "listening\n"
        yield
    finally:
        fake.kill()
        fake.wait()


def test_client_refuses_an_answer_from_a_socket_of_another_user(shared_dir, other_uid):
    path = os.path.join(shared_dir, "victim.sock")
    with fake_pyboss(other_uid, path):
        for command in (["reload", "--wait"], ["stop"], ["status"]):
            result = subprocess.run(PYBOSS + command + ["--control", path],
                                    capture_output=True, text=True, timeout=TIMEOUT)
            assert result.returncode == 1, (command, result.stdout)
            assert result.stderr.splitlines() == [
                "pyboss: refusing %s: it is served by uid %d, not by you (uid 0) or root; "
                "another user may be impersonating pyboss" % (path, other_uid)]
            assert "999" not in result.stdout


@pytest.mark.parametrize("parent_mode, trusted", [(0o755, True), (0o1777, False)])
def test_root_believes_a_service_users_socket_only_in_its_own_directory(
        other_uid, parent_mode, trusted):
    """A User= or DynamicUser= service's RuntimeDirectory=: /run/pyboss (root's, 0755) holds
    NAME (the service user's, 0700). An admin's root shell may ask that pyboss; a directory
    the user made in a world-writable place (as in /tmp) proves nothing."""
    parent = tempfile.mkdtemp(prefix="pyboss-run-", dir="/tmp")
    try:
        os.chmod(parent, parent_mode)
        own = os.path.join(parent, "web")
        os.mkdir(own, 0o700)
        os.chown(own, other_uid, other_uid)
        path = os.path.join(own, "web.sock")
        with fake_pyboss(other_uid, path):
            result = subprocess.run(PYBOSS + ["reload", "--wait", "--control", path],
                                    capture_output=True, text=True, timeout=TIMEOUT)
        if trusted:
            assert (result.returncode, result.stderr) == (0, "")
            assert "generation 999" in result.stdout
        else:
            assert result.returncode == 1
            assert "refusing %s: it is served by uid %d" % (path, other_uid) in result.stderr
    finally:
        shutil.rmtree(parent)


# The app as another user runs: Debian's python3 on a readable copy of pyboss (a venv's
# python, or the checkout itself, may live where that user cannot look).
OTHER_USERS_APP = ["/usr/bin/python3", "-m", "pyboss.demo"]


def fallback_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY", "NOTIFY_SOCKET")}
    env.update(HOME="/", PYTHONPATH=readable_copy())
    return env


@pytest.fixture
def fallback_dir(other_uid):
    """/tmp/pyboss-UID of a user without XDG_RUNTIME_DIR; removed afterwards."""
    path = "/tmp/pyboss-%d" % other_uid
    remove(path)
    yield path
    remove(path)


def remove(path):
    if os.path.islink(path):
        os.unlink(path)
    shutil.rmtree(path, ignore_errors=True)


def test_fallback_directory_is_created_private_and_removed_on_stop(fallback_dir, other_uid):
    env = fallback_env()
    boss = subprocess.Popen(["setpriv", "--reuid=%d" % other_uid, "--regid=%d" % other_uid,
                             "--clear-groups"] + pyboss_argv() + ["exec", "--listen", "127.0.0.1:0",
                                                            "--"] + OTHER_USERS_APP,
                            env=env, cwd="/", stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: as_user(other_uid, pyboss_argv() + ["status"], env=env, cwd="/")
                   .returncode == 0, what="pyboss to answer as uid %d" % other_uid)
        st = os.lstat(fallback_dir)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (other_uid, 0o700)
        result = as_user(other_uid, pyboss_argv() + ["stop"], env=env, cwd="/")
        assert result.returncode == 0, result.stderr
        assert boss.wait(TIMEOUT) == 0
    finally:
        if boss.poll() is None:
            boss.kill()
            boss.wait()
    assert not os.path.lexists(fallback_dir)


def test_fallback_directory_planted_by_another_user_is_refused(fallback_dir, other_uid, app):
    """Another local user creates /tmp/pyboss-UID first and serves a fake socket there."""
    os.mkdir(fallback_dir)               # owned by root here: "another user" for other_uid
    os.chmod(fallback_dir, 0o777)
    fake = subprocess.Popen([sys.executable, "-c", FAKE_SERVER,
                             os.path.join(fallback_dir, "pyboss.sock")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline() == "listening\n"
        env = fallback_env()
        reason = ("refusing %s: it belongs to uid 0, not to uid %d; another user may be "
                  "impersonating pyboss (remove it, or set XDG_RUNTIME_DIR, or pass --control "
                  "PATH in a directory of yours)" % (fallback_dir, other_uid))
        result = as_user(other_uid, pyboss_argv() + ["reload", "--wait"], env=env, cwd="/")
        assert (result.returncode, result.stderr.splitlines()) == (1, ["pyboss: " + reason])
        assert "999" not in result.stdout
        result = as_user(other_uid, pyboss_argv() + ["exec", "--listen", "127.0.0.1:0", "--"]
                         + OTHER_USERS_APP, env=env, cwd="/")
        assert (result.returncode, result.stderr.splitlines()) == (2, ["pyboss exec: " + reason])
    finally:
        fake.kill()
        fake.wait()


def test_fallback_directory_with_a_wider_mode_is_refused(fallback_dir, other_uid):
    os.mkdir(fallback_dir)
    os.chown(fallback_dir, other_uid, other_uid)
    os.chmod(fallback_dir, 0o755)
    result = as_user(other_uid, pyboss_argv() + ["status"], env=fallback_env(), cwd="/")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "pyboss: refusing %s: its mode is 0755, it must be 0700 so that only you can place a "
        "socket there (chmod 700 %s, or remove it, or set XDG_RUNTIME_DIR, or pass --control "
        "PATH in a directory of yours)" % (fallback_dir, fallback_dir)]


def test_fallback_directory_that_is_a_symlink_is_refused(fallback_dir, other_uid, tmp_path):
    """Another user points /tmp/pyboss-UID at a directory of the victim's own."""
    target = tmp_path / "victims-own"
    target.mkdir(mode=0o700)
    os.chown(target, other_uid, other_uid)
    os.symlink(target, fallback_dir)
    result = as_user(other_uid, pyboss_argv() + ["status"], env=fallback_env(), cwd="/")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "pyboss: refusing %s: it is not a directory (remove it, or set XDG_RUNTIME_DIR, or "
        "pass --control PATH in a directory of yours)" % fallback_dir]
