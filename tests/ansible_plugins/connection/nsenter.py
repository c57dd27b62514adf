"""Ansible connection plugin: run every task inside the namespaces of a simulated host.

The fleet test's hosts are systemd instances booted as PID 1 of their own namespaces
(tests/systemd_harness.py). This plugin is how ansible-playbook reaches them: each
command runs under `nsenter` in that host's mount, pid, net, uts, ipc and cgroup
namespaces, so `systemctl` talks to the host's own systemd and files land in the host's
own mounts, exactly as over ssh on a real host. Files are copied by streaming them
through `cat` inside (the host's private mounts are not visible from outside).
"""
from __future__ import annotations

DOCUMENTATION = """
    name: nsenter
    short_description: execute inside the namespaces of a process (a host simulated by namespaces)
    description:
        - Runs commands with nsenter in the mount, pid, net, uts, ipc and cgroup namespaces
          of a process, normally PID 1 (systemd) of a host simulated on this machine.
    author: pyboss
    options:
        nsenter_pid:
            description: The pid, as the controller sees it, of the process whose namespaces are entered.
            required: true
            type: int
            vars:
                - name: ansible_nsenter_pid
    extends_documentation_fragment:
        - connection_pipelining
"""

import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

NAMESPACES = ("--mount", "--pid", "--net", "--uts", "--ipc", "--cgroup")


class Connection(ConnectionBase):
    """Commands and files go through nsenter into the host's namespaces."""

    transport = "nsenter"
    has_pipelining = True

    def _connect(self):
        if not self._connected:
            pid = self.get_option("nsenter_pid")
            try:
                with open("/proc/%d/ns/mnt" % int(pid), "rb"):
                    pass
            except OSError as e:
                raise AnsibleConnectionFailure("host process %s is not there: %s" % (pid, e))
            self._connected = True
        return self

    def _inside(self, argv):
        return ["nsenter", "--target", str(self.get_option("nsenter_pid")), *NAMESPACES,
                "--", *argv]

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        proc = subprocess.Popen(self._inside(["/bin/sh", "-c", cmd]), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as source:
            result = subprocess.run(self._inside(["/bin/sh", "-c", 'cat > "$1"', "sh", out_path]),
                                    stdin=source, capture_output=True)
        if result.returncode != 0:
            raise AnsibleError("copying %s to %s failed: %s"
                               % (in_path, out_path, result.stderr.decode(errors="replace")))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        with open(out_path, "wb") as target:
            result = subprocess.run(self._inside(["cat", "--", in_path]), stdout=target,
                                    stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise AnsibleError("fetching %s failed: %s"
                               % (in_path, result.stderr.decode(errors="replace")))

    def close(self):
        self._connected = False
