"""A fleet simulated on one machine, for the rolling-reload tests (tests/test_fleet.py).

Each host is a real systemd booted in namespaces of its own (systemd_harness), with its
own /run/fleet (the app's builds), its own network namespace plugged into a private bridge
(private_network) and the units `pyboss units` writes, run as a user would on the host.
Debian's HAProxy balances across the hosts from the bridge's namespace, with HTTP
health checks. ansible-playbook reaches the hosts with the nsenter connection plugin
in tests/ansible_plugins/connection.
"""
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

from pyboss_testing import TIMEOUT, read_until_closed, wait_until
from systemd_harness import python_executable

PYTHON = python_executable()
REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "examples" / "ansible" / "rolling-reload.yml"
CONNECTION_PLUGINS = Path(__file__).resolve().parent / "ansible_plugins" / "connection"
PYBOSS_SCRIPT = Path(PYTHON).parent / "pyboss"

APP = "myapp"
APP_ROOT = "/run/fleet/myapp"       # inside each host: its own /run, so a clone in /srv stays visible
APP_PORT = 8080
LAN = "10.77.0.%d"                  # the private bridge's network (inside namespaces only)
BALANCER_PORT = 8000

HAPROXY_CONFIG = """\
global
    stats socket {stats} mode 600 level admin

defaults
    mode http
    # No retries and no redispatch: a connection a host refused would reach the client
    # as an error instead of being hidden by a second try on another host.
    retries 0
    option httpclose
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fleet
    bind {address}:{port}
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /
    http-check expect status 200
    default-server check inter 300ms fall 2 rise 2
{servers}
"""


def missing_tools():
    """What the fleet test needs but is not installed (the README's test command installs it)."""
    missing = []
    if shutil.which("haproxy") is None and not os.access("/usr/sbin/haproxy", os.X_OK):
        missing.append("haproxy (Debian package, listed in tests/debian-packages)")
    if ansible_playbook() is None:
        missing.append("ansible-playbook (ansible-core, in the 'test' extra of pyproject.toml)")
    if not os.access(PYBOSS_SCRIPT, os.X_OK):
        missing.append("the pyboss script next to %s (pip install -e .)" % PYTHON)
    return missing


def ansible_playbook():
    beside = Path(PYTHON).parent / "ansible-playbook"
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("ansible-playbook")


def write_build(builds_dir, name, *demo_options):
    """A build: a directory with the app's launcher, as a CI would produce it."""
    build = Path(builds_dir) / name
    build.mkdir(parents=True)
    app = build / "app"
    app.write_text("#!/bin/sh\nexec %s -m pyboss.demo %s\n" % (PYTHON, " ".join(demo_options)))
    app.chmod(0o755)
    return build


class Host:
    """One simulated host: its systemd namespace, its address, its /run/fleet on our side."""

    def __init__(self, name, ns, address, srv):
        self.name, self.ns, self.address, self.srv = name, ns, address, srv

    def builds_deployed(self):
        return sorted(os.listdir(self.srv / "myapp" / "releases"))

    def current(self):
        return os.readlink(self.srv / "myapp" / "current")

    def main_pid(self):
        return int(self.ns.systemctl("show", "-P", "MainPID", APP + ".service").stdout.strip())

    def reloads_logged(self):
        """Reloads systemd carried out for the app, from the host's journal."""
        return self.ns.journal(APP + ".service").count("Reloading " + APP)


