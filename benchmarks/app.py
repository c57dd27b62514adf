"""Runs the bundled demo app under any peer, with the same code and the same settings.

    python -m benchmarks.app CONFIG.json

CONFIG is read at every start, so a scenario can change what the *next* generation
does (need 2 s to become ready, or exit 1 at start) without touching the supervisor's
command line. The sockets arrive as the peer hands them over and are turned into the
LISTEN_FDS protocol the demo speaks:

- pyboss: LISTEN_FDS/LISTEN_PID already point at this process (exec keeps the pid);
- start_server: SERVER_STARTER_PORT="127.0.0.1:8080=5;...";
- the app alone: BENCH_LISTEN_FD=N, a socket the benchmark bound itself.

The demo then runs in this same interpreter (no second Python start-up to pay for).
"""
import fcntl
import json
import os
import runpy
import sys

FIRST_LISTEN_FD = 3


def handed_over_fds():
    if os.environ.get("SERVER_STARTER_PORT"):
        entries = os.environ.pop("SERVER_STARTER_PORT").split(";")
        return [int(entry.rsplit("=", 1)[1]) for entry in entries if entry]
    if os.environ.get("BENCH_LISTEN_FD"):
        return [int(os.environ.pop("BENCH_LISTEN_FD"))]
    return None


def adopt_as_listen_fds(fds):
    """Move fds to 3, 4, ... and announce them the way systemd (and pyboss) does."""
    # Park every fd above the target range first so that no dup2 clobbers another.
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
    for fd in fds:
        os.close(fd)
    for index, fd in enumerate(parked):
        os.dup2(fd, FIRST_LISTEN_FD + index, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = ":".join("listen%d" % i for i in range(len(fds)))


def demo_arguments(config):
    args = []
    if config.get("ready_delay"):
        args += ["--ready-delay", str(config["ready_delay"])]
    if config.get("exit_code") is not None:
        args += ["--exit-code", str(config["exit_code"])]
    return args


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m benchmarks.app CONFIG.json\n")
        sys.exit(2)
    with open(sys.argv[1]) as f:
        config = json.load(f)
    fds = handed_over_fds()
    if fds:
        adopt_as_listen_fds(fds)
    module = config.get("module", "pyboss.demo")
    sys.argv = [module] + demo_arguments(config)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
