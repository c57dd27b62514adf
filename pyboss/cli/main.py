"""The pyboss command line: exec, reload, stop, status."""
import contextlib
import json
import os
import re
import sys
import tempfile
import time

import click

from .. import __version__, sd
from ..errors import UserError
from ..options import SECONDS, SignalType
from ..supervisor.control import ControlError, ControlServer, control_path, request
from ..listeners import ListenError, ListenerSet, parse_spec
from ..systemd.fdstore import FdStore
from ..supervisor.log import EventLog
from ..supervisor.supervise import hand_off
from ..supervisor.core import Settings
from .check import check_command
from .units import units_command
from ..dropins.start_server import start_server_command
from ..systemd.upstream import Upstream

_NAME = re.compile(r"^[A-Za-z0-9_@\-][A-Za-z0-9_.@\-]{0,63}$")


def control_options(func):
    func = click.option("--control", metavar="PATH",
                        help="Control socket of the pyboss to talk to (overrides --name).")(func)
    return click.option("--name", metavar="NAME",
                        help="Name the pyboss was started with (default: pyboss). Its control "
                             "socket is NAME.sock in $RUNTIME_DIRECTORY, else "
                             "$XDG_RUNTIME_DIR/pyboss, else /run/pyboss.")(func)


def checked_name(name):
    if name is not None and not _NAME.match(name):
        raise UserError("invalid --name %r: use up to 64 letters, digits, '_', '-', '.', '@', "
                        "not starting with '.'" % name)
    return name or "pyboss"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyboss")
def cli():
    """Zero-downtime process supervisor.

    pyboss holds your server's listening sockets and runs the server as a child
    (a "generation") on them. On reload it starts a new generation on the very same
    sockets, waits until it reports ready, then drains the old one: no connection is
    refused or reset. It speaks systemd's socket-activation and sd_notify protocols
    in both directions, so it fits under systemd and in front of apps that already
    support socket activation.
    """


@cli.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("--name", metavar="NAME", help="Name of this supervisor; picks its control "
              "socket and labels its log lines. Default: pyboss.")
@click.option("--control", metavar="PATH", help="Control socket path (default: NAME.sock in "
              "$RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR/pyboss, else /run/pyboss).")
@click.option("--listen", "listens", metavar="[NAME=]SPEC", multiple=True,
              help="Listen here and pass the socket to every generation; repeatable. SPEC: "
                   "PORT, :PORT, HOST:PORT, [V6]:PORT, tcp://HOST:PORT, udp://HOST:PORT, "
                   "unix:/PATH, unix:@ABSTRACT. Names default to listen0, listen1, ... "
                   "Sockets passed to pyboss itself (LISTEN_FDS) are used as they are; one "
                   "whose name matches NAME is used instead of binding again.")
@click.option("--socket-mode", metavar="MODE", help="Octal file mode for unix sockets "
              "pyboss creates, e.g. 0660.")
@click.option("--backlog", type=click.IntRange(1, 65535), default=None,
              help="listen() backlog [default: SOMAXCONN].")
@click.option("--ready-after", type=SECONDS, metavar="SECONDS",
              help="Consider a generation ready once it has been alive this long, for apps "
                   "that never send READY=1. Default: wait for READY=1 on NOTIFY_SOCKET.")
@click.option("--ready-timeout", type=SECONDS, default=60, show_default=True,
              metavar="SECONDS", help="A generation not ready by then is killed; a reload "
              "fails and the old generation keeps serving.")
@click.option("--drain-signal", type=SignalType(), default="TERM", show_default=True,
              help="Sent to the old generation once the new one is ready.")
@click.option("--drain-timeout", type=SECONDS, default=30, show_default=True,
              metavar="SECONDS", help="SIGKILL an old generation still running this long "
              "after the drain signal.")
@click.option("--stop-signal", type=SignalType(), default="TERM", show_default=True,
              help="Sent to every generation when pyboss stops.")
@click.option("--stop-timeout", type=SECONDS, default=30, show_default=True,
              metavar="SECONDS", help="SIGKILL what is still running this long after the "
              "stop signal. Keep it below systemd's TimeoutStopSec=.")
@click.option("--max-draining", type=click.IntRange(1), default=4, show_default=True,
              help="Old generations allowed to drain at once; the oldest is killed beyond.")
