"""`pyboss units` writes units that verify and are hardened; `pyboss check` finds what pyboss needs."""
import sys

import pytest

from unit_tools import exposure, pyboss, require_systemd_analyze, verify_output

DEMO = [sys.executable, "-m", "pyboss.demo"]


@pytest.fixture
def generated(tmp_path):
    """Units for an app with two listener names and a short ready timeout."""
    require_systemd_analyze()
    out = tmp_path / "units"
    out.mkdir()
    result = pyboss("units", "myapp", "--listen", "http=127.0.0.1:8080",
                    "--listen", "http=[::1]:8080", "--listen", "admin=unix:/run/myapp-admin.sock",
                    "--listen", "metrics=udp://127.0.0.1:9125", "--ready-timeout", "20",
                    "--output", out, "--", *DEMO)
    assert result.returncode == 0, result.stderr
    return out


def unit_lines(path):
    return path.read_text().splitlines()


def test_generated_units_pass_systemd_analyze_verify_without_a_word(generated):
    files = sorted(generated.iterdir())
    assert [f.name for f in files] == ["myapp-admin.socket", "myapp-metrics.socket",
                                       "myapp.service", "myapp.socket"]
    assert verify_output(files) == ""


def test_generated_service_exposure_is_at_most_2(generated):
    assert exposure(generated / "myapp.service") <= 2.0


def test_each_listener_name_gets_a_socket_unit_named_after_it(generated):
    assert {"ListenStream=127.0.0.1:8080", "ListenStream=[::1]:8080",
            "FileDescriptorName=http"} <= set(unit_lines(generated / "myapp.socket"))
    assert {"ListenStream=/run/myapp-admin.sock", "FileDescriptorName=admin",
            "SocketMode=0660"} <= set(unit_lines(generated / "myapp-admin.socket"))
    assert {"ListenDatagram=127.0.0.1:9125", "FileDescriptorName=metrics"} <= set(
        unit_lines(generated / "myapp-metrics.socket"))
    service = unit_lines(generated / "myapp.service")
    assert "Sockets=myapp.socket myapp-admin.socket myapp-metrics.socket" in service


def test_generated_service_runs_this_pyboss_with_the_options_given(generated):
    service = unit_lines(generated / "myapp.service")
    pyboss_argv = "%s -m pyboss" % sys.executable
    assert ("ExecStart=%s exec --name myapp --ready-timeout 20 -- %s"
            % (pyboss_argv, " ".join(DEMO))) in service
    assert "ExecReload=%s reload --wait --name myapp" % pyboss_argv in service
    assert "TimeoutStartSec=50s" in service  # longer than --ready-timeout


def test_units_without_output_prints_every_unit(tmp_path):
    result = pyboss("units", "web", "--listen", "8080", "--", "/bin/true")
    assert result.returncode == 0, result.stderr
    assert "### web.socket\n" in result.stdout and "### web.service\n" in result.stdout
    assert "FileDescriptorName=listen0" in result.stdout


@pytest.mark.parametrize("args, complaint", [
    (["bad@name", "--listen", "80", "--", "/bin/true"], "invalid NAME"),
    (["web", "--listen", "0", "--", "/bin/true"], "fixed port"),
    (["web", "--listen", "a=80", "--listen", "b=80", "--", "/bin/true"], "given twice"),
    (["web", "--listen", "http=nonsense", "--", "/bin/true"], "cannot parse listen spec"),
    (["web", "--ready-timeout", "soon", "--", "/bin/true"], "--ready-timeout"),
    (["web", "--listen", "80"], "no COMMAND"),
    (["web", "--output", "/nonexistent-dir", "--", "/bin/true"], "not a directory"),
])
def test_units_bad_input_exits_2_with_one_line(args, complaint):
    result = pyboss("units", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and complaint in result.stderr


def test_check_passes_generated_units(generated):
    result = pyboss("check", *sorted(generated.iterdir()))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("line, planted, complaint", [
    ("Type=notify", "Type=simple", "Type=simple"),
    ("NotifyAccess=main", "NotifyAccess=none", "NotifyAccess=none"),
    ("FileDescriptorStoreMax=16", "FileDescriptorStoreMax=0", "FileDescriptorStoreMax=0"),
    ("KillMode=process", "KillMode=mixed", "KillMode=mixed"),
    ("ExecStopPost=", "ExecStopPost=/bin/true", "without 'ExecStopPost=+pyboss sweep'"),
    # /bin/sh, not /bin/kill: systemd-analyze would also complain where procps is missing.
    ("ExecReload=", "ExecReload=/bin/sh -c 'kill -HUP $MAINPID'", "is not 'pyboss reload --wait'"),
    ("TimeoutStartSec=50s", "TimeoutStartSec=15s", "--ready-timeout 20s is not shorter"),
    ("TimeoutStopSec=45s", "TimeoutStopSec=10s", "--stop-timeout 30s is not shorter"),
    ("Restart=on-failure", "Restart=on-failure\nNoSuchKey=1", "Unknown key"),
])
def test_check_finds_each_planted_problem(generated, line, planted, complaint):
    service = generated / "myapp.service"
    lines = [planted if l.startswith(line) else l for l in unit_lines(service)]
    assert lines != unit_lines(service)
    service.write_text("\n".join(lines) + "\n")
    result = pyboss("check", *sorted(generated.iterdir()))
    assert result.returncode == 1
    findings = result.stdout.splitlines()
    assert len([f for f in findings if complaint in f]) >= 1, result.stdout
    # Nothing else is wrong with the units, so nothing else is reported.
    assert all(complaint in f for f in findings), result.stdout


def test_check_missing_file_exits_2_with_one_line(tmp_path):
    result = pyboss("check", tmp_path / "nothere.service")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "pyboss check: cannot read %s: No such file or directory" % (tmp_path / "nothere.service")]
