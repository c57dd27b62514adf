"""Every listen spec form binds what it says, and the app is reachable through it."""
import socket

import pytest

from pyboss.listeners import ListenError, parse_spec
from pyboss_testing import http_get


@pytest.mark.parametrize("text, name, kind, host, port, path", [
    ("8080", "listen0", "tcp", "", 8080, ""),
    (":8080", "listen0", "tcp", "", 8080, ""),
    ("127.0.0.1:8080", "listen0", "tcp", "127.0.0.1", 8080, ""),
    ("[::1]:8080", "listen0", "tcp", "::1", 8080, ""),
    ("tcp://localhost:80", "listen0", "tcp", "localhost", 80, ""),
    ("udp://127.0.0.1:53", "listen0", "udp", "127.0.0.1", 53, ""),
    ("web=*:443", "web", "tcp", "", 443, ""),
    ("admin=unix:/run/app.sock", "admin", "unix", "", 0, "/run/app.sock"),
    ("unix:@app", "listen0", "unix", "", 0, "@app"),
])
def test_spec_forms_parse(text, name, kind, host, port, path):
    spec = parse_spec(text, "listen0")
    assert (spec.name, spec.kind, spec.host, spec.port, spec.path) == (name, kind, host, port, path)


@pytest.mark.parametrize("text", ["", "tcp://", "65536", "host:port", "unix:", "ftp://x:1",
                                  "[::1:80", "a b=:80"])
def test_bad_specs_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ListenError):
        parse_spec(text, "listen0")


def unix_get(address):
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(30)
        conn.connect(address)
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return conn.makefile("rb").read()


def test_every_kind_of_listener_reaches_the_app(start_pyboss, app, tmp_path):
    abstract = "@pyboss-test-%s" % tmp_path.name
    boss = start_pyboss([app[0]], listen=(
        "v4=127.0.0.1:0", "v6=[::1]:0", "any=:0", "dgram=udp://127.0.0.1:0",
        "file=unix:%s" % (tmp_path / "app.sock"), "hidden=unix:%s" % abstract))
    listeners = {l["name"]: l for l in boss.status()["listeners"]}
    assert [l["kind"] for l in listeners.values()] == ["tcp", "tcp", "tcp", "udp", "unix", "unix"]
    assert all(l["origin"] == "bound" for l in listeners.values())
    for name, host in (("v4", "127.0.0.1"), ("v6", "::1"), ("any", "127.0.0.1"), ("any", "::1")):
        port = int(listeners[name]["address"].rpartition(":")[2])
        assert http_get((host, port))["generation"] == 1
    assert b'"generation": 1' in unix_get(str(tmp_path / "app.sock"))
    assert listeners["hidden"]["address"] == abstract
    assert b'"generation": 1' in unix_get("\0" + abstract[1:])
    port = int(listeners["dgram"]["address"].rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(30)
        udp.sendto(b"ping", ("127.0.0.1", port))
        assert udp.recv(64) == b"ping"


def test_socket_mode_applies_to_unix_sockets_pyboss_creates(start_pyboss, app, tmp_path):
    path = tmp_path / "app.sock"
    start_pyboss([app[0]], "--socket-mode", "0660", listen=("unix:%s" % path,))
    assert path.stat().st_mode & 0o777 == 0o660
