"""`pyboss units`: write ready-to-install systemd units that run an app under pyboss.

The sockets stay with systemd across restarts and crashes of pyboss; pyboss hands them to
every generation of the app. The unit text, and what each systemd version gets, is in
pyboss/systemd/unitfile.py; the sandbox follows where pyboss, its Python and the app live
(pyboss/systemd/sandbox.py). Here: the command line, and checking what it is given.
"""
import math
import os
import re
import shutil
import sys

import click

from ..errors import UserError
from ..listeners import ListenError, parse_spec
from ..systemd import unitfile
from ..systemd.sandbox import executable_chain, sandbox_for
from .exec import check_readiness_options, exec_command

# Unit name prefix and pyboss --name at once: no '@' (that would make an instance).
_UNIT_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}$")
# A unit file is line-based: a newline in a value would start a directive of its own,
# and other control characters have no place in a unit either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# More than a day for pyboss to wait is a typo, not a plan; systemd's timeouts follow it.
MAX_SECONDS = 86400.0

# pyboss exec options passed through to ExecStart= as given; exec itself validates them.
PASSED_OPTIONS = {"--ready-after": "SECONDS", "--ready-timeout": "SECONDS",
                  "--ready-probe": "PATH", "--ready-grace": "SECONDS",
                  "--drain-signal": "SIGNAL", "--drain-timeout": "SECONDS",
                  "--stop-signal": "SIGNAL", "--stop-timeout": "SECONDS",
                  "--max-draining": "N", "--crash-limit": "N", "--workers": "N",
                  "--reload-strategy": "all|rolling", "--max-surge": "K"}
SECONDS_OPTIONS = ("ready_after", "ready_timeout", "ready_grace", "drain_timeout", "stop_timeout")


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


def refuse_control_characters(fields):
    """UserError naming the first (what, value) that holds a control character."""
    for what, value in fields:
        found = _CONTROL.search(str(value))
        if found:
            raise UserError("%s %r contains a control character (%r): a unit file cannot "
                            "carry it; remove it" % (what, str(value), found.group()))


def where_things_live(pyboss, command):
    """Every path the service reads to run: pyboss, its Python, its code, the app.

    The venv's python is a link to the interpreter it was made from, and the standard
    library lives beside that; the app may be a script with an interpreter of its own,
    or an interpreter given a script; all of it must be visible inside the sandbox.
    """
    paths = []
    for program in pyboss[:1] + command[:1] + [sys.executable]:
        if os.path.isabs(program):
            paths += executable_chain(program)
    paths += [sys.prefix, sys.base_prefix,
              os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    paths += [arg for arg in command[1:] if os.path.isabs(arg) and os.path.exists(arg)]
    return list(dict.fromkeys(paths))


def target_version(given):
    """(version, why) the units are written for: --systemd-version, else this host's."""
    if given is not None:
        return given, "given by --systemd-version"
    try:
        version = unitfile.host_systemd_version()
    except unitfile.VersionUnknown as e:
        raise UserError("%s: say which systemd the units are for with --systemd-version N"
                        % e)
    if not unitfile.OLDEST <= version <= unitfile.NEWEST:
        raise UserError("this host runs systemd %d; pyboss writes units for %d to %d: pass "
                        "--systemd-version N" % (version, unitfile.OLDEST, unitfile.NEWEST))
    return version, "this host's, from `systemctl --version`"


def validated_exec_values(exec_options, command):
    """Parse the passed-through options exactly as `pyboss exec` would; its values."""
    try:
        ctx = exec_command.make_context("pyboss exec", list(exec_options) + ["--"]
                                        + list(command))
    except click.ClickException as e:
        raise UserError(e.format_message().replace("\n", " "))
    values = ctx.params
    for key in SECONDS_OPTIONS:
        value = values[key]
        if value is not None and not (math.isfinite(value) and value <= MAX_SECONDS):
            raise UserError("--%s %s: give a number of seconds from 0 to %d"
                            % (key.replace("_", "-"), value, MAX_SECONDS))
    check_readiness_options(values["ready_after"], values["ready_timeout"],
                            values["ready_grace"], values["ready_probe"])
    return values


def checked_specs(listens):
    try:
        specs = [parse_spec(text, "listen%d" % i) for i, text in enumerate(listens)]
    except ListenError as e:
        raise UserError(str(e))
    addresses = [str(spec) for spec in specs]
    duplicate = next((a for i, a in enumerate(addresses) if a in addresses[:i]), None)
    if duplicate:
        raise UserError("address %s given twice: one socket per address" % duplicate)
    for spec in specs:
        if spec.kind != "unix" and spec.port == 0:
            raise UserError("listener %s: a socket unit needs a fixed port, not 0" % spec)
    return specs


def build_units(name, listens, socket_mode, backlog, quiet, passed, command, version=None):
    """{file name: text} for NAME's socket units and service, or UserError."""
    if not _UNIT_NAME.match(name):
        raise UserError("invalid NAME %r: use up to 64 letters, digits, '_', '-', '.', "
                        "not starting with '.'" % name)
    if not command:
        raise UserError("no COMMAND given: put the program to run after '--', e.g. "
                        "pyboss units myapp --listen http=8080 -- /usr/bin/myapp")
    refuse_control_characters([("--listen", text) for text in listens]
                              + [(option, value) for option, value in passed]
                              + [("--socket-mode", socket_mode or "")]
                              + [("COMMAND argument", arg) for arg in command])
    if socket_mode is not None and not re.match(r"^0?[0-7]{3,4}$", socket_mode):
        raise UserError("invalid --socket-mode %r: give an octal mode like 0660"
                        % socket_mode)
    specs = checked_specs(listens)
    version, why_version = target_version(version)
    command = resolved_command(command)
    exec_options = [part for option, value in passed for part in (option, value)]
    if quiet:
        exec_options.append("--quiet")
    values = validated_exec_values(exec_options, command)
    units = unitfile.socket_units(name, specs, socket_mode, backlog)
    pyboss = running_pyboss()
    exec_argv = pyboss + ["exec", "--name", name] + exec_options + ["--"] + command
    reload_argv = pyboss + ["reload", "--wait", "--name", name]
    # Where this pyboss runs from: a path with a newline in it cannot go in a unit either.
    refuse_control_characters([("pyboss's path", arg) for arg in pyboss])
    sandbox, why_sandbox = sandbox_for(where_things_live(pyboss, command))
    units["%s.service" % name] = unitfile.service_unit(
        name, list(units), exec_argv, reload_argv,
        (values["ready_timeout"], values["stop_timeout"]), version, why_version,
        sandbox, why_sandbox)
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
              help="Backlog= of the socket units, 1 to 65535 [default: 4096].")
