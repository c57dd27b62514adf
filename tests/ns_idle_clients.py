"""Idle control clients, for inside a systemd namespace: connect and never send a request.

    python ns_idle_clients.py CONTROL_SOCKET COUNT

Opens COUNT connections one after another (each waits for room in pyboss's backlog),
prints "held COUNT" once all are open, keeps them until stdin closes, then prints one
JSON line: how many connections pyboss closed meanwhile (idle timeout or room for others).
"""
import json
import resource
import socket
import struct
import sys


def closed_by_peer(sock):
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def main():
    path, count = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 100)), hard))
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 60, 0))
        sock.connect(path)
        held.append(sock)
    print("held %d" % len(held), flush=True)
    sys.stdin.read()
    closed = sum(1 for s in held if closed_by_peer(s))
    print(json.dumps({"held": len(held), "closed_by_pyboss": closed}), flush=True)


if __name__ == "__main__":
    main()
