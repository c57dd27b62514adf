"""systemd 254 from Debian's bookworm-backports, to lay over /usr inside a namespace.

The host keeps its systemd 252; a SystemdNamespace(units, overlay_usr=systemd_254_usr())
runs 254 (for Type=notify-reload and FileDescriptorStorePreserve=).
"""

import fcntl
import shutil
import subprocess
import tempfile
from pathlib import Path

SYSTEMD_254_CACHE = Path("/var/cache/pyboss-tests/systemd-254")


def _debian_mirror():
    """The Debian archive URI apt already uses for bookworm, or None."""
    for source in Path("/etc/apt").glob("sources.list*"):
        files = [source] if source.is_file() else sorted(source.glob("*"))
        for path in files:
            if path.suffix not in (".sources", ".list"):
                continue
            text = path.read_text(errors="replace")
            if path.suffix == ".sources":
                for stanza in text.split("\n\n"):
                    fields = dict(line.split(":", 1) for line in stanza.splitlines()
                                  if ":" in line and not line.startswith(("#", " ")))
                    suites = fields.get("Suites", "").split()
                    if "bookworm" in suites:
                        return fields.get("URIs", "").split()[0]
            else:
                for line in text.splitlines():
                    words = line.split()
                    if len(words) >= 3 and words[0] == "deb" and "bookworm" in words:
                        uri = [w for w in words[1:] if not w.startswith("[")][0]
                        return uri
    return None


def systemd_254_usr(cache=SYSTEMD_254_CACHE):
    """A tree holding systemd 254's /usr (for overlay_usr=), fetched once and cached.

    Uses a private apt configuration (sources, lists, cache all under ``cache``) with the
    host's own Debian mirror, so the host's apt setup is left untouched. Raises
    RuntimeError with the reason when it cannot be had.
    """
    cache = Path(cache)
    tree = cache / "root"
    if (tree / "usr/lib/systemd/systemd").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be fetching it right now
        if (tree / "usr/lib/systemd/systemd").exists():
            return tree
        return _fetch(cache, tree)


def _fetch(cache, tree):
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not available to fetch systemd 254")
    mirror = _debian_mirror()
    if mirror is None:
        raise RuntimeError("no Debian bookworm source in /etc/apt to find bookworm-backports")
    work = cache / "apt"
    shutil.rmtree(work / "debs", ignore_errors=True)
    for sub in ("parts", "lists/partial", "archives/partial", "debs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text("")
    (work / "parts/backports.sources").write_text(
        "Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" % mirror)
    apt = ["apt-get", "-q",
           "-o", "Dir::Etc::SourceList=%s" % (work / "sources.list"),
           "-o", "Dir::Etc::SourceParts=%s" % (work / "parts"),
           "-o", "Dir::State::Lists=%s" % (work / "lists"),
           "-o", "Dir::Cache=%s" % work,
           "-o", "APT::Sandbox::User=root"]
    steps = [apt + ["update"],
             apt + ["download", "-t", "bookworm-backports",
                    "systemd", "libsystemd-shared", "libsystemd0"]]
    for step in steps:
        result = subprocess.run(step, cwd=work / "debs", capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(step[-3:]),
                                                  (result.stderr or result.stdout).strip()))
    debs = sorted((work / "debs").glob("*.deb"))
    if len(debs) < 3:
        raise RuntimeError("bookworm-backports did not provide systemd 254 packages")
    for stale in list(cache.glob("root*")) + list(cache.glob("staging.*")):
        shutil.rmtree(stale)
    staging = Path(tempfile.mkdtemp(prefix="staging.", dir=cache))
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=120)
    # bookworm's packages still ship /lib, /bin and /sbin; the host has merged /usr
    # (/lib -> usr/lib), so only what sits under usr/ is seen through the overlay.
    for top in ("lib", "bin", "sbin"):
        if (staging / top).is_dir() and not (staging / top).is_symlink():
            shutil.copytree(staging / top, staging / "usr" / top, symlinks=True,
                            dirs_exist_ok=True)
            shutil.rmtree(staging / top)
    for deb in debs:
        deb.unlink()
    staging.rename(tree)  # atomic: a half-extracted tree is never taken for the cache
    return tree
