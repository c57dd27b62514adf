"""`pyboss units`: write ready-to-install systemd units that run an app under pyboss.

One .socket unit per listener name (systemd names every socket of a unit alike with
FileDescriptorName=, so distinct names need distinct socket units), all feeding one
.service whose Sockets= lists them. The sockets stay with systemd across restarts and
crashes of pyboss; pyboss hands them to every generation of the app.
"""
import os
import re
import shutil
import stat
import sys

import click

from ..errors import UserError
from ..listeners import ListenError, parse_spec
from .exec import exec_command

# Unit name prefix and pyboss --name at once: no '@' (that would make an instance).
_UNIT_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}$")

# pyboss exec options passed through to ExecStart= as given; exec itself validates them.
PASSED_OPTIONS = {"--ready-after": "SECONDS", "--ready-timeout": "SECONDS",
                  "--drain-signal": "SIGNAL", "--drain-timeout": "SECONDS",
                  "--stop-signal": "SIGNAL", "--stop-timeout": "SECONDS",
                  "--max-draining": "N", "--crash-limit": "N", "--workers": "N",
                  "--reload-strategy": "all|rolling", "--max-surge": "K"}
# Margins over pyboss's own timeouts, so that pyboss (which knows why) reports first.
START_MARGIN = 30.0
STOP_MARGIN = 15.0

HARDENING = """\
# Hardening. On by default; relax what the app needs:
# - it writes files: StateDirectory={name} (or ReadWritePaths=)
# - it needs a fixed user owning files: User=... instead of DynamicUser=yes
# - it uses ctypes/cffi callbacks or a JIT: MemoryDenyWriteExecute=no
# - it needs other system calls: adjust SystemCallFilter=
# - a failed reload quotes the failed generation's last lines, which pyboss reads from
#   the journal: not running as root, it needs SupplementaryGroups=systemd-journal
#   (which lets the app read the whole journal too)
{user}CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
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


def systemd_quote(arg):
    """One argument of an Exec*= line, safe from splitting, specifiers and $ expansion."""
    text = str(arg).replace("%", "%%").replace("$", "$$")
    if text == ";":
        return "\\;"
    if text and not re.search(r"[\s\"'\\]", text):
        return text
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def running_pyboss():
    """argv that runs the pyboss running now: its script, or this python -m pyboss."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if (os.path.basename(script).startswith("pyboss") and not script.endswith(".py")
            and os.access(script, os.X_OK)):
        return [script]
    return [os.path.abspath(sys.executable), "-m", "pyboss"]


def resolved_command(command):
    """COMMAND with a bare program name made absolute: the service's PATH is not ours."""
    program = command[0]
    if "/" not in program:
        found = shutil.which(program)
        if found:
            program = os.path.abspath(found)
    elif not os.path.isabs(program):
        program = os.path.abspath(program)
    return [program] + list(command[1:])


def listen_line(spec):
    if spec.kind == "unix":
        return "ListenStream=%s" % spec.path
    if spec.port == 0:
        raise UserError("listener %s: a socket unit needs a fixed port, not 0" % spec)
    host = "[%s]" % spec.host if ":" in spec.host else spec.host
    address = "%s:%d" % (host, spec.port) if host else str(spec.port)
    return "%s=%s" % ("ListenDatagram" if spec.kind == "udp" else "ListenStream", address)


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
        lines += ["Service=%s.service" % name,
                  "# A crash loop must not be restarted by every incoming connection; the",
                  "# service's StartLimit*= is what finally gives up.",
                  "TriggerLimitIntervalSec=10s", "TriggerLimitBurst=50", "",
                  "[Install]", "WantedBy=sockets.target", ""]
        units[unit] = "\n".join(lines)
    return units


def unreachable_by_others(paths):
    """The first path another user could not run (a directory on the way lacks o+x)."""
    for path in paths:
        real = os.path.realpath(path)
        steps = [real] + [os.path.dirname(real)]
        while steps[-1] != os.path.dirname(steps[-1]):
            steps.append(os.path.dirname(steps[-1]))
        for step in steps:
            try:
                if not os.stat(step).st_mode & stat.S_IXOTH:
                    return real
            except OSError:
                break  # not there (yet): nothing to judge
    return None


