"""The client commands without click: `pyboss status`, `reload`, `stop`, `scale` and
`pyboss start-server --restart/--stop`.

`systemctl reload` runs `pyboss reload --wait` every time, so these commands must start
about as fast as the interpreter itself; importing click and every command's definition
would cost several times that. `lean_command()`, asked first by the console script
(pyboss.cli:main), recognises the plain, valid invocations (only the options below,
each spelt out in full); for anything else (--help, --version, a mistake, an option it
does not know) it returns None and click parses the command line, giving the same
answer it always did. The click commands in main.py call the same functions
below, so both paths print the same lines and exit with the same status.
"""
import json
import sys

from ..supervisor.control import DEFAULT_TIMEOUT, ControlError, control_path, request, valid_name
from ..supervisor.rundir import check_socket_path
from ..supervisor.status_text import format_status
from ..supervisor.workers import MAX_WORKERS
from ..values import seconds

MAX_TIMEOUT = 86400       # --timeout's range, as the click option has it

# Per command: option -> (keyword argument, whether it takes a value).
_TARGET = {"--name": ("name", True), "--control": ("control", True),
           "--timeout": ("timeout", True)}
CLIENT_OPTIONS = {
    "reload": dict(_TARGET, **{"--wait": ("wait", False), "--after-sighup": ("after_sighup", False)}),
    "stop": _TARGET,
    "scale": _TARGET,
    "upgrade": _TARGET,
    "status": dict(_TARGET, **{"--json": ("as_json", False), "--check": ("check", False)}),
}
STARTER_OPTIONS = {"--restart": ("restart", False), "--stop": ("stop", False),
                   "--pid-file": ("pid_file", True), "--status-file": ("status_file", True)}


def say(text, err=False):
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def parse_options(args, known):
    """{keyword: value} for args made only of known options, else None."""
    parsed = {}
    args = list(args)
    while args:
        arg = args.pop(0)
        option, equals, value = arg.partition("=")
        if option not in known:
            return None
        keyword, takes_value = known[option]
        if not takes_value:
            if equals:
                return None
            value = True
        elif not equals:
            if not args or args[0].startswith("-"):
                return None       # click says what is missing
            value = args.pop(0)
        parsed[keyword] = value
    return parsed


def workers_argument(args):
    """(the options, WORKERS) of `pyboss scale`'s args; WORKERS None unless it is one number
    in range, placed anywhere among the options."""
    options, numbers = [], []
    args = list(args)
    while args:
        arg = args.pop(0)
        known = CLIENT_OPTIONS["scale"].get(arg)
        if known is not None and known[1] and args:
            options += [arg, args.pop(0)]       # an option and its value
        elif arg.startswith("-"):
            options.append(arg)
        else:
            numbers.append(arg)
    if len(numbers) != 1 or not (numbers[0].isascii() and numbers[0].isdigit()) \
            or not 1 <= int(numbers[0]) <= MAX_WORKERS:
        return options, None
    return options, int(numbers[0])


def lean_command(argv, start_server_link=False):
    """A function running the command argv asks for, or None when click should parse it."""
    if start_server_link:
        command, args = "start-server", argv
    elif argv:
        command, args = argv[0], argv[1:]
    else:
        return None
    if command == "start-server":
        options = parse_options(args, STARTER_OPTIONS)
        prog = "start_server" if start_server_link else "pyboss start-server"
        if options is None or options.get("restart") == options.get("stop"):
            return None
        if not options.get("pid_file") or (options.get("restart")
                                           and not options.get("status_file")):
            return None
        return lambda: control_starter(prog, **options)
    if command not in CLIENT_OPTIONS:
        return None
    if command == "scale":
        args, workers = workers_argument(args)
        if workers is None:
            return None       # click says what is wrong with it
    options = parse_options(args, CLIENT_OPTIONS[command])
    if options is None or not valid_name(options.get("name")):
        return None
    if command == "scale":
        options["workers"] = workers
    if "timeout" in options:
        try:
            options["timeout"] = seconds(options["timeout"], MAX_TIMEOUT)
        except ValueError:
            return None       # click says what is wrong with it
    return lambda: CLIENT_COMMANDS[command](**options)


