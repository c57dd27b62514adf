"""A load client for inside a systemd namespace (its loopback is the namespace's own).

    python ns_load.py HOST:PORT [THREADS]

Threads send GET / on a fresh connection each, until stdin closes; then one JSON line
on stdout: requests, failures by kind (refused, reset, empty, truncated, timeout, ...),
the worst latency, the 5 slowest requests as [latency, CLOCK_MONOTONIC when sent] (the
clock is the host's too, so a test can set them beside its own events), the generations
and pids that answered, and how many answers each build gave (apps started with
`pyboss.demo --build LABEL`). "running" is printed first, once ten requests succeeded,
so that a test can await it.
"""
import json
import socket
import sys
import threading
import time

REQUEST = b"GET / HTTP/1.0\r\nHost: load\r\n\r\n"


def one_request(address, timeout=20):
    """(None, reply) on success, else (kind of failure, detail)."""
    try:
        conn = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError as e:
        return "refused", str(e)
    except socket.timeout:
        return "timeout", "connect"
    except OSError as e:
        return "connect", str(e)
    data = b""
    with conn:
        try:
            conn.sendall(REQUEST)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError as e:
            return "reset", "%s after %d bytes" % (e, len(data))
        except socket.timeout:
            return "timeout", "after %d bytes" % len(data)
        except OSError as e:
            return "error", str(e)
    if not data:
        return "empty", "connection closed without a reply"
    head, sep, body = data.partition(b"\r\n\r\n")
    # HTTP/1.1 when a proxy (HAProxy) stands between the client and the app.
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        return "bad-status", repr(data[:100])
    length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    if not sep or not length or len(body) != int(length[0].split(b":")[1]):
        return "truncated", repr(data[-100:])
    try:
        return None, json.loads(body)
    except ValueError:
        return "truncated", repr(body[:100])


class Load:
    def __init__(self, address, threads):
        self.address = address
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.requests = 0
        self.failures = {}
        self.errors = []
        self.worst = 0.0
        self.slowest = []           # (latency, CLOCK_MONOTONIC at the start), the worst 5
        self.answered = {}          # generation -> set of pids
        self.builds = {}            # build label -> answers
        self.started = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        while not self.done.is_set():
            start = time.monotonic()
            kind, detail = one_request(self.address)
            latency = time.monotonic() - start
            with self.lock:
                self.requests += 1
                self.worst = max(self.worst, latency)
                if len(self.slowest) < 5 or latency > self.slowest[-1][0]:
                    self.slowest = sorted(self.slowest + [(latency, start)], reverse=True)[:5]
                if kind is None:
                    self.answered.setdefault(detail["generation"], set()).add(detail["pid"])
                    if "build" in detail:
                        self.builds[detail["build"]] = self.builds.get(detail["build"], 0) + 1
                    if self.requests - sum(self.failures.values()) >= 10:
                        self.started.set()
                else:
                    self.failures[kind] = self.failures.get(kind, 0) + 1
                    if len(self.errors) < 20:
                        self.errors.append("%s: %s" % (kind, detail))

    def summary(self):
        return {"requests": self.requests, "failures": self.failures, "errors": self.errors,
                "worst_latency": round(self.worst, 3),
                "slowest": [[round(l, 3), round(t, 3)] for l, t in self.slowest],
                "generations": {str(g): sorted(p) for g, p in sorted(self.answered.items())},
                "builds": self.builds}


def main():
    host, _, port = sys.argv[1].rpartition(":")
    load = Load((host, int(port)), int(sys.argv[2]) if len(sys.argv) > 2 else 6)
    for thread in load.threads:
        thread.start()
    print("running" if load.started.wait(60) else "stalled", flush=True)
    sys.stdin.read()                # until the test closes our stdin
    load.done.set()
    for thread in load.threads:
        thread.join(60)
    print(json.dumps(load.summary()), flush=True)


if __name__ == "__main__":
    main()