def under_home(paths):
    """Whether any path (or what it links to) is where ProtectHome=yes would hide it."""
    for path in paths:
        for candidate in (path, os.path.realpath(path)):
            if candidate.startswith(("/home/", "/root/", "/run/user/")):
                return True
    return False


def service_unit(name, sockets, exec_argv, reload_argv, exec_values, home_paths):
    ready_timeout = exec_values["ready_timeout"]
    stop_after = exec_values["stop_timeout"]
    protect_home = "ProtectHome=yes\n"
    if under_home(home_paths):
        protect_home = ("# pyboss or the app lives under a home directory: readable only.\n"
                        "ProtectHome=read-only\n")
    lines = ["# %s.service: runs the app under pyboss; `systemctl reload %s` starts a new"
             % (name, name),
             "# generation on the same sockets and returns once it serves (or fails, while",
             "# the old generation keeps serving).", "",
             "[Unit]", "Description=%s (pyboss)" % name]
    if sockets:
        lines += ["Requires=%s" % " ".join(sockets),
                  "After=%s network.target" % " ".join(sockets)]
    lines += ["StartLimitIntervalSec=5min", "StartLimitBurst=5", "",
              "[Service]",
              "# pyboss reports READY=1, RELOADING=1, STOPPING=1 and STATUS=; the app talks",
              "# to pyboss, never to systemd.",
              "Type=notify", "NotifyAccess=main"]
    if sockets:
        lines.append("Sockets=%s" % " ".join(sockets))
    lines += ["ExecStart=%s" % " ".join(systemd_quote(a) for a in exec_argv),
              "ExecReload=%s" % " ".join(systemd_quote(a) for a in reload_argv),
              "# pyboss's control socket lives here ($RUNTIME_DIRECTORY).",
              "RuntimeDirectory=pyboss/%N", "RuntimeDirectoryMode=0700",
              "# Kept across restarts: pyboss's notify socket in it comes back from the fd",
              "# store, so what an app sent while pyboss restarted is not lost.",
              "RuntimeDirectoryPreserve=restart",
              "# Listeners bound by pyboss and its notify socket survive a pyboss crash here.",
              "FileDescriptorStoreMax=16",
              "Restart=on-failure", "RestartSec=1s",
              "TimeoutStartSec=%s" % seconds(ready_timeout + START_MARGIN),
              "TimeoutStopSec=%s" % seconds(stop_after + STOP_MARGIN),
              "# Should pyboss die, systemd SIGTERMs the app, which drains. Measured with",
              "# pyboss SIGKILLed 3 times under load (8 clients, 20 ms requests, 2 runs):",
              "# mixed lost 21 and 24 requests (systemd SIGKILLs the app mid-request);",
              "# control-group lost none, worst latency 0.34s; process lost none but left",
              "# every killed pyboss's app running unsupervised.",
              "KillMode=control-group", ""]
    user = "DynamicUser=yes\n"
    unreachable = unreachable_by_others(home_paths)
    if unreachable:
        user = ("# %s is not reachable by other users, so a dynamic\n"
                "# user could not run it: runs as root, confined by the settings below.\n"
                "# Install pyboss and the app where every user can read them to get\n"
                "# DynamicUser=yes back.\nDynamicUser=no\n" % unreachable)
    hardening = HARDENING.format(name=name, protect_home=protect_home, user=user)
    lines.append(hardening)
    lines += ["[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def seconds(value):
    return "%ds" % int(value) if float(value).is_integer() else "%gs" % value


def validated_exec_values(exec_options, command):
    """Parse the passed-through options exactly as `pyboss exec` would; its values."""
    try:
        ctx = exec_command.make_context("pyboss exec", list(exec_options) + ["--"]
                                        + list(command))
    except click.ClickException as e:
        raise UserError(e.format_message().replace("\n", " "))
    values = ctx.params
    if values["ready_after"] is not None and values["ready_after"] >= values["ready_timeout"]:
        raise UserError("--ready-after %g must be shorter than --ready-timeout %g"
                              % (values["ready_after"], values["ready_timeout"]))
    return values


def build_units(name, listens, socket_mode, backlog, quiet, passed, command):
    """{file name: text} for NAME's socket units and service, or UserError."""
    if not _UNIT_NAME.match(name):
        raise UserError("invalid NAME %r: use up to 64 letters, digits, '_', '-', '.', "
                              "not starting with '.'" % name)
    if not command:
        raise UserError("no COMMAND given: put the program to run after '--', e.g. "
                              "pyboss units myapp --listen http=8080 -- /usr/bin/myapp")
    if socket_mode is not None and not re.match(r"^0?[0-7]{3,4}$", socket_mode):
        raise UserError("invalid --socket-mode %r: give an octal mode like 0660"
                              % socket_mode)
    try:
        specs = [parse_spec(text, "listen%d" % i) for i, text in enumerate(listens)]
    except ListenError as e:
        raise UserError(str(e))
    addresses = [str(spec) for spec in specs]
    duplicate = next((a for i, a in enumerate(addresses) if a in addresses[:i]), None)
    if duplicate:
        raise UserError("address %s given twice: one socket per address" % duplicate)
    command = resolved_command(command)
    exec_options = [part for option, value in passed for part in (option, value)]
    if quiet:
        exec_options.append("--quiet")
    values = validated_exec_values(exec_options, command)
    units = socket_units(name, specs, socket_mode, backlog)
    pyboss = running_pyboss()
    exec_argv = pyboss + ["exec", "--name", name] + exec_options + ["--"] + command
    reload_argv = pyboss + ["reload", "--wait", "--name", name]
    # Everything the service will execute, the interpreter running pyboss included.
    home_paths = [a for a in pyboss + command[:1] + [sys.executable] if os.path.isabs(a)]
    units["%s.service" % name] = service_unit(name, list(units), exec_argv, reload_argv,
                                              values, home_paths)
    return units


def passed_exec_options(func):
    for option, metavar in reversed(PASSED_OPTIONS.items()):
        func = click.option(option, metavar=metavar, default=None,
                            help="Passed to 'pyboss exec' in ExecStart=.")(func)
    return func


@click.command("units")
@click.argument("name")
@click.option("--listen", "listens", metavar="[NAME=]SPEC", multiple=True,
              help="A listener held by a socket unit; repeatable. SPEC as for 'pyboss exec'. "
                   "Listeners sharing a NAME share one socket unit.")
@click.option("--output", "-o", metavar="DIR",
              help="Write the unit files into DIR instead of printing them.")
@click.option("--socket-mode", metavar="MODE",
              help="SocketMode= for unix listeners [default: 0660].")
@click.option("--backlog", type=click.IntRange(1, 65535), default=None,
              help="Backlog= of the socket units [default: 4096].")
@click.option("-q", "--quiet", is_flag=True, help="Pass --quiet to 'pyboss exec'.")
@passed_exec_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def units_command(name, listens, output, socket_mode, backlog, quiet, command, **options):
    """Write systemd units that run COMMAND under pyboss with socket activation.

    \b
    pyboss units myapp --listen http=8080 -- /usr/bin/myapp
    pyboss units myapp --listen http=8080 --listen admin=unix:/run/myapp.sock \\
                 --output /etc/systemd/system -- /usr/bin/myapp --workers 4

    Writes NAME.socket (for the first listener name), NAME-LISTENER.socket for
    every further name, and NAME.service running this very pyboss; without
    --output, prints them. Other options are those of 'pyboss exec', checked as
    'pyboss exec' checks them: SECONDS finite, from 0 to 604800; SIGNAL one the
    app can catch.
    """
    passed = [(option, options[option[2:].replace("-", "_")]) for option in PASSED_OPTIONS
              if options[option[2:].replace("-", "_")] is not None]
    units = build_units(name, listens, socket_mode, backlog, quiet, passed, command)
    if output is None:
        click.echo("\n".join("### %s\n%s" % (unit, text) for unit, text in units.items()),
                   nl=False)
        return 0
    if not os.path.isdir(output):
        raise UserError("--output %s is not a directory" % output)
    for unit, text in units.items():
        with open(os.path.join(output, unit), "w") as f:
            f.write(text)
    sockets = [unit for unit in units if unit.endswith(".socket")]
    click.echo("wrote %s in %s; then: systemctl daemon-reload && systemctl enable --now %s"
               % (", ".join(units), output, " ".join(sockets) or "%s.service" % name))
    return 0