def ask(name, control, message, timeout=DEFAULT_TIMEOUT):
    """The supervisor's answer; no answer is one line on stderr and exit 1."""
    path = control_path(name, control, client=True)
    try:
        # No pyboss can be there: bad input, not an absent supervisor.
        check_socket_path(path, "the control socket", "choose a shorter --control PATH")
    except ControlError as e:
        say("pyboss: %s" % e, err=True)
        sys.exit(2)
    try:
        return request(path, message, timeout)
    except ControlError as e:
        say("pyboss: %s" % e, err=True)
        sys.exit(1)


def run_reload(name=None, control=None, wait=False, timeout=DEFAULT_TIMEOUT, after_sighup=False):
    wait = wait or after_sighup
    message = {"command": "reload", "wait": wait}
    if after_sighup:     # report the reload systemd's SIGHUP started (Type=notify-reload)
        message["after_sighup"] = True
    reply = ask(name, control, message, timeout)
    if not reply.get("ok"):
        say("pyboss reload: failed: %s" % reply.get("error"), err=True)
        for line in reply.get("last_lines") or []:
            say("  | %s" % line, err=True)      # what the failed generation wrote last
        return 1
    if wait:
        say("pyboss: reloaded: generation %d (pid %d) serving"
            % (reply["generation"], reply["pid"]))
    return 0


def run_stop(name=None, control=None, timeout=DEFAULT_TIMEOUT):
    reply = ask(name, control, {"command": "stop"}, timeout)
    if not reply.get("ok"):
        say("pyboss stop: pyboss exited with status %s: %s"
            % (reply.get("exit_code"), reply.get("error")), err=True)
        return 1
    return 0


def run_scale(workers, name=None, control=None, timeout=DEFAULT_TIMEOUT):
    reply = ask(name, control, {"command": "scale", "workers": workers}, timeout)
    if not reply.get("ok"):
        say("pyboss scale: failed: %s" % reply.get("error"), err=True)
        return 1
    say("pyboss: %d workers serving (pids %s)"
        % (reply["workers"], ", ".join(map(str, reply["pids"]))))
    return 0


def run_status(name=None, control=None, as_json=False, check=False, timeout=DEFAULT_TIMEOUT):
    reply = ask(name, control, {"command": "status"}, timeout)
    if check:       # a probe: serving or not, in one line
        serving = [g for g in reply.get("generations", []) if g.get("state") == "serving"]
        if serving and reply.get("state") in ("serving", "reloading"):
            say("serving: generation %d (pid %d)" % (serving[-1]["number"], serving[-1]["pid"]))
            return 0
        say("not serving: pyboss is %s" % reply.get("state"), err=True)
        return 1
    say(json.dumps(reply, indent=2) if as_json else format_status(reply))
    return 0


def run_upgrade(name=None, control=None, timeout=DEFAULT_TIMEOUT):
    reply = ask(name, control, {"command": "upgrade"}, timeout)
    if not reply.get("ok"):
        say("pyboss upgrade: failed: %s" % reply.get("error"), err=True)
        return 1
    say("pyboss: upgraded in place from %s to %s (pid %d)"
        % (reply["previous"], reply["version"], reply["pid"]))
    return 0


CLIENT_COMMANDS = {"reload": run_reload, "stop": run_stop, "status": run_status,
                   "upgrade": run_upgrade, "scale": run_scale}


def control_starter(prog, restart=False, stop=False, pid_file=None, status_file=None):
    """start_server --restart / --stop; StarterError as start-server reports it."""
    from ..dropins.starter_files import StarterError, restart_server, stop_server
    tell = lambda text: say(text, err=True)  # noqa: E731
    try:
        if restart:
            restart_server(pid_file, status_file, tell)
        else:
            stop_server(pid_file, tell)
    except StarterError as e:
        if e.exit_code == 2:
            say("%s: %s" % (prog, str(e).replace("\n", " ")), err=True)
        else:
            say("start_server: %s" % e, err=True)
        return e.exit_code
    return 0
