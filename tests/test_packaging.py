"""The Debian package, built from this checkout, installs a pyboss that works in a real systemd.

The .deb is built once per run with packaging/build-deb. It is never installed on the
test host: it is unpacked into a directory that is laid over /usr inside a throwaway
systemd booted in namespaces (tests/systemd_harness.py), so everything the service runs
there (pyboss, its python modules, the demo app, the pyboss@ templates) comes from the
package.
"""

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest


CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGING = CHECKOUT / "packaging"
SITE = "usr/lib/python3/dist-packages"

# Runs inside the namespace with the packaged python modules on /usr. "once" makes one
# request and prints its outcome; "load N" keeps N threads making requests on fresh
# connections until its stdin closes, then prints the totals.
HTTP_CLIENT = textwrap.dedent("""\
    import json, socket, sys, threading

    def request(path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(path)
            sock.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        if not head.startswith(b"HTTP/1.0 200"):
            raise RuntimeError("bad response: %r" % data[:200])
        return json.loads(body)["generation"]

    if sys.argv[1] == "once":
        try:
            print(json.dumps({"generation": request(sys.argv[2])}))
        except OSError as exc:
            print(json.dumps({"error": type(exc).__name__}))
        sys.exit(0)

    path, threads = sys.argv[2], int(sys.argv[3])
    stop, lock, started = threading.Event(), threading.Lock(), threading.Event()
    totals = {"ok": 0, "failed": 0, "errors": [], "generations": set()}

    def worker():
        while not stop.is_set():
            try:
                generation = request(path)
            except Exception as exc:
                with lock:
                    totals["failed"] += 1
                    totals["errors"].append(repr(exc))
                continue
            with lock:
                totals["ok"] += 1
                totals["generations"].add(generation)
            started.set()

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    started.wait(30)
    print("started", flush=True)
    sys.stdin.read()  # the test closes our stdin when the load should end
    stop.set()
    for thread in workers:
        thread.join()
    totals["generations"] = sorted(totals["generations"])
    totals["errors"] = totals["errors"][:5]
    print(json.dumps(totals), flush=True)
""")


