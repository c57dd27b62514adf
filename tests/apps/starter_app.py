"""A server written for Server::Starter (stdlib only, no pyboss): it finds its sockets
in SERVER_STARTER_PORT ("HOST:PORT=FD;PATH=FD"), answers every stream connection with
its environment as JSON, echoes UDP datagrams likewise, and drains on SIGTERM.

    starter_app.py [FLAGS_FILE]

FLAGS_FILE (read at start, so rewriting it makes the "next build") holds words:
exit=N (fail at once), fail-once=PATH (fail if PATH is missing, creating it),
ready (send READY=1 to NOTIFY_SOCKET), ready-delay=S, term-delay=S (keep serving S
seconds after the drain signal), drain-on=SIGNAME (drain on that signal instead of TERM).
"""
import json
import os
import selectors
import signal
import socket
import sys
import time


def flags(argv):
    found = {}
    if len(argv) > 1 and os.path.exists(argv[1]):
        with open(argv[1]) as f:
            for word in f.read().split():
                key, _, value = word.partition("=")
                found[key] = value
    return found


def answer(extra=None):
    body = {"generation": int(os.environ.get("SERVER_STARTER_GENERATION", "0")),
            "pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))}
    body.update(extra or {})
    return json.dumps(body).encode()


def main(argv):
    opts = flags(argv)
    if "exit" in opts:
        return int(opts["exit"])
    marker = opts.get("fail-once")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        return 1
    stop = []
    wakeup_r, wakeup_w = socket.socketpair()
    wakeup_r.setblocking(False)
    wakeup_w.setblocking(False)
    signal.set_wakeup_fd(wakeup_w.fileno())
    drain_on = getattr(signal, opts.get("drain-on", "SIGTERM"))
    signal.signal(drain_on, lambda *_: stop.append(time.monotonic()))
    if drain_on != signal.SIGTERM:
        signal.signal(signal.SIGTERM, lambda *_: stop.append(time.monotonic()))
    time.sleep(float(opts.get("ready-delay", 0)))
    selector = selectors.DefaultSelector()
    selector.register(wakeup_r, selectors.EVENT_READ)
    for entry in os.environ["SERVER_STARTER_PORT"].split(";"):
        key, _, fd = entry.rpartition("=")
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, key)
    if "ready" in opts and os.environ.get("NOTIFY_SOCKET"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
            path = os.environ["NOTIFY_SOCKET"]
            n.sendto(b"READY=1", "\0" + path[1:] if path.startswith("@") else path)
    term_delay = float(opts.get("term-delay", 0))
    while not stop or time.monotonic() < stop[0] + term_delay:
        for key, _ in selector.select(0.05 if stop else None):
            if key.fileobj is wakeup_r:
                try:
                    wakeup_r.recv(64)
                except BlockingIOError:
                    pass
                continue
            sock = key.fileobj
            try:
                if sock.type == socket.SOCK_DGRAM:
                    data, peer = sock.recvfrom(4096)
                    sock.sendto(answer({"key": key.data}), peer)
                    continue
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            with conn:
                conn.setblocking(True)
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(answer({"key": key.data, "draining": bool(stop)}))
                except OSError:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
