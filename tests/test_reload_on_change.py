"""--reload-on-change: a changed file or directory reloads the app once, with the same
truthful verdict as any reload."""
import os
import socket
import ssl
import subprocess
import time

import pytest

from pyboss_testing import PYBOSS, PYTHON, TIMEOUT, http_get, wait_until

APPS = os.path.join(os.path.dirname(__file__), "apps")


def configmap(directory, files):
    """Update directory as the kubelet updates a ConfigMap or Secret volume: write a new
    ..TIMESTAMP directory, swap the ..data symlink to it by rename, link each key
    through ..data, remove the old directory."""
    os.makedirs(directory, exist_ok=True)
    stamp = "..%s_%d" % (time.strftime("%Y_%m_%d_%H_%M_%S"), time.monotonic_ns())
    os.mkdir(os.path.join(directory, stamp))
    for name, text in files.items():
        with open(os.path.join(directory, stamp, name), "w") as f:
            f.write(text)
    data = os.path.join(directory, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    os.symlink(stamp, data + "_tmp")
    os.rename(data + "_tmp", data)
    for name in files:
        if not os.path.lexists(os.path.join(directory, name)):
            os.symlink(os.path.join("..data", name), os.path.join(directory, name))
    if old:
        for name in os.listdir(os.path.join(directory, old)):
            os.unlink(os.path.join(directory, old, name))
        os.rmdir(os.path.join(directory, old))


def launcher(tmp_path, flags_path):
    """The demo app, with its command line options read from flags_path at every start."""
    app = tmp_path / "app"
    app.write_text("#!/bin/sh\nexec %s -m pyboss.demo $(cat %s) \"$@\"\n" % (PYTHON, flags_path))
    app.chmod(0o755)
    return str(app)


def replace_by_rename(path, text):
    """How editors and certificate tools save: write a new file, rename it over the old."""
    with open(str(path) + ".new", "w") as f:
        f.write(text)
    os.rename(str(path) + ".new", path)


@pytest.mark.parametrize("watch", ["directory", "file"])
def test_configmap_symlink_swap_triggers_exactly_one_reload_within_a_second(start_pyboss,
                                                                              tmp_path, watch):
    config = tmp_path / "volume" / "config"      # a quiet parent, like a volume's mount point
    configmap(config, {"flags": "", "other": "x"})
    boss = start_pyboss([launcher(tmp_path, config / "flags")], "--reload-on-change",
                        str(config) if watch == "directory" else str(config / "flags"))
    changed = time.monotonic()
    configmap(config, {"flags": "--work-ms 1", "other": "y"})
    boss.upstream.wait_for("RELOADING=1")
    latency = time.monotonic() - changed
    boss.upstream.wait_for("READY=1")
    status = boss.status()
    print("\nConfigMap swap (%s watched): reload started %.0f ms after the swap"
          % (watch, latency * 1000))
    assert latency < 1.0
    assert [r["outcome"] for r in status["reloads"]] == ["ok"]
    changes = status["reload_on_change"]
    assert (changes["changes"], changes["reloaded"], changes["failed"]) == (1, 1, 0)
    assert not changes["pending"]       # nothing more is on its way from that swap
    assert http_get(boss.address())["generation"] == 2
    assert "%s changed: reloading" % (config if watch == "directory" else config / "flags") \
        in boss.output()


def make_certificate(directory, name):
    """(PEM with certificate and key, the certificate in DER) made by openssl."""
    cert, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=%s" % name], check=True, capture_output=True,
                   timeout=TIMEOUT)
    with open(cert) as c, open(key) as k:
        cert_pem = c.read()
        return cert_pem + k.read(), ssl.PEM_cert_to_DER_cert(cert_pem)


def served_certificate(address):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            certificate = tls.getpeercert(binary_form=True)
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b"HTTP/1.0 200")
            return certificate


def test_certificate_replaced_by_rename_reloads_and_the_new_generation_serves_it(start_pyboss,
                                                                                 tmp_path):
    first_pem, first_der = make_certificate(str(tmp_path), "first")
    second_pem, second_der = make_certificate(str(tmp_path), "second")
    pem = tmp_path / "tls" / "server.pem"
    pem.parent.mkdir()
    pem.write_text(first_pem)
    boss = start_pyboss([PYTHON, os.path.join(APPS, "tls_app.py"), str(pem)],
                        "--reload-on-change", str(pem))
    assert served_certificate(boss.address()) == first_der
    changed = time.monotonic()
    replace_by_rename(pem, second_pem)
    boss.upstream.wait_for("RELOADING=1")
    latency = time.monotonic() - changed
    boss.upstream.wait_for("READY=1")
    print("\ncertificate replaced by rename: reload started %.0f ms later" % (latency * 1000))
    assert boss.serving()["number"] == 2
    assert served_certificate(boss.address()) == second_der
    assert boss.status()["reload_on_change"]["reloaded"] == 1


