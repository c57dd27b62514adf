"""The shipped unit templates in units/ are valid, quiet and hardened."""
import re
import shutil
from pathlib import Path

import pytest

from unit_tools import exposure, pyboss, require_systemd_analyze, verify_output

UNITS = Path(__file__).resolve().parent.parent / "units"
SERVICES = ["myapp.service", "pyboss@.service"]


@pytest.fixture
def installed_units(tmp_path):
    """A copy of units/ (verify reads sibling units from the same directory)."""
    require_systemd_analyze()
    copy = tmp_path / "units"
    shutil.copytree(UNITS, copy)
    return copy


def test_templates_pass_systemd_analyze_verify_without_a_word(installed_units):
    files = sorted(installed_units.iterdir())
    assert [f.name for f in files] == ["myapp.service", "myapp.socket",
                                       "pyboss@.service", "pyboss@.socket"]
    assert verify_output(files, executables=["/usr/bin/pyboss", "/usr/bin/myapp"]) == ""


def test_templates_fail_verify_where_pyboss_is_not_installed(installed_units):
    # The check above means something: without the stub, verify does complain.
    assert "/usr/bin/pyboss" in verify_output([installed_units / "myapp.service"])


@pytest.mark.parametrize("service", SERVICES)
def test_template_service_exposure_is_at_most_2(installed_units, service):
    assert exposure(installed_units / service) <= 2.0


@pytest.mark.parametrize("service", SERVICES)
def test_template_service_passes_pyboss_check(installed_units, service):
    result = pyboss("check", "--no-verify", installed_units / service)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def for_newer_systemd(text):
    """A template with the changes its "systemd 253+" and "254+" comments name."""
    wanted_reload = re.search(r"\n#   (ExecReload=.* --after-sighup)\n", text).group(1)
    text = re.sub(r"\nExecReload=.*\n", "\n%s\n" % wanted_reload, text)
    text = text.replace("\nType=notify\n", "\nType=notify-reload\n")
    return text.replace("\nFileDescriptorStoreMax=16\n",
                        "\nFileDescriptorStoreMax=16\nFileDescriptorStorePreserve=yes\n")


@pytest.mark.parametrize("service", SERVICES)
def test_template_says_which_lines_change_for_newer_systemd(installed_units, service):
    path = installed_units / service
    text = path.read_text()
    assert "# Written for systemd 252" in text
    for mark in ("# systemd 253+: Type=notify-reload", "# systemd 253+, with Type=notify-reload",
                 "# systemd 254+: FileDescriptorStorePreserve=yes", "systemctl clean --what=fdstore"):
        assert mark in text, mark
    # As shipped it is right for 252 and still runs on 254...
    for version in ("252", "254"):
        result = pyboss("check", "--no-verify", "--systemd-version", version, path)
        assert (result.returncode, result.stdout) == (0, ""), result.stdout
    # ...and changed as its comments say, it is right for 254 and wrong for 252.
    newer = for_newer_systemd(text)
    assert newer != text
    path.write_text(newer)
    result = pyboss("check", "--no-verify", "--systemd-version", "254", path)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout
    result = pyboss("check", "--no-verify", "--systemd-version", "252", path)
    assert result.returncode == 1
    assert "Type=notify-reload is unknown to systemd 252" in result.stdout
    assert "FileDescriptorStorePreserve= is unknown to systemd 252" in result.stdout
