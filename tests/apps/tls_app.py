"""An HTTPS app that loads its certificate and key once, at start, from one PEM file.

    tls_app.py PEMFILE

A file that does not load (a broken rotation) makes it exit 1 before READY=1. Requests
get {"generation": GEN, "pid": PID}. SIGTERM: stop accepting and exit 0.
"""
import json
import os
import selectors
import signal
import socket
import ssl
import sys

import pyboss

GENERATION = int(os.environ.get("PYBOSS_GENERATION", "0"))


def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(sys.argv[1])
    except (OSError, ssl.SSLError) as e:
        print("tls_app: cannot load %s: %s" % (sys.argv[1], e), file=sys.stderr)
        return 1
    wakeup_r, wakeup_w = socket.socketpair()
    wakeup_w.setblocking(False)
    signal.set_wakeup_fd(wakeup_w.fileno(), warn_on_full_buffer=False)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    listener = pyboss.listeners()[0]
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wakeup_r, selectors.EVENT_READ)
    pyboss.ready()
    while not stop:
        for key, _ in selector.select():
            if key.fileobj is wakeup_r:
                wakeup_r.recv(512)
                continue
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            conn.setblocking(True)
            conn.settimeout(10)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    body = json.dumps({"generation": GENERATION, "pid": os.getpid()}).encode()
                    tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            except (OSError, ssl.SSLError):
                conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
