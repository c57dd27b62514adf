"""`pyboss units` per systemd version and per place of install; `pyboss check` of both
shapes, of directives too new for the target, and of a sandbox hiding ExecStart=."""
import os
import re
import subprocess
import sys

import pytest

from test_systemd_versions import venv_under
from unit_tools import pyboss

def host_version():
    return int(re.match(r"systemd (\d+)", subprocess.run(
        ["systemctl", "--version"], capture_output=True, text=True).stdout).group(1))


def units_for(tmp_path, *args, python=sys.executable):
    out = tmp_path / "units"
    out.mkdir(exist_ok=True)
    result = subprocess.run([str(python), "-m", "pyboss", "units", "myapp", "--listen",
                             "http=127.0.0.1:8080", *map(str, args), "--output", str(out),
                             "--", str(python), "-m", "pyboss.demo"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def service_of(units):
    return (units / "myapp.service").read_text()


def comment_before(text, line):
    """The comment lines just above a line of a unit, joined into one sentence."""
    lines = text.splitlines()
    at = lines.index(line)
    start = at
    while start > 0 and lines[start - 1].startswith("# "):
        start -= 1
    return " ".join(l[2:] for l in lines[start:at])


def rewrite(units, old, new):
    service = units / "myapp.service"
    text = service.read_text()
    assert old in text
    service.write_text(text.replace(old, new))


def test_units_target_the_hosts_systemd_and_say_so(tmp_path):
    service = service_of(units_for(tmp_path))
    version = host_version()
    assert "# Written for systemd %d (this host's, from `systemctl --version`)." % version \
        in service
    if version < 253:
        assert "\nType=notify\n" in service and "--after-sighup" not in service
    else:
        assert "\nType=notify-reload\n" in service


def test_units_for_252_keep_type_notify_and_reload_wait(tmp_path):
    service = service_of(units_for(tmp_path, "--systemd-version", "252"))
    assert "# Written for systemd 252 (given by --systemd-version)." in service
    assert "\nType=notify\n" in service
    assert re.search(r"\nExecReload=.* reload --wait --name myapp\n", service)
    assert "\nFileDescriptorStorePreserve=" not in service
    assert "\nRestartSteps=" not in service


def test_units_for_253_use_notify_reload_and_collect_the_sighups_reload(tmp_path):
    service = service_of(units_for(tmp_path, "--systemd-version", "253"))
    assert "\nType=notify-reload\n" in service
    assert re.search(r"\nExecReload=.* reload --wait --name myapp --after-sighup\n", service)
    assert "\nFileDescriptorStorePreserve=" not in service


def test_units_for_254_preserve_the_fd_store_and_say_how_to_start_fresh(tmp_path):
    service = service_of(units_for(tmp_path, "--systemd-version", "254"))
    assert "\nType=notify-reload\n" in service
    assert "\nFileDescriptorStorePreserve=yes\n" in service
    assert "systemctl clean --what=fdstore myapp" in service
    assert "\nRestartSteps=10\nRestartMaxDelaySec=1min\n" in service


def test_units_never_let_restarts_take_the_socket_down(tmp_path):
    units = units_for(tmp_path, "--systemd-version", "252")
    assert "\nStartLimitIntervalSec=0\n" in service_of(units)
    assert "\nTriggerLimitIntervalSec=0\n" in (units / "myapp.socket").read_text()


def test_units_for_pyboss_under_tmp_get_no_private_tmp_and_say_why(tmp_path):
    python = venv_under(tmp_path)
    service = service_of(units_for(tmp_path, "--systemd-version", "252", python=python))
    assert comment_before(service, "PrivateTmp=no") == (
        "%s lives under /tmp, which PrivateTmp=yes (implied by DynamicUser=yes) would "
        "replace with an empty directory." % python)
    assert ("%s lives under /tmp, which PrivateTmp=yes (implied by DynamicUser=yes) would "
            "replace with an empty directory: runs as root" % python) in \
        comment_before(service, "DynamicUser=no")
    result = pyboss("check", "--no-verify", "--systemd-version", "252",
                    *sorted((tmp_path / "units").iterdir()))
    assert (result.returncode, result.stdout) == (0, ""), result.stdout


@pytest.mark.parametrize("args, complaint", [
    (["--systemd-version", "246"], "--systemd-version"),
    (["--systemd-version", "1000"], "--systemd-version"),
    (["--systemd-version", "nan"], "--systemd-version"),
    (["--backlog", "0"], "--backlog"),
    (["--backlog", "65536"], "--backlog"),
    (["--ready-timeout", "inf"], "--ready-timeout"),
    (["--ready-timeout", "nan"], "--ready-timeout"),
    (["--drain-timeout", "1e10"], "--drain-timeout"),
    (["--listen", "http=127.0.0.1:8080\nExecStartPre=/bin/false"], "control character"),
    (["--drain-signal", "TERM\nUser=root"], "control character"),
    (["--socket-mode", "0660\n"], "control character"),
])
def test_units_refuse_bad_values_with_one_line_and_write_nothing(tmp_path, args, complaint):
    out = tmp_path / "units"
    out.mkdir()
    result = pyboss("units", "web", *args, "--output", out, "--", "/bin/true")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and complaint in result.stderr, result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["/bin/sh", "-c", "echo one\necho two"],
    ["/bin/true", "tab\there"],
    ["/bin/true\r"],
])
def test_units_refuse_a_control_character_in_the_command(tmp_path, command):
    result = pyboss("units", "web", "--listen", "8080", "--", *command)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "contains a control character" in result.stderr