class Fleet:
    """Hosts booted and serving build `first_build`, HAProxy in front; close() ends all."""

    def __init__(self, tmp_path, systemd_ns, lan, hosts=3, first_build=None):
        self.tmp_path = Path(tmp_path)
        self.lan = lan
        self.hosts = []
        self.balancer = None
        for number in range(1, hosts + 1):
            self.hosts.append(self._boot_host(number, systemd_ns, first_build))
        self._start_balancer()

    def _boot_host(self, number, systemd_ns, first_build):
        name = "host%d" % number
        root = self.tmp_path / name
        units, srv = root / "units", root / "srv"
        units.mkdir(parents=True)
        releases = srv / "myapp" / "releases"
        releases.mkdir(parents=True)
        shutil.copytree(first_build, releases / first_build.name, symlinks=True)
        os.symlink("%s/releases/%s" % (APP_ROOT, first_build.name), srv / "myapp" / "current")
        ns = systemd_ns(units, binds={"/run/fleet": srv})
        # On the host, as its operator would: units from `pyboss units`, then the socket.
        written = ns.run([PYBOSS_SCRIPT, "units", APP, "--listen", "http=%d" % APP_PORT,
                          "--ready-timeout", "20", "--output", "/run/systemd/system", "--",
                          APP_ROOT + "/current/app"], check=False)
        assert written.returncode == 0, "pyboss units failed on %s: %s" % (name, written.stderr)
        ns.systemctl("daemon-reload")
        ns.systemctl("start", APP + ".socket")
        address = LAN % (10 + number)
        self.lan.attach(ns, address + "/24")
        return Host(name, ns, address, srv)

    def _start_balancer(self):
        self.stats_socket = self.tmp_path / "haproxy.stats"
        config = self.tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(
            stats=self.stats_socket, address=LAN % 1, port=BALANCER_PORT,
            servers="\n".join("    server %s %s:%d" % (h.name, h.address, APP_PORT)
                              for h in self.hosts)))
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.balancer = self.lan.start_background([haproxy, "-db", "-f", config],
                                                  stdout=subprocess.DEVNULL)

        def every_host_passes_its_health_check():
            if self.balancer.poll() is not None:
                raise AssertionError("haproxy exited: %s" % self.balancer.stderr.read().decode())
            try:
                servers = self.server_stats()
            except OSError:
                return False                    # stats socket not there yet
            return len(servers) == len(self.hosts) and all(
                s["check_status"] == "L7OK" and s["status"] == "UP" for s in servers.values())
        wait_until(every_host_passes_its_health_check, what="HAProxy to see every host healthy")

    def server_stats(self):
        """{host name: HAProxy's row for it} from `show stat` on the stats socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = read_until_closed(sock)
        lines = data.decode().splitlines()
        fields = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(fields, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r["pxname"] == "app"
                and r["svname"] not in ("FRONTEND", "BACKEND")}

    def answer(self, host):
        """What host answers directly on its own address (not through HAProxy)."""
        result = self.lan.run(["curl", "-sS", "--max-time", "10",
                               "http://%s:%d/" % (host.address, APP_PORT)])
        return json.loads(result.stdout)

    def rollout(self, build, per_host_build=None):
        """ansible-playbook rolling-reload.yml for build; (exit status, output, recap).

        per_host_build: {host name: build directory} deployed there instead (a host on
        which the build is broken).
        """
        inventory = self.tmp_path / ("inventory-%s.ini" % build.name)
        lines = ["[app]"]
        for host in self.hosts:
            source = (per_host_build or {}).get(host.name, build)
            lines.append("%s ansible_nsenter_pid=%d build_src=%s/" % (host.name, host.ns.pid,
                                                                       source))
        lines += ["", "[app:vars]", "ansible_connection=nsenter",
                  "ansible_python_interpreter=/usr/bin/python3",
                  "app_name=%s" % APP, "app_root=%s" % APP_ROOT]
        inventory.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, ANSIBLE_CONNECTION_PLUGINS=str(CONNECTION_PLUGINS),
                   ANSIBLE_HOME=str(self.tmp_path / "ansible-home"),
                   ANSIBLE_LOCAL_TEMP=str(self.tmp_path / "ansible-local"),
                   ANSIBLE_REMOTE_TMP="/run/ansible-tmp",   # each host's own /run
                   ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_PIPELINING="1")   # one nsenter per module, as ssh pipelining
        result = subprocess.run([ansible_playbook(), "-i", str(inventory), str(PLAYBOOK),
                                 "-e", "build=%s" % build.name], env=env, capture_output=True,
                                text=True, timeout=TIMEOUT * 2)
        output = result.stdout + result.stderr
        return result.returncode, output, play_recap(output)


def play_recap(output):
    """{host: {"ok": n, "changed": n, "failed": n, ...}} from ansible's PLAY RECAP."""
    recap = {}
    _, _, tail = output.partition("PLAY RECAP")
    for line in tail.splitlines():
        found = re.match(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", line.strip())
        if found:
            recap[found.group(1)] = {k: int(v) for k, v in
                                     re.findall(r"(\w+)=(\d+)", found.group(2))}
    return recap