def test_broken_config_keeps_the_old_generation_serving_and_a_later_change_tries_again(
        start_pyboss, tmp_path):
    flags = tmp_path / "flags"
    flags.write_text("")
    boss = start_pyboss([launcher(tmp_path, flags)], "--reload-on-change", str(flags))
    first = boss.serving()
    replace_by_rename(flags, "--exit-code 1")          # the new config does not start
    boss.upstream.wait_for("RELOADING=1")
    boss.upstream.wait_for("READY=1")                  # systemd hears the failed verdict too
    status = boss.status()
    assert boss.serving(status)["pid"] == first["pid"]
    assert http_get(boss.address())["generation"] == 1
    changes = status["reload_on_change"]
    assert (changes["changes"], changes["reloaded"], changes["failed"]) == (1, 0, 1)
    assert changes["last_error"].endswith("exited with status 1")
    assert status["reloads"][-1]["outcome"] == "failed"
    assert "reload after a change failed: generation 2 (pid" in boss.output()
    text = boss.cli("status").stdout
    assert "  reload on change: %s\n    1 change(s): 0 reloaded, 1 failed (last: generation 2 " \
        % flags in text
    with open(flags, "w") as f:                        # fixed, written in place this time
        f.write("--work-ms 1")
    boss.upstream.wait_for("RELOADING=1")
    boss.upstream.wait_for("READY=1")
    changes = boss.status()["reload_on_change"]
    assert (changes["changes"], changes["reloaded"], changes["failed"]) == (2, 1, 1)
    assert http_get(boss.address())["generation"] == 3


def test_a_path_that_does_not_exist_yet_is_watched_for_its_creation(start_pyboss, tmp_path):
    later = tmp_path / "not" / "yet" / "app.conf"
    boss = start_pyboss([PYTHON, "-m", "pyboss.demo"], "--reload-on-change", str(later))
    assert str(tmp_path) in boss.status()["reload_on_change"]["watching"]
    later.parent.mkdir(parents=True)
    later.write_text("x")
    boss.upstream.wait_for("RELOADING=1")
    boss.upstream.wait_for("READY=1")
    assert boss.serving()["number"] == 2
    # Now it exists, its own directory is watched: an edit there reloads again.
    assert str(later.parent) in boss.status()["reload_on_change"]["watching"]
    replace_by_rename(later, "y")
    boss.upstream.wait_for("RELOADING=1")
    boss.upstream.wait_for("READY=1")
    assert boss.serving()["number"] == 3


def test_editor_scratch_files_next_to_a_watched_directory_entry_do_not_reload(start_pyboss,
                                                                                tmp_path):
    config = tmp_path / "conf.d"
    config.mkdir()
    (config / "a.conf").write_text("1")
    boss = start_pyboss([PYTHON, "-m", "pyboss.demo"], "--reload-on-change", str(config))
    (config / ".a.conf.swp").write_text("swap")        # an editor opened a.conf...
    (config / "a.conf~").write_text("1")               # ...kept a backup...
    replace_by_rename(config / "a.conf", "2")          # ...and saved it: one reload
    (config / ".a.conf.swp").unlink()
    boss.upstream.wait_for("RELOADING=1")
    boss.upstream.wait_for("READY=1")
    wait_until(lambda: not boss.status()["reload_on_change"]["pending"],
               what="the watcher to settle")
    status = boss.status()
    assert status["reload_on_change"]["changes"] == 1
    assert len(status["reloads"]) == 1


@pytest.mark.parametrize("args, message", [
    (["--reload-on-change", ""], "empty --reload-on-change PATH: name a file or a directory to watch"),
    (["--reload-on-change", "x", "--reload-debounce", "0"],
     "invalid --reload-debounce 0: give 0.01 to 60 seconds"),
    (["--reload-on-change", "x", "--reload-debounce", "nan"],
     "invalid --reload-debounce nan: give 0.01 to 60 seconds"),
])
def test_bad_reload_on_change_options_give_one_line_and_exit_2(tmp_path, args, message):
    result = subprocess.run(PYBOSS + ["exec", "--control", str(tmp_path / "c.sock")] + args
                            + ["--", "true"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["pyboss exec: " + message]
    assert os.listdir(tmp_path) == []
