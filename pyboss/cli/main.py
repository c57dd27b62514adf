"""The pyboss command line: exec, reload, scale, stop, status."""
import json
import os
import sys

import click

from .. import __version__
from ..options import Seconds
from ..supervisor.control import DEFAULT_TIMEOUT, ControlError, control_path, request
from ..supervisor.status_text import format_status
from .exec import checked_name, exec_command
from ..supervisor.workers import MAX_WORKERS
from .check import check_command
from .units import units_command
from ..dropins.start_server import start_server_command


def control_options(func):
    func = click.option("--timeout", type=Seconds(maximum=86400), default=DEFAULT_TIMEOUT,
                        show_default=True, metavar="SECONDS",
                        help="How long pyboss may take to answer. Work it accepted (reload "
                             "--wait, stop) may then take as long as pyboss announces "
                             "(its ready or stop timeout) plus 10 s. Without an answer in "
                             "time: 'pyboss did not answer within N s', exit 1.")(func)
    func = click.option("--control", metavar="PATH",
                        help="Control socket of the pyboss to talk to (overrides --name).")(func)
    return click.option("--name", metavar="NAME",
                        help="Name the pyboss was started with (default: pyboss). Its control "
                             "socket is NAME.sock in $RUNTIME_DIRECTORY, else "
                             "$XDG_RUNTIME_DIR/pyboss, else /run/pyboss.")(func)


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


def ask(name, control, timeout, message):
    """The supervisor's answer; no answer (none running, an impostor, a timeout, an exit
    before answering) is one line on stderr and exit 1."""
    path = control_path(checked_name(name), control, client=True)
    try:
        return request(path, message, timeout)
    except ControlError as e:
        click.echo("pyboss: %s" % e, err=True)
        sys.exit(1)


@cli.command("reload")
@control_options
@click.option("--wait", is_flag=True, help="Return only when the reload is over: exit 0 "
              "once the new generation is serving, 1 with the reason if it failed.")
def reload_command(name, control, timeout, wait):
    """Start a new generation; drain the old one once the new one is ready.

    A failed reload's reason is followed by the last lines (up to 5) the failed
    generation wrote, each after '  | ', when pyboss has them: under systemd
    from the generation's journal stream, elsewhere with 'exec --capture-output'.

    Without --wait, returns as soon as pyboss has the request. Requests made while
    a reload is under way coalesce into one follow-up reload. Use
    'ExecReload=pyboss reload --wait' under systemd so that 'systemctl reload'
    is synchronous and reports failure.
    """
    reply = ask(name, control, timeout, {"command": "reload", "wait": wait})
    if not reply.get("ok"):
        click.echo("pyboss reload: failed: %s" % reply.get("error"), err=True)
        for line in reply.get("last_lines") or []:
            click.echo("  | %s" % line, err=True)      # what the failed generation wrote last
        return 1
    if wait:
        click.echo("pyboss: reloaded: generation %d (pid %d) serving"
                   % (reply["generation"], reply["pid"]))
    return 0


@cli.command("stop")
@control_options
def stop_command(name, control, timeout):
    """Stop every generation gracefully; return once pyboss has exited."""
    reply = ask(name, control, timeout, {"command": "stop"})
    if not reply.get("ok"):
        click.echo("pyboss stop: pyboss exited with status %s: %s"
                   % (reply.get("exit_code"), reply.get("error")), err=True)
        return 1
    return 0


@cli.command("scale")
@control_options
@click.argument("workers", type=click.IntRange(1, MAX_WORKERS))
def scale_command(name, control, timeout, workers):
    """Run WORKERS processes per generation from now on.

    New workers start in the free slots, each checked for readiness as at a
    reload; surplus workers get the drain signal. Returns once every worker is
    ready: exit 0, or 1 with the reason (a new worker that fails is respawned
    with backoff; refused while a generation is starting). SIGTTIN and SIGTTOU
    to pyboss add and remove one worker without waiting. The number lasts until
    pyboss stops; put --workers in the unit to keep it.
    """
    reply = ask(name, control, timeout, {"command": "scale", "workers": workers})
    if not reply.get("ok"):
        click.echo("pyboss scale: failed: %s" % reply.get("error"), err=True)
        return 1
    click.echo("pyboss: %d workers serving (pids %s)"
               % (reply["workers"], ", ".join(map(str, reply["pids"]))))
    return 0


@cli.command("status")
@control_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.option("--check", is_flag=True, help="A probe: exit 0 only while a generation is "
              "serving (also during a reload, when the old one serves), 1 otherwise (starting, "
              "respawning after a crash, stopping, or no pyboss answering). For a Kubernetes "
              "exec readiness or liveness probe, or a container HEALTHCHECK.")
def status_command(name, control, timeout, as_json, check):
    """Show generations, listeners, the last reloads and the last failures.

    Also pyboss's version and uptime, each generation's uptime, and the last lines
    a failed generation wrote. --json prints every field; the README's
    "pyboss status --json" section describes them.
    """
    status = ask(name, control, timeout, {"command": "status"})
    if check:
        serving = [g for g in status.get("generations", []) if g.get("state") == "serving"]
        if serving and status.get("state") in ("serving", "reloading"):
            click.echo("serving: generation %d (pid %d)" % (serving[-1]["number"], serving[-1]["pid"]))
            return 0
        click.echo("not serving: pyboss is %s" % status.get("state"), err=True)
        return 1
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return 0
    click.echo(format_status(status))
    return 0


cli.add_command(exec_command)
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