@click.option("--crash-limit", type=click.IntRange(1), default=5, show_default=True,
              help="Give up (exit 1) after this many generations in a row exited without "
                   "ever becoming ready; systemd's Restart= can take over from there.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_command(name, control, listens, socket_mode, backlog, ready_after, ready_timeout,
                 drain_signal, drain_timeout, stop_signal, stop_timeout, max_draining,
                 crash_limit, quiet, command):
    """Run COMMAND as supervised generations on shared listening sockets.

    \b
    pyboss exec --listen 127.0.0.1:8080 -- myapp --its-own-options
    pyboss exec --listen http=:80 --listen admin=unix:/run/myapp.sock -- myapp

    Every generation gets the listeners on fds 3, 4, ... with LISTEN_FDS,
    LISTEN_FDNAMES and LISTEN_PID set as systemd would, a NOTIFY_SOCKET of
    pyboss's own on which it reports READY=1, and PYBOSS_GENERATION.

    SIGHUP or 'pyboss reload' starts a new generation; the old one gets the drain
    signal once the new one is ready. SIGTERM, SIGINT or 'pyboss stop' stop every
    generation gracefully, then pyboss exits. Exit status: 0 after a stop, 1 when
    the app never became ready CRASH_LIMIT times in a row, 2 for bad input or a
    COMMAND that cannot be executed.
    """
    if not command:
        raise UserError("no COMMAND given: put the program to run after '--', e.g. "
                        "pyboss exec --listen :8080 -- myapp")
    name = checked_name(name)
    check_executable(command[0])
    if ready_after is not None and ready_after >= ready_timeout:
        raise UserError("--ready-after %g must be shorter than --ready-timeout %g"
                        % (ready_after, ready_timeout))
    mode = None
    if socket_mode is not None:
        if not re.match(r"^0?[0-7]{3,4}$", socket_mode):
            raise UserError("invalid --socket-mode %r: give an octal mode like 0660" % socket_mode)
        mode = int(socket_mode, 8)
    specs = []
    try:
        for i, text in enumerate(listens):
            specs.append(parse_spec(text, "listen%d" % i))
    except ListenError as e:
        raise UserError(str(e))
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError("listener name %r given twice: names must be unique" % duplicate)
    settings = Settings(list(command), name, ready_after, ready_timeout, drain_signal,
                        drain_timeout, stop_signal, stop_timeout, max_draining, crash_limit)
    path = control_path(name, control)
    # A copy: the supervisor this process becomes reads NOTIFY_SOCKET from the environment.
    log, upstream = EventLog(name, quiet), Upstream(dict(os.environ))
    store = FdStore(upstream, log)      # what an earlier pyboss of this unit left there
    with contextlib.ExitStack() as cleanup:
        try:
            inherited = store.split(sd.listen_fds(unset=True))
            inherited += store.reusable(specs, inherited)
            listeners = ListenerSet.open(specs, inherited, backlog or 4096, mode)
            cleanup.callback(listeners.close, True)
            server = ControlServer(path)
            cleanup.callback(server.close)
            notify = store.notify_receiver(sd.NotifyReceiver) or \
                open_notify_socket(os.path.dirname(path))
            cleanup.callback(notify.close)
        except (ListenError, ControlError) as e:
            raise UserError(str(e))
        store.adopt(listeners, specs)
        store.drain(notify)
        store.sync(listeners, notify)
        cleanup.pop_all()   # from here the supervisor owns and removes them
    return hand_off(settings, listeners, server, notify, quiet)


def check_executable(program):
    """Refuse a COMMAND that cannot run before binding anything (exec reports it again
    on every later spawn, when a new build may have broken it)."""
    if "/" in program:
        candidates = [program]
    else:
        candidates = [os.path.join(d or ".", program)
                      for d in os.environ.get("PATH", os.defpath).split(os.pathsep)]
    found = [c for c in candidates if os.path.isfile(c)]
    if not found:
        raise UserError("cannot execute %s: No such file or directory" % program)
    if not any(os.access(c, os.X_OK) for c in found):
        raise UserError("cannot execute %s: Permission denied" % program)


