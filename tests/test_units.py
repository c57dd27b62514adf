"""The shipped unit templates in units/ are valid, quiet and hardened."""
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
