"""The pyboss command line: exec, reload, scale, stop, status."""
import os
import sys

import click

from .. import __version__
from ..options import Seconds
from ..supervisor.control import DEFAULT_TIMEOUT
from .client import run_reload, run_scale, run_status, run_stop, run_upgrade
from .exec import checked_name, exec_command
from ..supervisor.workers import MAX_WORKERS
from .check import check_command
from .units import units_command
from .sweep import sweep_command
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
                             "$XDG_RUNTIME_DIR/pyboss, else /run/pyboss for root, else "
                             "/tmp/pyboss-UID.")(func)


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


@cli.command("reload")
@control_options
@click.option("--wait", is_flag=True, help="Return only when the reload is over: exit 0 "
              "once the new generation is serving, 1 with the reason if it failed.")
@click.option("--after-sighup", is_flag=True, help="Start no reload: wait for the one the "
              "newest SIGHUP started and report it as --wait does (for ExecReload= with "
              "Type=notify-reload, which runs right after systemd's SIGHUP). Starts one if "
              "that outcome was already reported, or no SIGHUP came.")
def reload_command(name, control, timeout, wait, after_sighup):
    """Start a new generation; drain the old one once the new one is ready.

    A failed reload's reason is followed by the last lines (up to 5) the failed
    generation wrote, each after '  | ', when pyboss has them: under systemd
    from the generation's journal stream, elsewhere with 'exec --capture-output'.

    Without --wait, returns as soon as pyboss has the request. Requests made while
    a reload is under way coalesce into one follow-up reload. Under systemd, use
    'ExecReload=pyboss reload --wait' with Type=notify (systemd 252 and older), or
    'ExecReload=pyboss reload --wait --after-sighup' with Type=notify-reload (253
    and newer), so that 'systemctl reload' is synchronous and fails when the
    reload fails: systemd itself counts any READY=1 after RELOADING=1 as success.
    """
    return run_reload(checked_name(name), control, wait, timeout, after_sighup)


@cli.command("stop")
@control_options
def stop_command(name, control, timeout):
    """Stop every generation gracefully; return once pyboss has exited."""
    return run_stop(checked_name(name), control, timeout)


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
    pyboss stops (a pyboss that adopts the workers after a crash keeps it); put
    --workers in the unit to keep it.
    """
    return run_scale(workers, checked_name(name), control, timeout)


@cli.command("upgrade")
@control_options
def upgrade_command(name, control, timeout):
    """Replace the running supervisor's code with the pyboss installed now; the app runs on.

    The supervisor exec()s the pyboss now installed where it was loaded from (after a
    new package or a 'pip install -U') in its own process, keeping its pid (systemd's
    MAINPID), every listener, its notify socket, every generation (serving and
    draining, each of its workers, with their deadlines) and the reload history. No
    worker is restarted and no connection is refused. A reload under way, or a scale
    waiting for its new workers, is finished first.

    Returns once the new code supervises: exit 0, and 'pyboss status --json' reports
    the new version. If the installed pyboss cannot take over (it is tried in a
    separate process first), the running one keeps supervising and this exits 1
    with the reason. SIGUSR2 to pyboss does the same, without an answer.
    """
    return run_upgrade(checked_name(name), control, timeout)


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
    return run_status(checked_name(name), control, as_json, check, timeout)


cli.add_command(exec_command)
cli.add_command(units_command)
cli.add_command(check_command)
cli.add_command(sweep_command)
cli.add_command(start_server_command)


# click >= 8.2 raises this for a bare `pyboss`; older ones print the help and exit 0.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv=None):
    """click's entry point (pyboss.cli.main sends the plain client commands elsewhere):
    click's errors become one line and exit status 2.

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
    except _NO_ARGS_IS_HELP as e:
        e.show()        # a bare `pyboss`: the whole help, as written, on stderr
        code = e.exit_code
    except click.ClickException as e:
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "pyboss"
        hint = " (see '%s --help')" % where if isinstance(e, click.UsageError) else ""
        message = e.format_message().replace("\n", " ")
        click.echo("%s: %s%s" % (where, message, hint), err=True)
        code = e.exit_code
    sys.exit(code or 0)
