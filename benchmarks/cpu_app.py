"""The CPU-bound app of the workers benchmark, the same work for every server.

Every request hashes: sha256 over its own digest BENCH_HASH_ROUNDS times (default 20000,
several milliseconds: the work dwarfs the load client's own cost per request),
small inputs, so the GIL is held throughout and one process uses one core at most. The
reply is {"pid": P, "digest": HEX}.

- under pyboss: `python -m benchmarks.cpu_app` (listeners from LISTEN_FDS, READY=1 once
  it accepts; SIGTERM: stop accepting, finish the request in hand, exit);
- gunicorn: `benchmarks.cpu_app:wsgi`; uvicorn: `benchmarks.cpu_app:asgi`.
"""
import hashlib
import json
import os
import signal
import socket

ROUNDS = int(os.environ.get("BENCH_HASH_ROUNDS", "20000"))


def reply_body():
    digest = b"pyboss"
    for _ in range(ROUNDS):
        digest = hashlib.sha256(digest).digest()
    return json.dumps({"pid": os.getpid(), "digest": digest.hex()}).encode()


def wsgi(environ, start_response):
    body = reply_body()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = reply_body()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def answer(conn):
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    body = reply_body()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


def main():
    import pyboss
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    sock = pyboss.listeners()[0]
    sock.settimeout(0.2)        # look at the stop flag between accepts
    pyboss.ready()
    while not stopping:
        try:
            conn, _ = sock.accept()
        except (socket.timeout, InterruptedError, ConnectionAbortedError):
            continue
        with conn:
            try:
                answer(conn)
            except OSError:
                pass
    pyboss.stopping()       # what is still queued is taken by the other workers


if __name__ == "__main__":
    main()