def project_version():
    text = (CHECKOUT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def cli_commands():
    from pyboss.cli import cli
    return sorted(name for name, command in cli.commands.items() if not command.hidden)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """Path of the .deb that packaging/build-deb makes from this checkout."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("not a Debian machine: dpkg-deb missing")
    if shutil.which("dpkg-buildpackage") is None and os.geteuid() != 0:
        pytest.skip("dpkg-buildpackage missing and not root to install it")
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([str(PACKAGING / "build-deb"), str(out)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.name == "pyboss_%s_all.deb" % project_version()
    return path


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    """The package's files unpacked into a tree whose usr/ can be laid over /usr."""
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    # On a merged-/usr system (this one) dpkg puts /lib/... into /usr/lib/... through
    # the /lib symlink; the overlay only covers /usr, so do the same move here.
    if (root / "lib").is_dir():
        shutil.copytree(root / "lib", root / "usr/lib", dirs_exist_ok=True)
        shutil.rmtree(root / "lib")
    return root


def test_deb_has_no_lintian_errors(deb):
    result = subprocess.run([str(PACKAGING / "lint-deb"), str(deb)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("E:")]


def test_deb_ships_command_units_man_pages_and_completions(deb):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    expected = {
        "/usr/bin/pyboss",
        "/%s/pyboss/supervisor/core.py" % SITE,
        "/%s/pyboss/demo.py" % SITE,
        "/lib/systemd/system/pyboss@.service",
        "/lib/systemd/system/pyboss@.socket",
        "/usr/share/bash-completion/completions/pyboss",
        "/usr/share/zsh/vendor-completions/_pyboss",
        "/usr/share/fish/vendor_completions.d/pyboss.fish",
        "/usr/share/man/man1/pyboss.1.gz",
    }
    expected |= {"/usr/share/pyboss/units/" + unit.name for unit in (CHECKOUT / "units").iterdir()}
    expected |= {"/usr/share/man/man1/pyboss-%s.1.gz" % name for name in cli_commands()}
    assert expected <= files, sorted(expected - files)


def test_deb_depends_on_click_and_recommends_systemd_python(deb):
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Recommends"],
                            capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Depends:.*\bpython3-click\b", fields, re.M)
    assert re.search(r"^Recommends:.*\bpython3-systemd\b", fields, re.M)


def test_installing_or_upgrading_the_deb_never_starts_stops_or_enables_a_unit(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
    scripts = {path.name: path.read_text() for path in tmp_path.iterdir()
               if path.name in ("preinst", "postinst", "prerm", "postrm")}
    assert "postinst" in scripts  # daemon-reload so systemd sees new templates
    for name, text in scripts.items():
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "deb-systemd-invoke" not in code, name
        assert not re.search(r"\b(start|stop|restart|try-restart|enable)\b", code), name


def test_man_pages_and_completions_follow_the_click_definitions(unpacked):
    from pyboss.cli import cli

    env = dict(os.environ, PYTHONPATH=str(unpacked / SITE), MANWIDTH="200")
    top = subprocess.run(["man", "-l", str(unpacked / "usr/share/man/man1/pyboss.1.gz")],
                         capture_output=True, text=True, env=env).stdout
    for name in cli_commands():
        assert "pyboss-%s(1)" % name in top
    exec_page = subprocess.run(
        ["man", "-l", str(unpacked / "usr/share/man/man1/pyboss-exec.1.gz")],
        capture_output=True, text=True, env=env).stdout
    for param in cli.commands["exec"].params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--"):
                assert opt in exec_page
    # The packaged bash completion asks the packaged command for candidates.
    completion = subprocess.run(
        ["/usr/bin/python3", str(unpacked / "usr/bin/pyboss")], capture_output=True, text=True,
        env=dict(env, _PYBOSS_COMPLETE="bash_complete", COMP_WORDS="pyboss re", COMP_CWORD="1"))
    assert "plain,reload" in completion.stdout.split()
    assert "complete -o nosort -F _pyboss_completion pyboss" in (
        unpacked / "usr/share/bash-completion/completions/pyboss").read_text()


def write_demo_instance(units_dir):
    """pyboss@demo: the shipped templates, configured by a drop-in (not /etc/pyboss)."""
    dropin = units_dir / "pyboss@demo.service.d"
    dropin.mkdir(parents=True)
    (dropin / "demo.conf").write_text(textwrap.dedent("""\
        [Service]
        EnvironmentFile=
        Environment="PYBOSS_OPTIONS=--ready-timeout 20 --drain-timeout 10 --stop-timeout 10"
        Environment="APP_COMMAND=/usr/bin/python3 -m pyboss.demo"
        """))
    return units_dir


def test_packaged_pyboss_socket_activates_reloads_under_load_and_stops_clean(
        systemd_ns, unpacked, tmp_path):
    client = tmp_path / "http_client.py"
    client.write_text(HTTP_CLIENT)
    ns = systemd_ns(write_demo_instance(tmp_path / "units"), overlay_usr=unpacked)
    service, socket_unit = "pyboss@demo.service", "pyboss@demo.socket"
    cgroup_slice = "system.slice/system-pyboss.slice"

    def request_once():
        return json.loads(ns.run(["/usr/bin/python3", client, "once", "/run/demo.sock"]).stdout)

    # The units and the code are the package's, laid over /usr.
    fragment = ns.systemctl("show", "-P", "FragmentPath", service).stdout.strip()
    assert fragment.endswith("/systemd/system/pyboss@.service")
    assert ns.run(["cmp", fragment, unpacked / "usr/lib/systemd/system/pyboss@.service"])
    module = ns.run(["/usr/bin/python3", "-c", "import pyboss; print(pyboss.__file__)"]).stdout
    assert module.strip() == "/%s/pyboss/__init__.py" % SITE

    ns.systemctl("enable", "--runtime", "--now", socket_unit)
    assert ns.systemctl("is-active", service, check=False).stdout.strip() == "inactive"
    assert request_once() == {"generation": 1}  # the first connection starts the service
    # It answers during its settle period; `systemctl start` waits for pyboss's READY=1.
    ns.systemctl("start", service)
    assert ns.systemctl("is-active", service).stdout.strip() == "active"
    assert ns.unit_processes(service, slice_=cgroup_slice)

    load = ns.start_background(["/usr/bin/python3", client, "load", "/run/demo.sock", 4],
                               stdin=subprocess.PIPE, text=True)
    assert load.stdout.readline().strip() == "started"
    reloads = 3
    for number in range(2, reloads + 2):
        ns.run(["timeout", "60", "systemctl", "reload", service], timeout=90)
        status = ns.systemctl("show", "-P", "StatusText", service).stdout
        assert re.search(r"\bgeneration %d\b" % number, status), status
        print("after reload:", status.strip())
    load.stdin.close()
    totals = json.loads(load.stdout.read())
    print("requests under load:", totals)
    load.wait(timeout=60)
    assert totals["failed"] == 0, totals
    assert totals["ok"] > 0
    assert totals["generations"][-1] == reloads + 1, totals

    ns.systemctl("stop", socket_unit, service)
    assert ns.unit_processes(service, slice_=cgroup_slice) == []
    for unit in (service, socket_unit):
        assert ns.systemctl("is-active", unit, check=False).stdout.strip() == "inactive"
    assert "error" in request_once()  # nothing listens any more
    assert ns.run(["test", "-e", "/run/pyboss/demo"], check=False).returncode == 1


NEWER = project_version() + ".post1"


@pytest.fixture(scope="module")
def newer_deb(deb, tmp_path_factory):
    """A .deb of this checkout with a higher version: the upgrade an operator installs."""
    tree = tmp_path_factory.mktemp("newer") / "pyboss"
    subprocess.run([str(PACKAGING / "copy-tree"), str(CHECKOUT), str(tree)], check=True,
                   timeout=120)
    for path, pattern, replacement in (
            ("pyproject.toml", r'^version\s*=\s*"[^"]+"', 'version = "%s"' % NEWER),
            ("pyboss/__init__.py", r'__version__ = "[^"]+"', '__version__ = "%s"' % NEWER)):
        text = (tree / path).read_text()
        (tree / path).write_text(re.sub(pattern, replacement, text, count=1, flags=re.M))
    changelog = tree / "packaging/debian/changelog"
    changelog.write_text("pyboss (%s) unstable; urgency=medium\n\n  * Upgrade test build.\n\n"
                         " -- pyboss maintainers <maintainers@pyboss.example.org>  "
                         "Sun, 22 Nov 2026 07:30:00 +0000\n\n%s" % (NEWER, changelog.read_text()))
    out = tmp_path_factory.mktemp("newer-deb")
    result = subprocess.run([str(tree / "packaging/build-deb"), str(out)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return Path(result.stdout.strip().splitlines()[-1])


def test_dpkg_i_of_a_newer_build_upgrades_the_running_pyboss_in_place(
        systemd_ns, unpacked, newer_deb, tmp_path):
    from pyboss_testing import wait_until
    client = tmp_path / "http_client.py"
    client.write_text(HTTP_CLIENT)
    ns = systemd_ns(write_demo_instance(tmp_path / "units"), overlay_usr=unpacked)
    service = "pyboss@demo.service"
    # dpkg writes to /usr, /var and /etc: inside the namespace, into throwaway layers
    # over them, never into the host's.
    layers = []
    for top in ("usr", "var", "etc"):
        upper, work = tmp_path / ("upper-" + top), tmp_path / ("work-" + top)
        upper.mkdir()
        work.mkdir()
        layers.append("mount -t overlay overlay -o lowerdir=/%s,upperdir=%s,workdir=%s /%s"
                      % (top, upper, work, top))
    ns.run(["sh", "-c", " && ".join(layers)])

    def ask_status():
        # As an admin asks: root, from outside the DynamicUser= service.
        return ns.run(["/usr/bin/pyboss", "status", "--json", "--name", "demo"], check=False)

    def status():
        answer = ask_status()
        assert answer.returncode == 0, answer.stderr
        return json.loads(answer.stdout)

    ns.systemctl("start", "pyboss@demo.socket", service)
    before = status()
    assert before["version"] == project_version()
    supervisor = int(ns.systemctl("show", "-P", "MainPID", service).stdout)
    load = ns.start_background(["/usr/bin/python3", client, "load", "/run/demo.sock", 4],
                               stdin=subprocess.PIPE, text=True)
    assert load.stdout.readline().strip() == "started"
    installed = ns.run(["dpkg", "--log=/dev/null", "--force-depends", "-i", newer_deb],
                       timeout=300, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    def upgraded():
        # A status request that reaches pyboss just as it exec()s goes unanswered.
        answer = ask_status()
        return answer.returncode == 0 and json.loads(answer.stdout)["version"] == NEWER
    wait_until(upgraded, what="the in-place upgrade by postinst")
    load.stdin.close()
    totals = json.loads(load.stdout.read())
    load.wait(timeout=60)
    assert totals["failed"] == 0, totals
    after = status()
    assert after["pid"] == supervisor
    assert [g["pid"] for g in after["generations"]] == [g["pid"] for g in before["generations"]]
    assert int(ns.systemctl("show", "-P", "MainPID", service).stdout) == supervisor
    assert ns.systemctl("is-active", service).stdout.strip() == "active"
    assert totals["generations"] == [1]
    ns.systemctl("stop", "pyboss@demo.socket", service)
    assert ns.unit_processes(service, slice_="system.slice/system-pyboss.slice") == []
