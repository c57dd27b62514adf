"""Which sockets handed back by the fd store a restarted pyboss may reuse (real sockets)."""
import os
import socket

import pytest

from pyboss.systemd.fdstore import matches
from pyboss.listeners import bind, parse_spec


@pytest.fixture
def bound():
    made = []

    def make(text):
        listener = bind(parse_spec(text, "web"))
        made.append(listener)
        return listener
    yield make
    for listener in made:
        listener.sock.close()


def test_stored_tcp_socket_is_reused_only_for_the_same_address(bound):
    listener = bound("127.0.0.1:0")
    port = listener.sock.getsockname()[1]
    fd = listener.fileno()
    assert matches(parse_spec("127.0.0.1:%d" % port, "web"), fd)
    assert matches(parse_spec("127.0.0.1:0", "web"), fd)        # ephemeral: any port will do
    assert not matches(parse_spec("127.0.0.1:%d" % (port + 1 if port < 65535 else 1), "web"), fd)
    assert not matches(parse_spec("127.0.0.2:%d" % port, "web"), fd)
    assert not matches(parse_spec("udp://127.0.0.1:%d" % port, "web"), fd)
    assert not matches(parse_spec("unix:/nonexistent.sock", "web"), fd)
    assert listener.sock.getsockname()[1] == port    # matching takes nothing from the socket


def test_stored_udp_socket_matches_udp_only(bound):
    listener = bound("udp://127.0.0.1:0")
    port = listener.sock.getsockname()[1]
    assert matches(parse_spec("udp://127.0.0.1:%d" % port, "web"), listener.fileno())
    assert not matches(parse_spec("127.0.0.1:%d" % port, "web"), listener.fileno())


def test_stored_unix_socket_is_reused_only_while_its_file_is_there(bound, tmp_path):
    path = str(tmp_path / "web.sock")
    listener = bound("unix:" + path)
    assert matches(parse_spec("unix:" + path, "web"), listener.fileno())
    assert not matches(parse_spec("unix:%s/other.sock" % tmp_path, "web"), listener.fileno())
    os.unlink(path)     # a clean stop, or systemd emptying RuntimeDirectory=
    assert not matches(parse_spec("unix:" + path, "web"), listener.fileno())


def test_stored_abstract_unix_socket_is_reused_by_name(bound):
    name = "@pyboss-test-%d" % os.getpid()
    listener = bound("unix:" + name)
    assert matches(parse_spec("unix:" + name, "web"), listener.fileno())
    assert not matches(parse_spec("unix:" + name + "x", "web"), listener.fileno())


def test_a_closed_fd_is_never_reused():
    sock = socket.socket()
    fd = sock.fileno()
    sock.close()
    assert not matches(parse_spec("127.0.0.1:0", "web"), fd)


def test_stored_every_address_socket_matches_a_bare_port(bound):
    listener = bound("0")
    port = listener.sock.getsockname()[1]
    assert matches(parse_spec(str(port), "web"), listener.fileno())
    assert matches(parse_spec(":%d" % port, "web"), listener.fileno())
    assert not matches(parse_spec("127.0.0.1:%d" % port, "web"), listener.fileno())
