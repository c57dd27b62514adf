"""The text of the systemd units `pyboss units` writes, for a given systemd version.

One .socket unit per listener name (systemd names every socket of a unit alike with
FileDescriptorName=, so distinct names need distinct socket units), all feeding one
.service whose Sockets= lists them. The service takes what its systemd offers:

    <= 252  Type=notify, ExecReload=pyboss reload --wait; the fd store lives until a stop
    >= 253  Type=notify-reload: systemd's SIGHUP starts the reload
    >= 254  FileDescriptorStorePreserve=yes, and restart back-off (RestartSteps=)
"""
import re
import subprocess

OLDEST = 247            # ProtectProc= and ProcSubset= of the hardening below
NEWEST = 999
NOTIFY_RELOAD = 253     # Type=notify-reload
FDSTORE_PRESERVE = 254  # FileDescriptorStorePreserve=, RestartSteps=, RestartMaxDelaySec=

# Directives (and values) newer than OLDEST that pyboss writes or an operator is likely to
# add to a pyboss unit, with the systemd release that first knows them. Older systemd
# warns "Unknown key" and ignores the line, so the unit runs in another shape than meant.
DIRECTIVES_SINCE = {
    "ReloadSignal": 253, "OpenFile": 253,
    "FileDescriptorStorePreserve": 254, "RestartSteps": 254, "RestartMaxDelaySec": 254,
    "RestartMode": 254,
}
VALUES_SINCE = {("Type", "notify-reload"): 253, ("PrivateTmp", "disconnected"): 256}

# Margins over pyboss's own timeouts, so that pyboss (which knows why) reports first.
START_MARGIN = 30.0
STOP_MARGIN = 15.0


class VersionUnknown(Exception):
    """systemctl is missing or printed no version: the caller must be told one."""


