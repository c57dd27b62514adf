"""A small HTTP app that runs under pyboss (stdlib only); the test suite uses it too.

    pyboss exec --listen 127.0.0.1:8080 -- python3 -m pyboss.demo

GET / answers {"generation": N, "pid": P} (plus "build": LABEL with --build LABEL);
GET /sleep?ms=200 answers after a delay.
It shows the one thing threaded apps get wrong about signals: the main thread must
never sleep in a lock (Thread.join, Event.wait), or SIGTERM waits until the lock
wakes. Here the main thread only ever waits in select() on the listening sockets
and the signal wakeup fd, so SIGTERM is handled at once even under heavy load.
"""
import argparse
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyboss

GENERATION = os.environ.get("PYBOSS_GENERATION", "0")


def handle(conn, work_ms, build=None):
    try:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        target = data.split(b" ", 2)[1].decode(errors="replace") if data.count(b" ") >= 2 else "/"
        delay = work_ms / 1000.0
        if target.startswith("/sleep"):
            delay = float(target.partition("ms=")[2] or 100) / 1000.0
        if delay:
            time.sleep(delay)
        answer = {"generation": int(GENERATION), "pid": os.getpid()}
        if build is not None:
            answer["build"] = build
        body = json.dumps(answer).encode()
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    except OSError:
        pass
    finally:
        conn.close()


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m pyboss.demo", description=__doc__.split("\n")[0])
    p.add_argument("--ready-delay", type=float, default=0.0,
                   help="seconds of start-up work before READY=1 (nothing is accepted meanwhile)")
    p.add_argument("--exit-code", type=int, help="exit at once with this status (a broken build)")
    p.add_argument("--no-ready", action="store_true", help="serve but never send READY=1")
    p.add_argument("--crash-after", type=float, help="exit with status 3 after this many seconds")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (a stuck app)")
    p.add_argument("--work-ms", type=float, default=0.0, help="time spent on every request")
    p.add_argument("--threads", type=int, default=32, help="request handler threads")
    p.add_argument("--build", metavar="LABEL",
                   help="answer with this build label too (tells builds of a rollout apart)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.exit_code is not None:
        print("demo: generation %s exits with status %d as told" % (GENERATION, args.exit_code),
              file=sys.stderr)
        return args.exit_code
    stop = []
    wakeup_r, wakeup_w = socket.socketpair()
    wakeup_r.setblocking(False)
    wakeup_w.setblocking(False)
    signal.set_wakeup_fd(wakeup_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else
                  lambda *_: stop.append("TERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.append("INT"))
    selector = selectors.DefaultSelector()
    selector.register(wakeup_r, selectors.EVENT_READ)
    deadline = time.monotonic() + args.ready_delay
    while not stop and time.monotonic() < deadline:      # start-up work, interruptible
        selector.select(deadline - time.monotonic())
    if stop:
        return 0
    socks = pyboss.listeners()
    for sock in socks:
        sock.setblocking(False)      # shared with other generations: never block in accept
        selector.register(sock, selectors.EVENT_READ)
    if args.crash_after is not None:
        threading.Timer(args.crash_after, os._exit, (3,)).start()
    pool = ThreadPoolExecutor(max_workers=args.threads)
    if not args.no_ready:
        pyboss.ready("generation %s serving" % GENERATION)
    while not stop:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is wakeup_r:
                try:
                    wakeup_r.recv(512)
                except BlockingIOError:
                    pass
                continue
            try:
                if sock.type == socket.SOCK_DGRAM:
                    data, peer = sock.recvfrom(65536)
                    sock.sendto(data, peer)
                    continue
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            conn.setblocking(True)
            pool.submit(handle, conn, args.work_ms, args.build)
    # Stop accepting; connections still queued are taken by the next generation.
    pyboss.stopping()
    pool.shutdown(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
