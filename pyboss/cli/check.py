"""`pyboss check`: lint systemd units for what pyboss needs, then `systemd-analyze verify`.

Each finding is one line, FILE:LINE: what is wrong and what to write instead.
"""
import os
import re
import shlex
import shutil
import subprocess

import click

from ..errors import UserError
from ..systemd import unitfile
from ..systemd.sandbox import Sandbox, executable_chain

# The defaults of `pyboss exec` and of systemd, for options and keys left out.
PYBOSS_DEFAULTS = {"--ready-timeout": 60.0, "--stop-timeout": 30.0}
SYSTEMD_DEFAULT_TIMEOUT = 90.0
# KillMode values under which losing pyboss loses no request (measured under load with
# pyboss SIGKILLed; mixed makes systemd SIGKILL the app mid-request).
SAFE_KILL_MODES = ("control-group", "process")

_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800, "weeks": 604800,
    "M": 2629800, "month": 2629800, "months": 2629800,
    "y": 31557600, "year": 31557600, "years": 31557600,
}


def parse_unit(text):
    """[(section, key, value, line number)] in file order; continuations joined."""
    entries, section, pending = [], None, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if pending is not None:
            if line.startswith(("#", ";")):
                continue
            key, value, start = pending
            value += " " + line
        elif not line or line.startswith(("#", ";")):
            continue
        elif line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        else:
            key, sep, value = line.partition("=")
            if not sep:
                continue  # systemd-analyze verify reports it
            key, value, start = key.strip(), value.strip(), number
        if value.endswith("\\"):
            pending = (key, value[:-1].rstrip(), start)
            continue
        pending = None
        entries.append((section, key, value, start))
    return entries


def time_span(text):
    """Seconds in a systemd time span ('90', '1min 30s', 'infinity'); None if unparsable."""
    text = text.strip()
    if text == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    if not parts or re.sub(r"[\d.\sA-Za-z]", "", text):
        return None
    total = 0.0
    for number, unit in parts:
        if unit and unit not in _SPAN_UNITS:
            return None
        total += float(number) * _SPAN_UNITS.get(unit, 1)
    return total


def exec_argv(value):
    """The argv of an Exec*= line, its prefixes (@-:+!) dropped; [] if unparsable."""
    try:
        argv = shlex.split(value)
    except ValueError:
        return []
    if argv:
        argv[0] = argv[0].lstrip("@-:+!")
    return argv


def pyboss_invocation(value):
    """(subcommand, {option: value}, flags) if an Exec*= line runs pyboss, else None."""
    argv = exec_argv(value)
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program == "pyboss":
        args = argv[1:]
    elif program.startswith("python") and argv[1:3] == ["-m", "pyboss"]:
        args = argv[3:]
    else:
        return None
    if not args:
        return None
    options, flags, rest = {}, set(), args[1:]
    while rest and rest[0] != "--":
        word = rest.pop(0)
        if not word.startswith("--"):
            continue
        name, sep, inline = word.partition("=")
        if sep:
            options[name] = inline
        elif rest and not rest[0].startswith("-"):
            options[name] = rest.pop(0)
        else:
            flags.add(name)
    return args[0], options, flags


def last(entries, section, key):
    """(value, line) of the key's effective assignment (an empty one resets), or None."""
    found = None
    for sect, k, value, line in entries:
        if sect == section and k == key:
            found = (value, line) if value else None
    return found