def host_systemd_version(run=subprocess.run):
    """The version of the systemd installed here, from `systemctl --version`."""
    try:
        result = run(["systemctl", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise VersionUnknown("cannot run systemctl --version: %s" % (e.strerror or e))
    found = re.match(r"systemd (\d+)\b", result.stdout)
    if result.returncode != 0 or not found:
        raise VersionUnknown("systemctl --version printed no version")
    return int(found.group(1))


def systemd_quote(arg):
    """One argument of an Exec*= line, safe from splitting, specifiers and $ expansion."""
    text = str(arg).replace("%", "%%").replace("$", "$$")
    if text == ";":
        return "\\;"
    if text and not re.search(r"[\s\"'\\]", text):
        return text
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def exec_line(key, argv):
    return "%s=%s" % (key, " ".join(systemd_quote(a) for a in argv))


def listen_line(spec):
    if spec.kind == "unix":
        return "ListenStream=%s" % spec.path
    host = "[%s]" % spec.host if ":" in spec.host else spec.host
    address = "%s:%d" % (host, spec.port) if host else str(spec.port)
    return "%s=%s" % ("ListenDatagram" if spec.kind == "udp" else "ListenStream", address)


TRIGGER_LIMIT = [
    "# No trigger limit. The service never sits failed (no start limit, Restart=on-failure),",
    "# so a connection starts it only after an operator's stop or restart; a limit would",
    "# count those, and once hit it closes this socket: every connection refused until",
    "# `systemctl reset-failed`.",
    "TriggerLimitIntervalSec=0",
]


def socket_units(name, specs, socket_mode, backlog):
    """{unit file name: text}: NAME.socket for the first listener name, NAME-L.socket after."""
    grouped = {}
    for spec in specs:
        grouped.setdefault(spec.name, []).append(spec)
    units = {}
    for index, (fd_name, group) in enumerate(grouped.items()):
        unit = "%s.socket" % name if index == 0 else "%s-%s.socket" % (name, fd_name)
        lines = ["# %s: listener %r of %s, held by systemd across restarts of pyboss."
                 % (unit, fd_name, name), "",
                 "[Unit]", "Description=%s listener %s" % (name, fd_name), "",
                 "[Socket]"]
        lines += [listen_line(spec) for spec in group]
        lines.append("FileDescriptorName=%s" % fd_name)
        if any(spec.kind == "unix" for spec in group):
            lines.append("SocketMode=%s" % (socket_mode or "0660"))
        lines.append("Backlog=%d" % (backlog or 4096))
        lines += ["Service=%s.service" % name] + TRIGGER_LIMIT
        lines += ["", "[Install]", "WantedBy=sockets.target", ""]
        units[unit] = "\n".join(lines)
    return units


def seconds(value):
    return "%ds" % int(value) if float(value).is_integer() else "%gs" % value


def version_header(name, version, why):
    lines = ["# %s.service: runs the app under pyboss; `systemctl reload %s` starts a new"
             % (name, name),
             "# generation on the same sockets and returns once it serves (or fails, while",
             "# the old generation keeps serving).",
             "#",
             "# Written for systemd %d (%s)." % (version, why)]
    if version < NOTIFY_RELOAD:
        lines += ["# On systemd 253 or newer, write it again with `pyboss units "
                  "--systemd-version N`:",
                  "# Type=notify-reload (253), FileDescriptorStorePreserve=yes (254)."]
    elif version < FDSTORE_PRESERVE:
        lines += ["# On systemd 254 or newer, write it again with `pyboss units "
                  "--systemd-version N`:",
                  "# FileDescriptorStorePreserve=yes keeps pyboss's own listeners across a stop."]
    return lines + [""]


def reload_lines(version, reload_argv):
    if version < NOTIFY_RELOAD:
        return ["# pyboss reports READY=1, RELOADING=1, STOPPING=1 and STATUS=; the app talks",
                "# to pyboss, never to systemd.",
                "Type=notify", "NotifyAccess=main"], \
               ["# Synchronous and truthful: returns once the new generation serves, or exits",
                "# 1 with the reason (then `systemctl reload` fails; the old one serves on).",
                exec_line("ExecReload", reload_argv)]
    return ["# `systemctl reload` sends pyboss SIGHUP; pyboss answers RELOADING=1 with",
            "# MONOTONIC_USEC=, then READY=1 once the new generation serves or has failed.",
            "# STOPPING=1 and STATUS= as well; the app talks to pyboss, never to systemd.",
            "Type=notify-reload", "NotifyAccess=main"], \
           ["# systemd counts every READY=1 after RELOADING=1 as a successful reload, even",
            "# when the new generation failed. This starts no reload of its own: it waits",
            "# for the one the SIGHUP started and exits 1 with the reason if it failed, so",
            "# that `systemctl reload` fails too (the old generation serves on).",
            exec_line("ExecReload", reload_argv + ["--after-sighup"])]


def fdstore_lines(version, name):
    lines = ["# Listeners bound by pyboss and its notify socket survive a pyboss crash here.",
             "FileDescriptorStoreMax=16"]
    if version >= FDSTORE_PRESERVE:
        lines += ["# ... and `systemctl stop` + `start` too, not only restarts: listeners pyboss",
                  "# bound itself stay open (connections queue) while no pyboss runs, for as",
                  "# long as the unit stays loaded (enabled, or wanted by a loaded unit). For a",
                  "# truly fresh start, empty the store while the service is stopped:",
                  "#   systemctl stop %s && systemctl clean --what=fdstore %s && "
                  "systemctl start %s" % (name, name, name),
                  "FileDescriptorStorePreserve=yes"]
    return lines


def restart_lines(version):
    lines = ["Restart=on-failure", "RestartSec=1s"]
    if version >= FDSTORE_PRESERVE:
        lines += ["# A crash loop backs off from 1s to 1min; an operator's restart is never delayed.",
                  "RestartSteps=10", "RestartMaxDelaySec=1min"]
    return lines


HARDENING = """\
# Hardening. On by default; relax what the app needs:
# - it writes files: StateDirectory={name} (or ReadWritePaths=)
# - it needs a fixed user owning files: User=... instead of DynamicUser=yes
# - it uses ctypes/cffi callbacks or a JIT: MemoryDenyWriteExecute=no
# - it needs other system calls: adjust SystemCallFilter=
{user}CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
{private_tmp}PrivateDevices=yes
PrivateUsers=yes
# Everything read-only but /dev, /proc, /sys and the directories systemd makes for the
# unit; it hides nothing, so it holds wherever pyboss and the app live.
ProtectSystem=strict
{protect_home}ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
DevicePolicy=closed
UMask=0077
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
"""


def _setting(key, value, why):
    comment = "".join("# %s\n" % line for line in _wrap(why)) if why else ""
    return "%s%s=%s\n" % (comment, key, value)


def _wrap(text, width=86):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = "%s %s" % (line, word) if line else word
    return lines + [line] if line else lines


def hardening_lines(name, sandbox, why):
    user = _setting("DynamicUser", "yes" if sandbox.dynamic_user else "no",
                    why.get("DynamicUser") and why["DynamicUser"] + ": runs as root, confined "
                    "by the settings below. Install pyboss and the app elsewhere, where every "
                    "user can read them, to get DynamicUser=yes back.")
    private_tmp = _setting("PrivateTmp", "yes" if sandbox.private_tmp else "no",
                           why.get("PrivateTmp") and why["PrivateTmp"] + ".")
    protect_home = _setting("ProtectHome", sandbox.protect_home,
                            why.get("ProtectHome") and why["ProtectHome"] + ".")
    return HARDENING.format(name=name, user=user, private_tmp=private_tmp,
                            protect_home=protect_home).splitlines()


def service_unit(name, sockets, exec_argv, reload_argv, timeouts, version, why_version,
                 sandbox, why_sandbox):
    """The text of NAME.service; timeouts: (ready_timeout, stop_timeout) of pyboss exec."""
    ready_timeout, stop_timeout = timeouts
    type_lines, reload = reload_lines(version, reload_argv)
    lines = version_header(name, version, why_version)
    lines += ["[Unit]", "Description=%s (pyboss)" % name]
    if sockets:
        lines += ["Requires=%s" % " ".join(sockets),
                  "After=%s network.target" % " ".join(sockets)]
    lines += ["# No start limit: `systemctl restart` counts against it as much as a crash, and",
              "# a unit that hits it takes its socket units down with it (every connection",
              "# refused until `systemctl reset-failed`). pyboss's own --crash-limit and",
              "# back-off, and RestartSec= below, slow a crash loop instead.",
              "StartLimitIntervalSec=0", "",
              "[Service]"] + type_lines
    if sockets:
        lines.append("Sockets=%s" % " ".join(sockets))
    lines += [exec_line("ExecStart", exec_argv)] + reload
    lines += ["# pyboss's control socket lives here ($RUNTIME_DIRECTORY).",
              "RuntimeDirectory=pyboss/%N", "RuntimeDirectoryMode=0700",
              "# Kept across restarts: pyboss's notify socket in it comes back from the fd",
              "# store, so what an app sent while pyboss restarted is not lost.",
              "RuntimeDirectoryPreserve=restart"]
    lines += fdstore_lines(version, name) + restart_lines(version)
    lines += ["TimeoutStartSec=%s" % seconds(ready_timeout + START_MARGIN),
              "TimeoutStopSec=%s" % seconds(stop_timeout + STOP_MARGIN),
              "# KillMode=process: should pyboss die, systemd kills nothing else; the app",
              "# serves on and the pyboss Restart= starts adopts it (state in the fd store).",
              "# Measured, pyboss SIGKILLed under load: mixed loses requests (systemd SIGKILLs",
              "# the app); control-group loses none but restarts the app, stalling every",
              "# request for as long as it takes to start; process loses none, app kept.",
              "# On stop pyboss stops the app; if pyboss is dead then, ExecStopPost= does.",
              "KillMode=process",
              exec_line("ExecStopPost", reload_argv[:reload_argv.index("reload")] + ["sweep"])
              .replace("ExecStopPost=", "ExecStopPost=+", 1), ""]
    lines += hardening_lines(name, sandbox, why_sandbox)
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
