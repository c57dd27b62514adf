"""A guided run: the demo app under `pyboss exec`, reloaded once under load.

    python3 -m pyboss.tour [--listen 127.0.0.1:8080]
"""
import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

PYBOSS = [sys.executable, "-m", "pyboss"]


def get(address):
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return json.loads(conn.makefile("rb").read().partition(b"\r\n\r\n")[2])


def say(text):
    print("tour: " + text, flush=True)


def wait_until_serving(boss, ready, log, timeout=60):
    """None once pyboss sent READY=1; else the one line saying why it did not."""
    exited = os.pidfd_open(boss.pid)
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "pyboss did not report ready within %d s" % timeout
            readable, _, _ = select.select([ready, exited], [], [], left)
            if ready in readable and b"READY=1" in ready.recv(4096).split(b"\n"):
                return None
            if exited in readable:
                log.seek(0)
                lines = log.read().decode(errors="replace").strip().splitlines()
                log.truncate(0)         # said here, not again at the end
                return lines[-1] if lines else "pyboss exited with status %d" % boss.wait()
    finally:
        os.close(exited)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pyboss.tour", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="SPEC",
                        help="where to serve the demo (default: 127.0.0.1:8080; any "
                             "'pyboss exec --listen' SPEC, e.g. 127.0.0.1:8081)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyboss-tour-") as tmp:
        control = os.path.join(tmp, "tour.sock")
        ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)    # pyboss's READY=1 lands here
        ready.bind(os.path.join(tmp, "notify"))
        command = PYBOSS + ["exec", "--name", "tour", "--control", control, "--quiet",
                            "--listen", args.listen, "--", sys.executable, "-m", "pyboss.demo"]
        # pyboss's own complaints (a port in use) become the tour's one line.
        log = tempfile.TemporaryFile(dir=tmp)
        boss = subprocess.Popen(command, env=dict(os.environ, NOTIFY_SOCKET=ready.getsockname()),
                                stderr=log)
        try:
            failure = wait_until_serving(boss, ready, log)
            if failure:
                print("tour: %s; or run the tour elsewhere: python3 -m pyboss.tour "
                      "--listen 127.0.0.1:8081" % failure, file=sys.stderr)
                return 2
            say("$ " + " ".join(command[2:]))
            status = json.loads(subprocess.check_output(PYBOSS + ["status", "--json",
                                                                  "--control", control]))
            host, _, port = status["listeners"][0]["address"].rpartition(":")
            address = (host.strip("[]"), int(port))
            say("serving on %s: %s" % (status["listeners"][0]["address"], get(address)))
            results, done = [], threading.Event()

            def client():
                while not done.is_set():
                    try:
                        results.append(get(address)["generation"])
                    except (OSError, ValueError) as e:
                        results.append("error: %s" % e)
            clients = [threading.Thread(target=client) for _ in range(4)]
            for t in clients:
                t.start()
            started = time.monotonic()
            reload = subprocess.run(PYBOSS + ["reload", "--wait", "--control", control],
                                    capture_output=True, text=True)
            took = time.monotonic() - started
            time.sleep(0.5)        # let the clients meet the new generation for a moment
            done.set()
            for t in clients:
                t.join()
            errors = [r for r in results if isinstance(r, str)]
            say("reload --wait: exit %d after %.0f ms: %s" % (
                reload.returncode, took * 1000, (reload.stdout + reload.stderr).strip()))
            say("during the reload 4 clients made %d requests: %d to generation 1, %d to "
                "generation 2, %d failed" % (len(results), results.count(1), results.count(2),
                                             len(errors)))
            say("now: %s" % get(address))
            subprocess.run(PYBOSS + ["status", "--control", control])
            subprocess.run(PYBOSS + ["stop", "--control", control], check=True)
            say("stopped: pyboss exited with status %d" % boss.wait(60))
            return 0 if reload.returncode == 0 and not errors else 1
        finally:
            if boss.poll() is None:
                boss.terminate()
                boss.wait()
            ready.close()
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))   # warnings, if any
            log.close()


if __name__ == "__main__":
    sys.exit(main())
