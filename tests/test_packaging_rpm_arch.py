"""The RPM and Arch packages build from this checkout and hold what the Debian one holds.

Both builds take a few seconds here (packaging/build-rpm with rpmbuild, packaging/build-arch
with makepkg as an unprivileged user), so they run in the suite.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
PACKAGING = CHECKOUT / "packaging"


def project_version():
    text = (CHECKOUT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def expected_files(site_packages):
    from pyboss.cli import cli

    files = {
        "/usr/bin/pyboss",
        site_packages + "/pyboss/supervisor/core.py",
        "/usr/lib/systemd/system/pyboss@.service",
        "/usr/lib/systemd/system/pyboss@.socket",
        "/usr/share/bash-completion/completions/pyboss",
        "/usr/share/zsh/site-functions/_pyboss",
        "/usr/share/fish/vendor_completions.d/pyboss.fish",
        "/usr/share/man/man1/pyboss.1.gz",
    }
    files |= {"/usr/share/man/man1/pyboss-%s.1.gz" % name for name in cli.commands}
    files |= {"/usr/share/pyboss/units/" + unit.name for unit in (CHECKOUT / "units").iterdir()}
    return files


def build(script, out, tool):
    if shutil.which(tool) is None and os.geteuid() != 0:
        pytest.skip("%s missing and not root to install it" % tool)
    if shutil.which(tool) is None and shutil.which("apt-get") is None:
        pytest.skip("%s missing and no apt-get to install it" % tool)
    result = subprocess.run([str(PACKAGING / script), str(out)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return Path(result.stdout.strip().splitlines()[-1]), result.stderr


def test_package_versions_agree_with_pyproject():
    version = project_version()
    changelog = (PACKAGING / "debian/changelog").read_text().splitlines()[0]
    assert changelog.startswith("pyboss (%s)" % version)
    spec = (PACKAGING / "rpm/pyboss.spec").read_text()
    assert re.search(r"^Version:\s*%s$" % re.escape(version), spec, re.M)
    assert re.search(r"^\* .* - %s-1$" % re.escape(version), spec, re.M)
    assert "\npkgver=%s\n" % version in (PACKAGING / "arch/PKGBUILD").read_text()


def test_rpm_builds_with_rpmbuild_and_passes_rpmlint(tmp_path):
    rpm, log = build("build-rpm", tmp_path, "rpmbuild")
    assert rpm.name == "pyboss-%s-1.noarch.rpm" % project_version()
    files = set(subprocess.run(["rpm", "-qlp", str(rpm)], capture_output=True, text=True,
                               check=True).stdout.split())
    sitelib = next(f for f in files if f.endswith("-packages/pyboss"))
    missing = expected_files(sitelib[: -len("/pyboss")]) - files
    assert not missing, sorted(missing)
    requires = subprocess.run(["rpm", "-qp", "--requires", "--recommends", str(rpm)],
                              capture_output=True, text=True, check=True).stdout
    assert "python3-click" in requires and "python3-systemd" in requires
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(rpm)], capture_output=True,
                             text=True, check=True).stdout
    assert "reload" in scripts and not re.search(r"\b(try-)?restart\b", scripts)
    if shutil.which("rpmlint") is None:
        pytest.skip("rpm built; rpmlint not installed")
    lint = subprocess.run(["rpmlint", "-c", str(PACKAGING / "rpm/rpmlint.toml"), str(rpm),
                           str(PACKAGING / "rpm/pyboss.spec")],
                          capture_output=True, text=True, timeout=300)
    assert " 0 errors" in lint.stdout, lint.stdout


def test_arch_package_builds_with_makepkg_as_an_unprivileged_user(tmp_path):
    package, log = build("build-arch", tmp_path, "makepkg")
    assert package.name.startswith("pyboss-%s-1-any.pkg.tar" % project_version())
    listing = subprocess.run(["bsdtar", "-tf", str(package)], capture_output=True, text=True,
                             check=True).stdout.split()
    files = {"/" + name for name in listing if not name.endswith("/")}
    sitelib = next(f for f in files if f.endswith("-packages/pyboss/__init__.py"))
    missing = expected_files(sitelib[: -len("/pyboss/__init__.py")]) - files
    assert not missing, sorted(missing)
    info = subprocess.run(["bsdtar", "-xOf", str(package), ".PKGINFO"], capture_output=True,
                          text=True, check=True).stdout
    assert "depend = python-click" in info
    assert "optdepend = python-systemd" in info
