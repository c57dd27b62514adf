"""An app that daemonizes a grandchild which serves on the listening socket, as some
servers' worker managers do (fork, setsid, fork, exit).

    daemonizing_app.py MARKDIR [--grandchild-ignores-term] [--term-delay SECONDS]
                               [--scrub-environment]

The grandchild writes MARKDIR/grandchild-GEN (its pid) once it serves, and
MARKDIR/grandchild-GEN.term when SIGTERM reaches it (then exits, unless it ignores
SIGTERM); with --term-delay it first takes that long to finish and then writes
MARKDIR/grandchild-GEN.exited, which a SIGKILL would prevent. With
--scrub-environment the grandchild re-executes itself with an empty environment, so it
carries no trace of the generation it came from. The main process sends READY=1 once
the grandchild serves and exits 0 on SIGTERM. Requests get {"generation": GEN, "pid":
PID, "role": "grandchild"}.
"""
import json
import os
import signal
import socket
import sys
import time

import pyboss

GENERATION = os.environ.get("PYBOSS_GENERATION", "0")


def serve(sock):
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            body = json.dumps({"generation": int(GENERATION), "pid": os.getpid(),
                               "role": "grandchild"}).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def grandchild(markdir, ignore_term, term_delay):
    mark = os.path.join(markdir, "grandchild-" + GENERATION)

    def on_term(*_):
        with open(mark + ".term", "w") as f:
            f.write(str(os.getpid()))
        if not ignore_term:
            time.sleep(term_delay)          # finishing its work
            with open(mark + ".exited", "w") as f:
                f.write(str(os.getpid()))
            os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.socket(fileno=3)      # LISTEN_PID names the main process, not this one
    with open(mark + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(mark + ".tmp", mark)
    serve(sock)


def main():
    global GENERATION
    markdir = sys.argv[1]
    ignore_term = "--grandchild-ignores-term" in sys.argv
    term_delay = float(sys.argv[sys.argv.index("--term-delay") + 1]) if "--term-delay" in sys.argv else 0
    if "--as-grandchild" in sys.argv:
        GENERATION = sys.argv[sys.argv.index("--as-grandchild") + 1]
        grandchild(markdir, ignore_term, term_delay)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            if "--scrub-environment" in sys.argv:
                args = [a for a in sys.argv if a != "--scrub-environment"]
                os.execve(sys.executable, [sys.executable] + args + ["--as-grandchild", GENERATION], {})
            try:
                grandchild(markdir, ignore_term, term_delay)
            finally:
                os._exit(1)
        os._exit(0)
    os.wait()                      # the intermediate child, which exits at once
    mark = os.path.join(markdir, "grandchild-" + GENERATION)
    while not os.path.exists(mark):
        time.sleep(0.01)
    pyboss.ready()
    signal.sigwait({signal.SIGTERM})
    return 0


if __name__ == "__main__":
    sys.exit(main())
