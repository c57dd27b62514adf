"""The shipped templates in units/ work under a real systemd, as installed."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from pyboss.systemd.sandbox import executable_chain, sandbox_for
from test_units import for_newer_systemd

UNITS = Path(__file__).resolve().parent.parent / "units"


def host_drop_in():
    """What an admin adds where pyboss is not installed system-wide, as `pyboss units`
    would choose it: here the test's python may live under /root (mode 0700: no dynamic
    user, ProtectHome=read-only) or /tmp (PrivateTmp=no), wherever the checkout is."""
    sandbox, _ = sandbox_for(executable_chain(sys.executable)
                             + [sys.prefix, sys.base_prefix, str(UNITS.parent)])
    return ("[Service]\nDynamicUser=%s\nPrivateTmp=%s\nProtectHome=%s\n"
            % ("yes" if sandbox.dynamic_user else "no",
               "yes" if sandbox.private_tmp else "no", sandbox.protect_home))


def installed(tmp_path, newer_systemd=None):
    """units/ as an admin would install them, plus /usr/bin/pyboss and /usr/bin/myapp.

    newer_systemd: a systemd 254 /usr tree; the services are then changed as their
    "systemd 253+" and "254+" comments say, and the tree is laid under the stubs.
    """
    units = tmp_path / "units"
    shutil.copytree(UNITS, units)
    if newer_systemd is not None:
        for service in ("myapp.service", "pyboss@.service"):
            (units / service).write_text(for_newer_systemd((units / service).read_text()))
        # One overlay over /usr: a tree of links to 254's files, the stubs beside them.
        (tmp_path / "usr-tree").mkdir()
        subprocess.run(["cp", "-as", str(newer_systemd / "usr"), str(tmp_path / "usr-tree")],
                       check=True, timeout=120)
    for unit in ("myapp.service", "pyboss@demo.service"):
        (units / (unit + ".d")).mkdir()
        (units / (unit + ".d") / "host.conf").write_text(host_drop_in())
    (tmp_path / "demo.conf").write_text(
        "PYBOSS_OPTIONS=--ready-timeout 20\nAPP_COMMAND=/usr/bin/myapp\n")
    (units / "pyboss@demo.service.d" / "env.conf").write_text(
        "[Service]\nEnvironmentFile=\nEnvironmentFile=%s\n" % (tmp_path / "demo.conf"))
    bin_dir = tmp_path / "usr-tree" / "usr" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in (("pyboss", "pyboss"), ("myapp", "pyboss.demo")):
        (bin_dir / name).write_text(textwrap.dedent("""\
            #!/bin/sh
            exec %s -m %s "$@"
            """ % (sys.executable, module)))
        (bin_dir / name).chmod(0o755)
    return units, tmp_path / "usr-tree"


def test_templates_serve_and_reload_under_systemd(systemd_ns, tmp_path):
    units, usr_tree = installed(tmp_path)
    ns = systemd_ns(units, overlay_usr=usr_tree)
    serve_reload_and_stop(ns)


def test_templates_changed_as_their_comments_say_serve_and_reload_under_systemd_254(
        systemd_ns, systemd_254, tmp_path):
    units, usr_tree = installed(tmp_path, newer_systemd=systemd_254)
    ns = systemd_ns(units, overlay_usr=usr_tree)
    assert ns.run(["systemctl", "--version"]).stdout.startswith("systemd 254 ")
    for unit in ("myapp.service", "pyboss@demo.service"):
        assert ns.systemctl("show", "-P", "Type", unit).stdout.strip() == "notify-reload"
        assert ns.systemctl("show", "-P", "FileDescriptorStorePreserve",
                            unit).stdout.strip() == "yes"
    serve_reload_and_stop(ns)


def serve_reload_and_stop(ns):
    def get(*where):
        return json.loads(ns.run(["curl", "-sS", "--max-time", "10", *where]).stdout)

    ns.systemctl("start", "myapp.socket", "pyboss@demo.socket")
    assert get("http://127.0.0.1:8080/")["generation"] == 1
    assert get("--unix-socket", "/run/demo.sock", "http://demo/")["generation"] == 1
    # The generation answers during its settle period; systemd hears READY=1 after it:
    # `systemctl start` waits for that (a reload before would merge into the start job).
    ns.systemctl("start", "myapp.service", "pyboss@demo.service")

    for unit in ("myapp.service", "pyboss@demo.service"):
        ns.run(["timeout", "60", "systemctl", "reload", unit])
    assert get("http://127.0.0.1:8080/")["generation"] == 2
    assert get("--unix-socket", "/run/demo.sock", "http://demo/")["generation"] == 2
    status = json.loads(ns.run(["pyboss", "status", "--json",
                                "--control", "/run/pyboss/demo/demo.sock"]).stdout)
    assert [(l["name"], l["origin"]) for l in status["listeners"]] == [("http", "inherited")]

    instance_slice = "system.slice/system-pyboss.slice"
    assert len(ns.unit_processes("myapp.service")) >= 2  # pyboss and its generation(s)
    assert len(ns.unit_processes("pyboss@demo.service", slice_=instance_slice)) >= 2
    ns.systemctl("stop", "myapp.service", "pyboss@demo.service")
    assert ns.unit_processes("myapp.service") == []
    assert ns.unit_processes("pyboss@demo.service", slice_=instance_slice) == []