def test_units_without_systemctl_ask_for_the_version(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pyboss", "units", "web", "--listen",
                             "8080", "--", "/bin/true"], capture_output=True, text=True,
                            env=dict(os.environ, PATH=str(tmp_path)), timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pyboss units: cannot run systemctl --version: No such file or directory: say which "
        "systemd the units are for with --systemd-version N"]


@pytest.mark.parametrize("version", [252, 253, 254])
def test_check_accepts_the_shape_written_for_each_version(tmp_path, version):
    units = units_for(tmp_path, "--systemd-version", version)
    result = pyboss("check", "--no-verify", "--systemd-version", version,
                    *sorted(units.iterdir()))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_reports_what_systemd_252_does_not_know(tmp_path):
    units = units_for(tmp_path, "--systemd-version", "254")
    result = pyboss("check", "--no-verify", "--systemd-version", "252",
                    *sorted(units.iterdir()))
    assert result.returncode == 1
    unknown = re.findall(r"myapp.service:\d+: (\S+) is unknown to systemd 252 \(it came "
                         r"with (\d+)\)", result.stdout)
    assert unknown == [("Type=notify-reload", "253"), ("FileDescriptorStorePreserve=", "254"),
                       ("RestartSteps=", "254"), ("RestartMaxDelaySec=", "254")]
    assert len(result.stdout.splitlines()) == 4


def test_check_reports_notify_reload_without_exec_reload(tmp_path):
    units = units_for(tmp_path, "--systemd-version", "254")
    text = service_of(units)
    rewrite(units, re.search(r"\nExecReload=.*\n", text).group(), "\n")
    result = pyboss("check", "--no-verify", "--systemd-version", "254",
                    units / "myapp.service")
    assert result.returncode == 1
    assert result.stdout.count("\n") == 1
    assert "Type=notify-reload without ExecReload=: systemd counts every READY=1 after " \
        "RELOADING=1 as a successful reload" in result.stdout


def test_check_reports_a_second_reload_under_notify_reload(tmp_path):
    units = units_for(tmp_path, "--systemd-version", "254")
    rewrite(units, " --after-sighup\n", "\n")
    result = pyboss("check", "--no-verify", "--systemd-version", "254",
                    units / "myapp.service")
    assert result.returncode == 1
    assert "ExecReload= starts a second reload after the one systemd's SIGHUP started" \
        in result.stdout


@pytest.mark.parametrize("planted, hidden_by", [
    ("PrivateTmp=yes", "PrivateTmp=yes"),
    ("DynamicUser=yes", "DynamicUser=yes (which implies PrivateTmp=yes)"),
    ("InaccessiblePaths=/tmp", "InaccessiblePaths=/tmp"),
])
def test_check_reports_exec_start_hidden_by_the_units_own_sandbox(tmp_path, planted,
                                                                  hidden_by):
    python = venv_under(tmp_path)
    units = units_for(tmp_path, "--systemd-version", "252", python=python)
    key = planted.split("=")[0]
    text = service_of(units)
    line = re.search(r"\n%s=.*\n" % key, text)
    rewrite(units, line.group() if line else "\nNoNewPrivileges=yes\n",
            "\n%s\n" % planted if line else "\nNoNewPrivileges=yes\n%s\n" % planted)
    result = pyboss("check", "--no-verify", "--systemd-version", "252",
                    units / "myapp.service")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "%s:%d: ExecStart= runs %s, which this unit's %s hides from the service: it would "
        "fail with 203/EXEC; relax that setting or install it elsewhere"
        % (units / "myapp.service", service_of(units).splitlines().index(
            next(l for l in service_of(units).splitlines() if l.startswith("ExecStart="))) + 1,
           python, hidden_by)]


def test_check_reports_an_app_in_a_home_that_protect_home_hides(tmp_path):
    units = units_for(tmp_path, "--systemd-version", "252")
    text = service_of(units)
    start = re.search(r"\nExecStart=.*\n", text).group()
    app_start = start.split(" -- ")[0] + " -- /home/someone/bin/myapp\n"
    rewrite(units, start, app_start)
    home = re.search(r"\nProtectHome=.*\n", service_of(units)).group()
    rewrite(units, home, "\nProtectHome=yes\n")
    result = pyboss("check", "--no-verify", "--systemd-version", "252",
                    units / "myapp.service")
    assert result.returncode == 1
    assert "ExecStart= runs /home/someone/bin/myapp, which this unit's ProtectHome=yes " \
        "hides" in result.stdout
