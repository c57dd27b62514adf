"""`pyboss start-server`: Server::Starter's start_server 0.35, on pyboss's supervisor.

Same options, defaults and environment variables; children get the same
SERVER_STARTER_PORT and SERVER_STARTER_GENERATION. Installed as a link named
start_server, pyboss behaves as this command (see pyboss.cli.main.main).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import click

from .. import __version__, values
from ..errors import UserError
from ..options import SECONDS, SignalType, check_executable
from ..listeners import ListenError
from .starter_files import PidFile, StarterError, restart_server, stop_server
from .starter_ports import StarterListeners, parse_path, parse_port

COMPATIBLE_WITH = "0.35"


@dataclass
class StarterOptions:
    interval: float
    status_file: str = None
    env: dict = field(default_factory=dict)   # set for the workers as start_server sets them


def _absolute(path):
    return None if path is None else os.path.abspath(path)


def _say(text):
    click.echo(text, err=True)


@click.command("start-server", context_settings={"allow_interspersed_args": False,
                                                  "help_option_names": ["-h", "--help"]})
@click.option("--port", "ports", multiple=True, metavar="[HOST:]PORT[=FD]",
              help="TCP port to listen on. PORT (IPv4, every address), HOST:PORT, "
                   "[V6]:PORT; 'u' before the port number for UDP (u53, 127.0.0.1:u53); =FD to "
                   "put the socket at that fd number in the server program.")
@click.option("--path", "paths", multiple=True, metavar="PATH",
              help="Unix socket to listen on. A stale socket file is replaced; "
                   "the file is removed at exit.")
@click.option("--dir", "workdir", metavar="DIR", help="Working directory of the server program.")
@click.option("--interval", type=SECONDS, default=1, show_default=True, metavar="SECONDS",
              help="A new worker counts as started once alive this long; one that dies "
                   "sooner is started again, at most once per interval.")
@click.option("--wait-ready", is_flag=True,
              help="(pyboss) Count a worker as started when it sends READY=1 to NOTIFY_SOCKET "
                   "(sd_notify) instead of after --interval.")
@click.option("--ready-timeout", type=SECONDS, default=60, show_default=True, metavar="SECONDS",
              help="(pyboss) With --wait-ready: a worker not ready by then failed to start.")
@click.option("--signal-on-hup", type=SignalType(), default="TERM", show_default=True,
              help="Sent to the old workers once the new one started after a SIGHUP.")
@click.option("--signal-on-term", type=SignalType(), default="TERM", show_default=True,
              help="Sent to every worker on SIGTERM.")
@click.option("--kill-old-delay", type=SECONDS, is_flag=False, flag_value=5.0, metavar="SECONDS",
              help="Wait this long before signalling the old workers (alone: 5). Default: "
                   "$KILL_OLD_DELAY, else 5 with auto-restart, else 0.")
@click.option("--pid-file", metavar="FILE", help="Write start_server's pid here; refuse to "
              "start while another start_server holds it.")
@click.option("--status-file", metavar="FILE",
              help="Keep 'GENERATION:PID' lines of the running workers here.")
@click.option("--envdir", metavar="DIR", help="Environment for the workers, one variable per "
              "file (daemontools style), read again on every restart. Default: $ENVDIR.")
@click.option("--log-file", metavar="FILE|'| COMMAND'",
              help="Append stdout and stderr to FILE, or pipe them to '| COMMAND'.")
@click.option("--daemonize", is_flag=True, help="Detach (fork, setsid, fork); needs --log-file.")
@click.option("--enable-auto-restart", is_flag=True,
              help="Restart the workers every --auto-restart-interval. Default: "
                   "$ENABLE_AUTO_RESTART.")
@click.option("--auto-restart-interval", type=SECONDS, metavar="SECONDS",
              help="Default: $AUTO_RESTART_INTERVAL, else 360.")
@click.option("--backlog", type=click.IntRange(1, 65535), help="listen() backlog [default: SOMAXCONN].")
@click.option("--control", metavar="PATH",
              help="(pyboss) Also serve a control socket here, for 'pyboss status/reload/stop "
                   "--control PATH'.")
@click.option("--restart", is_flag=True, help="Restart the running start_server of --pid-file "
              "and return once only the new generation runs (needs --status-file).")
@click.option("--stop", is_flag=True, help="Stop the running start_server of --pid-file; "
              "return once its workers are gone and its files removed.")
@click.option("-q", "--quiet", is_flag=True, help="(pyboss) Log only warnings and errors.")
@click.version_option(__version__, prog_name="pyboss start-server",
                      message="%(prog)s %(version)s (start_server " + COMPATIBLE_WITH
                      + " compatible)")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def start_server_command(ports, paths, workdir, interval, wait_ready, ready_timeout,
                         signal_on_hup, signal_on_term, kill_old_delay, pid_file, status_file,
                         envdir, log_file, daemonize, enable_auto_restart,
                         auto_restart_interval, backlog, control, restart, stop, quiet, command):
    """Run a server program as start_server (Server::Starter) does.

    \b
    pyboss start-server --port 8080 --pid-file app.pid --status-file app.status -- myapp
    pyboss start-server --restart --pid-file app.pid --status-file app.status
    pyboss start-server --stop --pid-file app.pid

    The program finds its sockets in SERVER_STARTER_PORT ("HOST:PORT=FD;PATH=FD")
    and its generation in SERVER_STARTER_GENERATION. SIGHUP starts a new generation
    and, once it started, sends --signal-on-hup to the old ones; SIGTERM sends
    --signal-on-term to all and exits when they are gone; a worker that dies is
    started again. Exit status: 0 after a stop or a successful --restart/--stop,
    1 when --restart/--stop fail, 2 for bad input. Every SECONDS (also
    $KILL_OLD_DELAY and $AUTO_RESTART_INTERVAL) is a finite number from 0 to
    604800; every signal one the workers can catch (not KILL or STOP).
    """
    try:
        if restart or stop:
            return control_running(restart, stop, pid_file, status_file)
        if daemonize and not log_file:
            raise UserError("--daemonize needs --log-file: a daemon has no terminal to "
                                    "write to")
        if not command:
            raise UserError("server program not specified: put it after '--', e.g. "
                                    "start_server --port 8080 -- myapp")
        for variable in ("KILL_OLD_DELAY", "AUTO_RESTART_INTERVAL"):
            if os.environ.get(variable):
                try:
                    values.seconds(os.environ[variable])
                except ValueError as e:
                    raise UserError("invalid $%s: %s" % (variable, e))
        env = {}
        for name, value in (("ENVDIR", envdir),
                            ("ENABLE_AUTO_RESTART", "1" if enable_auto_restart else None),
                            ("KILL_OLD_DELAY", kill_old_delay),
                            ("AUTO_RESTART_INTERVAL", auto_restart_interval)):
            if value is not None:
                env[name] = value if isinstance(value, str) else "%g" % value
        if env.get("ENVDIR"):
            env["ENVDIR"] = os.path.abspath(env["ENVDIR"])
        elif os.environ.get("ENVDIR"):
            env["ENVDIR"] = os.path.abspath(os.environ["ENVDIR"])
        options = StarterOptions(interval, _absolute(status_file), env)
        return serve(list(command), ports, paths, workdir, wait_ready, ready_timeout,
                     signal_on_hup, signal_on_term, _absolute(pid_file), log_file, daemonize,
                     backlog or socket.SOMAXCONN, _absolute(control), quiet, options)
    except StarterError as e:
        if e.exit_code == 2:
            raise UserError(str(e))
        _say("start_server: %s" % e)
        return e.exit_code


def control_running(restart, stop, pid_file, status_file):
    if restart and stop:
        raise UserError("--restart and --stop exclude each other")
    if not pid_file:
        raise UserError("--%s needs --pid-file%s" % (
            "restart" if restart else "stop", " and --status-file" if restart else ""))
    if restart:
        if not status_file:
            raise UserError("--restart needs --pid-file and --status-file")
        restart_server(pid_file, status_file, _say)
    else:
        stop_server(pid_file, _say)
    return 0


def open_log(log_file, daemonize):
    """(fd to write the log to, the '| COMMAND' process or None)."""
    text = log_file.lstrip()
    if text.startswith("|"):
        # Its own session: a ^C on the terminal must not kill the log before start_server.
        # A daemon's log command must not hold the caller's stdout open either.
        quiet = subprocess.DEVNULL if daemonize else None
        logger = subprocess.Popen(text[1:].strip(), shell=True, stdin=subprocess.PIPE,
                                  stdout=quiet, stderr=quiet, start_new_session=True)
        return logger.stdin.fileno(), logger
    try:
        return os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644), None
    except OSError as e:
        raise StarterError("cannot open --log-file %s: %s" % (log_file, e.strerror), 2)


def daemonize_now():
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def open_runtime(control):
    """The control socket and pyboss's NOTIFY_SOCKET, plus the directories pyboss made for
    them (remove_runtime removes them)."""
    from ..supervisor.control import ControlServer, open_notify_socket, runtime_dir
    from ..supervisor.rundir import ControlError, check_default_dir, make_dirs
    private = None
    if control is None:
        base = runtime_dir()
        try:
            created = make_dirs(base)
            if not created:
                check_default_dir(base)
        except ControlError:
            base, created = None, []      # not ours to trust: a fresh private one in $TMPDIR
        private = created + [tempfile.mkdtemp(prefix="start_server-", dir=base)]
        control = os.path.join(private[-1], "control.sock")
    try:
        server = ControlServer(control)
        try:
            notify = open_notify_socket(os.path.dirname(control))
        except BaseException:
            server.close()
            raise
    except BaseException:
        remove_runtime(private)
        raise
    return server, notify, private


def remove_runtime(private):
    from ..supervisor.rundir import remove_dirs
    if private:
        shutil.rmtree(private[-1], ignore_errors=True)
        remove_dirs(private[:-1])


def serve(command, ports, paths, workdir, wait_ready, ready_timeout, signal_on_hup,
          signal_on_term, pid_file, log_file, daemonize, backlog, control, quiet, options):
    from ..supervisor.control import ControlError
    from .starter_supervisor import NEVER, StarterLog, StarterSupervisor
    from ..supervisor.settings import Settings
    try:
        specs = [parse_port(p) for p in ports] + [parse_path(p) for p in paths]
    except ListenError as e:
        raise UserError(str(e))
    if workdir is not None and not os.path.isdir(workdir):
        raise UserError("--dir %s is not a directory" % workdir)
    for option, path in (("--status-file", options.status_file), ("--pid-file", pid_file)):
        if path and not os.access(os.path.dirname(path), os.W_OK | os.X_OK):
            raise UserError("%s %s: cannot write in %s" % (option, path, os.path.dirname(path)))
    here = os.getcwd()
    try:
        if workdir is not None:
            os.chdir(workdir)             # the program is looked up where it will run
        check_executable(command[0])
    except UserError as e:
        raise UserError(str(e))
    finally:
        os.chdir(here)
    pid = PidFile(pid_file) if pid_file else None
    log_fd = logger = private = None
    redirected = False
    held = []                             # closed here on an error, else by the supervisor
    try:
        piped = bool(log_file) and log_file.lstrip().startswith("|")
        if log_file and not (piped and daemonize):
            log_fd, logger = open_log(log_file, daemonize)
        try:
            listeners = StarterListeners.open_specs(specs, backlog)
        except ListenError as e:
            raise StarterError(str(e), 2)
        held.append(lambda: listeners.close(final=True))
        try:
            server, notify, private = open_runtime(control)
        except ControlError as e:
            raise StarterError(str(e), 2)
        held += [server.close, notify.close]
        _say("start_server (pid:%d) starting now..." % os.getpid())
        if daemonize:
            daemonize_now()
            if piped:             # started by the daemon, so that the daemon can wait for it
                log_fd, logger = open_log(log_file, daemonize)
        if log_fd is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            redirected = True
            if logger is None:
                os.close(log_fd)
            else:
                logger.stdin.close()      # fds 1 and 2 keep the pipe open
        if pid:
            pid.write()
        if workdir is not None:
            os.chdir(workdir)             # every path above was made absolute
        ready_after = None if wait_ready else options.interval
        settings = Settings(command, "start_server", ready_after=ready_after,
                            ready_timeout=ready_timeout if wait_ready else options.interval + 60,
                            drain_signal=signal_on_hup, drain_timeout=NEVER,
                            stop_signal=signal_on_term, stop_timeout=NEVER,
                            max_draining=sys.maxsize, crash_limit=sys.maxsize,
                            ready_grace=0)   # start_server's --interval is its settle period
        supervisor = StarterSupervisor(settings, listeners, server, notify,
                                       StarterLog("start_server", quiet), options)
        held = []
        code = supervisor.run()
        if supervisor.fatal and code == 2:
            raise UserError(supervisor.fatal)
        return code
    finally:
        for close in reversed(held):
            close()
        remove_runtime(private)
        if logger is not None:
            finish_logger(logger, redirected)
        if pid:
            # Last: --stop returns once everything is done, not after the interpreter's
            # own teardown (tens of ms with nothing left to wait for).
            pid.remove()
            pid.release()


def finish_logger(logger, redirected):
    """Give the '| COMMAND' its EOF and the time to write out what it holds."""
    if redirected:
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
    else:
        logger.stdin.close()
    try:
        logger.wait(10)
    except (subprocess.TimeoutExpired, ChildProcessError):
        pass