def open_notify_socket(directory):
    """pyboss's own NOTIFY_SOCKET, in a private 0700 directory beside the control socket."""
    private = tempfile.mkdtemp(prefix=".pyboss-", dir=directory)
    try:
        return sd.NotifyReceiver(os.path.join(private, "notify"), private_dir=private)
    except OSError as e:
        os.rmdir(private)
        raise ControlError("cannot create the notify socket in %s: %s"
                           % (private, e.strerror or e))


def ask(name, control, message):
    path = control_path(checked_name(name), control, client=True)
    try:
        return request(path, message)
    except ControlError as e:
        click.echo("pyboss: %s" % e, err=True)
        sys.exit(1)


@cli.command("reload")
@control_options
@click.option("--wait", is_flag=True, help="Return only when the reload is over: exit 0 "
              "once the new generation is serving, 1 with the reason if it failed.")
def reload_command(name, control, wait):
    """Start a new generation; drain the old one once the new one is ready.

    Without --wait, returns as soon as pyboss has the request. Requests made while
    a reload is under way coalesce into one follow-up reload. Use
    'ExecReload=pyboss reload --wait' under systemd so that 'systemctl reload'
    is synchronous and reports failure.
    """
    reply = ask(name, control, {"command": "reload", "wait": wait})
    if reply is None:
        click.echo("pyboss reload: failed: pyboss exited during the reload", err=True)
        return 1
    if not reply.get("ok"):
        click.echo("pyboss reload: failed: %s" % reply.get("error"), err=True)
        return 1
    if wait:
        click.echo("pyboss: reloaded: generation %d (pid %d) serving"
                   % (reply["generation"], reply["pid"]))
    return 0


@cli.command("stop")
@control_options
def stop_command(name, control):
    """Stop every generation gracefully; return once pyboss has exited."""
    reply = ask(name, control, {"command": "stop"})
    if reply is not None and not reply.get("ok"):
        click.echo("pyboss stop: pyboss exited with status %s: %s"
                   % (reply.get("exit_code"), reply.get("error")), err=True)
        return 1
    return 0


@cli.command("status")
@control_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status_command(name, control, as_json):
    """Show generations, listeners and the last reloads."""
    status = ask(name, control, {"command": "status"})
    if status is None:
        click.echo("pyboss: pyboss exited before answering", err=True)
        return 1
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return 0
    click.echo("pyboss %r (pid %d): %s" % (status["name"], status["pid"], status["state"]))
    click.echo("  command: %s" % " ".join(status["command"]))
    click.echo("  listeners:")
    for l in status["listeners"]:
        click.echo("    %-12s %-6s %-28s %s" % (l["name"], l["kind"], l["address"], l["origin"]))
    click.echo("  generations:")
    for g in status["generations"]:
        ready = "ready after %.3fs" % g["ready_after"] if g["ready_after"] is not None else "not ready"
        click.echo("    #%-4d pid %-8d %-9s started %s  %s%s" % (
            g["number"], g["pid"], g["state"], time.strftime("%H:%M:%S", time.localtime(g["started"])),
            ready, "  (%s)" % g["status"] if g.get("status") else ""))
    if status["reloads"]:
        click.echo("  last reloads:")
    for r in status["reloads"]:
        click.echo("    #%-4d %-7s %.3fs at %s%s" % (
            r["generation"], r["outcome"], r["duration"],
            time.strftime("%H:%M:%S", time.localtime(r["requested"])),
            ": " + r["reason"] if r["reason"] else ""))
    return 0


cli.add_command(units_command)
cli.add_command(check_command)
cli.add_command(start_server_command)


def main(argv=None):
    """Entry point: click's errors become one line and exit status 2.

    Run through a link named start_server, pyboss is `pyboss start-server`.
    """
    command, prog_name = cli, "pyboss"
    if os.path.basename(sys.argv[0]) == "start_server":
        command, prog_name = start_server_command, "start_server"
    try:
        code = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        code = 130
    except click.ClickException as e:
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "pyboss"
        hint = " (see '%s --help')" % where if isinstance(e, click.UsageError) else ""
        message = e.format_message().replace("\n", " ")
        click.echo("%s: %s%s" % (where, message, hint), err=True)
        code = e.exit_code
    sys.exit(code or 0)