def lint_service(path, entries):
    """Findings for pyboss's needs in one .service file."""
    findings = []

    def finding(where, message):
        findings.append("%s:%s: %s" % (path, where[1], message) if where
                        else "%s: %s" % (path, message))

    unit_type = last(entries, "Service", "Type")
    if unit_type is None or unit_type[0] not in ("notify", "notify-reload"):
        finding(unit_type, "Type=%s: pyboss reports readiness with sd_notify; use Type=notify "
                "(or Type=notify-reload on systemd >= 253)" % (unit_type or ("simple",))[0])
    notify_access = last(entries, "Service", "NotifyAccess")
    if notify_access and notify_access[0] not in ("main", "all"):
        finding(notify_access, "NotifyAccess=%s: systemd would ignore pyboss's READY=1; use "
                "NotifyAccess=main" % notify_access[0])
    store = last(entries, "Service", "FileDescriptorStoreMax")
    if store is None or not store[0].isdigit() or int(store[0]) == 0:
        finding(store, "FileDescriptorStoreMax=%s: listeners pyboss binds and its notify "
                "socket would not survive a pyboss crash; use FileDescriptorStoreMax=16"
                % (store or ("0",))[0])
    kill_mode = last(entries, "Service", "KillMode")
    if kill_mode and kill_mode[0] not in SAFE_KILL_MODES:
        finding(kill_mode, "KillMode=%s: when pyboss dies, systemd SIGKILLs the app and "
                "in-flight requests are lost; use KillMode=process (with ExecStopPost=+pyboss "
                "sweep)" % kill_mode[0])
    sweeps = [v for sect, k, v, _ in entries if sect == "Service" and k == "ExecStopPost"
              and "sweep" in v.split()]
    if kill_mode and kill_mode[0] == "process" and not sweeps:
        finding(kill_mode, "KillMode=process without 'ExecStopPost=+pyboss sweep': a stop while "
                "pyboss is dead would leave the app running")

    start = last(entries, "Service", "ExecStart")
    invocation = pyboss_invocation(start[0]) if start else None
    if invocation is None or invocation[0] != "exec":
        finding(start, "ExecStart= does not run 'pyboss exec ... -- COMMAND'")
        return findings
    _, exec_options, _ = invocation
    name = exec_options.get("--name", "pyboss")

    reload_ = last(entries, "Service", "ExecReload")
    reload_call = pyboss_invocation(reload_[0]) if reload_ else None
    notify_reload = unit_type is not None and unit_type[0] == "notify-reload"
    wanted = "ExecReload=PYBOSS reload --wait --name %s" % name
    if notify_reload:
        wanted += " --after-sighup"
    flags = reload_call[2] if reload_call else set()
    if reload_ is None and notify_reload:
        finding(unit_type, "Type=notify-reload without ExecReload=: systemd counts every "
                "READY=1 after RELOADING=1 as a successful reload, so a failed reload would "
                "not fail 'systemctl reload'; add " + wanted)
    elif reload_ is None:
        finding(None, "no ExecReload=: 'systemctl reload' would not reach pyboss; use "
                + wanted)
    elif reload_call is None or reload_call[0] != "reload" or not flags & {"--wait",
                                                                        "--after-sighup"}:
        finding(reload_, "ExecReload= is not 'pyboss reload --wait': 'systemctl reload' "
                "would not wait for the new generation nor report its failure; use " + wanted)
    elif notify_reload and "--after-sighup" not in flags:
        finding(reload_, "ExecReload= starts a second reload after the one systemd's SIGHUP "
                "started (Type=notify-reload); use " + wanted)
    elif reload_call[1].get("--name", "pyboss") != name and "--control" not in reload_call[1]:
        finding(reload_, "ExecReload= talks to pyboss %r but ExecStart= runs %r; use "
                % (reload_call[1].get("--name", "pyboss"), name) + wanted)

    findings += hidden_findings(path, entries, start)

    findings += timeout_findings(path, entries, exec_options)
    return findings


def _boolean(value):
    return value.strip().lower() in ("1", "yes", "y", "true", "t", "on")


def unit_sandbox(entries):
    """The Sandbox of a unit's [Service] settings, systemd's defaults for those not set."""
    def value(key, default):
        found = last(entries, "Service", key)
        return found[0] if found else default

    def paths(key):
        return [word.lstrip("-+").split(":")[0] for sect, k, v, _ in entries
                if sect == "Service" and k == key for word in v.split()]
    private_tmp = value("PrivateTmp", "no").strip().lower()
    protect_home = value("ProtectHome", "no").strip().lower()
    return Sandbox(private_tmp=_boolean(private_tmp) or private_tmp == "disconnected",
                   protect_home="yes" if _boolean(protect_home) else protect_home,
                   dynamic_user=_boolean(value("DynamicUser", "no")),
                   inaccessible=paths("InaccessiblePaths"),
                   temporary=paths("TemporaryFileSystem"))


def hidden_findings(path, entries, start):
    """ExecStart= programs (pyboss's, its interpreter's, the app's) the sandbox hides."""
    argv = exec_argv(start[0])
    programs = argv[:1]
    if "--" in argv:
        programs += argv[argv.index("--") + 1:][:1]     # the app of `pyboss exec -- APP`
    sandbox = unit_sandbox(entries)
    findings = []
    for program in dict.fromkeys(programs):
        if not program.startswith("/") or "$" in program or "%" in program:
            continue    # resolved at run time: nothing to judge here
        for step in executable_chain(program):
            setting = sandbox.hides(step)
            if setting:
                via = "" if step == program else " (through %s)" % step
                findings.append("%s:%d: ExecStart= runs %s%s, which this unit's %s hides from "
                                "the service: it would fail with 203/EXEC; relax that setting "
                                "or install it elsewhere" % (path, start[1], program, via,
                                                             setting))
                break
    return findings