@click.option("--systemd-version", "systemd_version", metavar="N",
              type=click.IntRange(unitfile.OLDEST, unitfile.NEWEST),
              help="Write the units for systemd N (%d to %d) [default: this host's, from "
                   "'systemctl --version']. 253 and newer get Type=notify-reload, 254 and "
                   "newer FileDescriptorStorePreserve=yes." % (unitfile.OLDEST,
                                                               unitfile.NEWEST))
@click.option("-q", "--quiet", is_flag=True, help="Pass --quiet to 'pyboss exec'.")
@passed_exec_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def units_command(name, listens, output, socket_mode, backlog, systemd_version, quiet,
                  command, **options):
    """Write systemd units that run COMMAND under pyboss with socket activation.

    \b
    pyboss units myapp --listen http=8080 -- /usr/bin/myapp
    pyboss units myapp --listen http=8080 --listen admin=unix:/run/myapp.sock \\
                 --output /etc/systemd/system -- /usr/bin/myapp --workers 4
    pyboss units myapp --systemd-version 252 --listen http=8080 -- /usr/bin/myapp

    Writes NAME.socket (for the first listener name), NAME-LISTENER.socket for
    every further name, and NAME.service running this very pyboss; without
    --output, prints them. Other options are those of 'pyboss exec', checked as
    'pyboss exec' checks them: SECONDS finite, from 0 to 604800; SIGNAL one the
    app can catch.

    The service is written for one systemd version, named in its first lines:
    up to 252, Type=notify with ExecReload='pyboss reload --wait'; from 253,
    Type=notify-reload (systemd's SIGHUP starts the reload, and ExecReload=
    only collects its outcome, so that a failed reload fails 'systemctl
    reload'); from 254, FileDescriptorStorePreserve=yes as well (listeners
    pyboss bound itself survive 'systemctl stop').

    Restarts by an operator never take the sockets down: the service has no
    start limit (StartLimitIntervalSec=0; 'systemctl restart' counts against
    it, and hitting it fails the socket units too) and the sockets no trigger
    limit; pyboss's --crash-limit and back-off and RestartSec= slow a crash
    loop instead.

    The sandbox follows where pyboss, its Python (the venv's interpreter and
    the file it links to) and the app live: PrivateTmp=no and no dynamic user
    for anything under /tmp or /var/tmp, ProtectHome=read-only for anything
    in a home directory, and no dynamic user for anything other users cannot
    reach. Each relaxed setting says why in a comment.

    Values with a control character (a newline, a tab) are refused: a unit
    file cannot carry them. Exit status 2 for bad input, with one line saying
    why; nothing is written then.
    """
    passed = [(option, options[option[2:].replace("-", "_")]) for option in PASSED_OPTIONS
              if options[option[2:].replace("-", "_")] is not None]
    if output is not None and not os.path.isdir(output):
        raise UserError("--output %s is not a directory" % output)
    units = build_units(name, listens, socket_mode, backlog, quiet, passed, command,
                        version=systemd_version)
    if output is None:
        click.echo("\n".join("### %s\n%s" % (unit, text) for unit, text in units.items()),
                   nl=False)
        return 0
    for unit, text in units.items():
        with open(os.path.join(output, unit), "w") as f:
            f.write(text)
    sockets = [unit for unit in units if unit.endswith(".socket")]
    click.echo("wrote %s in %s; then: systemctl daemon-reload && systemctl enable --now %s"
               % (", ".join(units), output, " ".join(sockets) or "%s.service" % name))
    return 0
