"""A private network for simulated hosts: a bridge in a network namespace of its own.

    with PrivateBridge("10.77.0.1/24") as lan:
        lan.attach(ns, "10.77.0.11/24")      # ns: a booted SystemdNamespace
        lan.run(["curl", "http://10.77.0.11:8080/"])

The bridge lives in a fresh network namespace held by a small process, never in the
machine's own: nothing here touches the host's interfaces, routes or addresses. Each
attached host gets a veth pair, one end on the bridge, the other as eth0 in the host's
own network namespace. Everything goes away with the holding process (close()).
"""
import ctypes
import os
import signal
import subprocess
import time

BRIDGE = "fleet0"
PR_SET_PDEATHSIG = 1


def _die_with_the_test():
    # nsenter execs the program (no fork for --net alone), and the death signal survives
    # exec: a test killed outright leaves no HAProxy holding the namespace alive.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class PrivateBridge:
    """The bridge, its namespace, and whatever the test runs on it (a load balancer)."""

    def __init__(self, address, timeout=30.0):
        self.address = address            # the bridge's own address, with prefix length
        self.timeout = timeout
        self._holder = None
        self._attached = 0
        self._background = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def start(self):
        # `read` returns when our end of the pipe closes, also when the test dies: the
        # namespace (and every veth in it) cannot outlive the test process.
        self._holder = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", "read _"],
                                        stdin=subprocess.PIPE, start_new_session=True)
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + self.timeout
        while not self._in_own_namespace(own):
            if self._holder.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("unshare --net did not make a network namespace")
            time.sleep(0.005)
        try:
            for argv in (["ip", "link", "set", "lo", "up"],
                         ["ip", "link", "add", BRIDGE, "type", "bridge"],
                         ["ip", "addr", "add", self.address, "dev", BRIDGE],
                         ["ip", "link", "set", BRIDGE, "up"]):
                self.run(argv)
        except BaseException:
            self.close()
            raise

    def _in_own_namespace(self, own):
        try:
            namespace = os.readlink("/proc/%d/ns/net" % self._holder.pid)
            program = os.readlink("/proc/%d/exe" % self._holder.pid)
        except OSError:
            return False
        # unshare execs sh only after unshare(2): then the namespace is the new one.
        return namespace != own and not program.endswith("unshare")

    def attach(self, ns, address):
        """Plug ns (a booted SystemdNamespace) into the bridge as eth0 with address."""
        self._attached += 1
        port = "port%d" % self._attached
        self.run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                  "netns", str(ns.pid)])
        self.run(["ip", "link", "set", port, "master", BRIDGE, "up"])
        ns.run(["ip", "addr", "add", address, "dev", "eth0"])
        ns.run(["ip", "link", "set", "eth0", "up"])

    def command(self, argv):
        """argv prefixed so that it runs in the bridge's network namespace."""
        return ["nsenter", "--target", str(self._holder.pid), "--net", "--", *map(str, argv)]

    def run(self, argv, timeout=60, check=True):
        return subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def start_background(self, argv, **popen_kwargs):
        """Start argv on the bridge's network (a load balancer, a load client); ended at
        close() if still running."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self.command(argv), preexec_fn=_die_with_the_test,
                                **popen_kwargs)
        self._background.append(proc)
        return proc

    def close(self):
        for proc in self._background:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._background:
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._background.clear()
        if self._holder is None:
            return
        self._holder.stdin.close()
        try:
            self._holder.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait(timeout=10)
        self._holder = None