def version_findings(path, entries, version):
    """Directives and values the target systemd does not know."""
    findings = []
    for section, key, value, line in entries:
        since = unitfile.VALUES_SINCE.get((key, value)) or unitfile.DIRECTIVES_SINCE.get(key)
        if since and since > version:
            shown = "%s=%s" % (key, value) if (key, value) in unitfile.VALUES_SINCE else key + "="
            findings.append("%s:%d: %s is unknown to systemd %d (it came with %d), which "
                            "ignores the line; write the units for %d: pyboss units "
                            "--systemd-version %d ..." % (path, line, shown, version, since,
                                                          version, version))
    return findings


def timeout_findings(path, entries, exec_options):
    findings = []
    checks = (("TimeoutStartSec", ("--ready-timeout",), "is not shorter than",
               "systemd would kill pyboss before pyboss reports the slow generation"),
              ("TimeoutStopSec", ("--stop-timeout",), "is not shorter than",
               "systemd would SIGKILL generations pyboss is still stopping"))
    for key, options, relation, consequence in checks:
        setting = last(entries, "Service", key) or last(entries, "Service", "TimeoutSec")
        limit = time_span(setting[0]) if setting else SYSTEMD_DEFAULT_TIMEOUT
        if limit is None:
            continue  # systemd-analyze verify reports an unparsable span
        if limit == 0:
            limit = float("inf")  # 0 disables the timeout
        for option in options:
            value = exec_options.get(option, PYBOSS_DEFAULTS.get(option, 30.0))
            try:
                seconds = float(value)
            except ValueError:
                continue  # a $VARIABLE: known only at start
            if seconds >= limit:
                where = "%s:%d" % (path, setting[1]) if setting else path
                findings.append("%s: pyboss %s %gs %s %s=%gs: %s" % (
                    where, option, seconds, relation, key, limit, consequence))
    return findings


def verify(paths):
    """Every line `systemd-analyze verify` prints (its exit status says nothing useful)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise UserError("systemd-analyze not found: install systemd, or pass --no-verify")
    result = subprocess.run([analyze, "verify", *paths], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120)
    return ["systemd-analyze verify: " + line.strip()
            for line in result.stdout.splitlines() if line.strip()]


def target_version(given):
    if given is not None:
        return given
    try:
        return unitfile.host_systemd_version()
    except unitfile.VersionUnknown as e:
        raise UserError("%s: say which systemd the units are for with --systemd-version N"
                        % e)


def check_units(paths, run_verify=True, version=None):
    """All findings for the unit files, in order; UserError for a file not there."""
    texts = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                texts[path] = f.read()
        except OSError as e:
            raise UserError("cannot read %s: %s" % (path, e.strerror or e))
    version = target_version(version)
    findings = []
    for path, text in texts.items():
        entries = parse_unit(text)
        if path.endswith(".service"):
            findings += lint_service(path, entries)
        findings += version_findings(path, entries, version)
    if run_verify:
        findings += verify([os.path.abspath(p) for p in paths])
    return findings


@click.command("check")
@click.argument("unit_files", nargs=-1, required=True, metavar="UNIT_FILE...")
@click.option("--no-verify", is_flag=True, help="Skip 'systemd-analyze verify'.")
@click.option("--systemd-version", "systemd_version", metavar="N",
              type=click.IntRange(unitfile.OLDEST, unitfile.NEWEST),
              help="The systemd the units are for (%d to %d) [default: this host's, from "
                   "'systemctl --version']." % (unitfile.OLDEST, unitfile.NEWEST))
def check_command(unit_files, no_verify, systemd_version):
    """Check unit files for what pyboss needs and run 'systemd-analyze verify'.

    Accepts both shapes 'pyboss units' writes: Type=notify with
    ExecReload='pyboss reload --wait' (any systemd), and Type=notify-reload with
    ExecReload='pyboss reload --wait --after-sighup' (systemd 253 and newer).
    Checks NotifyAccess=, FileDescriptorStoreMax=, KillMode=, and pyboss's
    timeouts against TimeoutStartSec=/TimeoutStopSec=.

    Reports directives (and values, like Type=notify-reload) the target systemd
    does not know, and an ExecStart= program that the unit's own sandbox hides
    from the service (PrivateTmp= over /tmp, ProtectHome= over /home and /root,
    DynamicUser= and a directory closed to other users, InaccessiblePaths=,
    TemporaryFileSystem=), following the program's links and its #! interpreter
    (a venv's python is a link to the interpreter it was made from).

    Anything 'systemd-analyze verify' prints is a finding too. One line per
    finding. Exit status: 0 clean, 1 findings, 2 bad input.
    """
    findings = check_units(list(unit_files), run_verify=not no_verify,
                           version=systemd_version)
    for line in findings:
        click.echo(line)
    return 1 if findings else 0
