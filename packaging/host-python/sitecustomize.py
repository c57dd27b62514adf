"""Make Debian's python3 install wheels like Fedora's and Arch's python does.

Debian patches sysconfig so that installs outside a Debian package build go
to /usr/local/lib/python3.X/dist-packages. The RPM and Arch packages built on
a Debian machine (packaging/build-rpm, packaging/build-arch) must instead hold
the upstream layout, /usr/lib/python3.X/site-packages, which is CPython's
"posix_prefix" scheme. Those scripts put this directory on PYTHONPATH only
when the host is Debian; nothing else ever imports it.
"""

import sysconfig

_debian_preferred_schemes = sysconfig._get_preferred_schemes


def _upstream_preferred_schemes():
    schemes = dict(_debian_preferred_schemes())
    schemes["prefix"] = "posix_prefix"
    return schemes


sysconfig._get_preferred_schemes = _upstream_preferred_schemes
# get_paths()/get_path() took the default scheme at import time: renew it.
sysconfig.get_paths.__defaults__ = ("posix_prefix",) + sysconfig.get_paths.__defaults__[1:]
sysconfig.get_path.__defaults__ = ("posix_prefix",) + sysconfig.get_path.__defaults__[1:]
