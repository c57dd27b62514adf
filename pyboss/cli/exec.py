"""`pyboss exec`: parse and check everything, open every socket, then hand off to the lean
supervisor image."""
import contextlib
import math
import os
import re

import click

from .. import sd
from ..errors import UserError
from ..options import SECONDS, SignalType, check_executable
from ..supervisor.control import (ControlError, ControlServer, control_path, open_notify_socket,
                                  valid_name)
from ..listeners import ListenError, ListenerSet, bind, parse_spec
from ..systemd.fdstore import FdStore
from ..supervisor.log import EventLog
from ..supervisor.readiness import check_probe_paths
from ..supervisor import adopt as adoption
from ..supervisor.state import StateFile, StateMemfd
from ..supervisor.supervise import hand_off
from ..supervisor.settings import DEFAULT_READY_GRACE, Settings
from ..supervisor.watch import Inotify
from ..supervisor.workers import MAX_WORKERS
from ..systemd.upstream import Upstream

def checked_name(name):
    if not valid_name(name):
        raise UserError("invalid --name %r: use up to 64 letters, digits, '_', '-', '.', '@', "
                        "not starting with '.'" % name)
    return name or "pyboss"


def check_readiness_options(ready_after, ready_timeout, ready_grace, ready_probe):
    """The readiness options together, as `exec` and `units` both accept them."""
    if ready_after is not None and ready_after >= ready_timeout:
        raise UserError("--ready-after %g must be shorter than --ready-timeout %g"
                        % (ready_after, ready_timeout))
    if not math.isfinite(ready_grace) or ready_grace > 3600:
        raise UserError("invalid --ready-grace %g: give seconds from 0 to 3600" % ready_grace)
    if ready_probe is None:
        return
    if ready_after is not None:
        raise UserError("--ready-after and --ready-probe exclude each other: the probe "
                        "already tells when the app serves; drop --ready-after")
    if not re.match(r"^/[\x21-\x7e]*$", ready_probe):
        raise UserError("invalid --ready-probe %r: give an HTTP path starting with '/', "
                        "without spaces, e.g. --ready-probe /healthz" % ready_probe)


def checked_watch_paths(paths, debounce):
    """--reload-on-change paths made absolute (the supervisor may change directory)."""
    if not 0.01 <= debounce <= 60:
        raise UserError("invalid --reload-debounce %g: give 0.01 to 60 seconds" % debounce)
    if any(not p.strip() or "\0" in p for p in paths):
        raise UserError("empty --reload-on-change PATH: name a file or a directory to watch")
    if paths:
        try:
            Inotify().close()
        except OSError as e:
            raise UserError("--reload-on-change needs inotify, which this system refuses (%s): "
                            "raise fs.inotify.max_user_instances" % e.strerror)
    return [os.path.abspath(p) for p in paths]


def checked_metrics_address(text):
    if text is None:
        return None
    try:
        spec = parse_spec(text, "metrics")
    except ListenError:
        spec = None
    if spec is None or spec.kind != "tcp" or "=" in text or "://" in text:
        raise UserError("invalid --metrics %r: give HOST:PORT, e.g. 127.0.0.1:9100" % text)
    return spec


def checked_textfile(path):
    if path is None:
        return None
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if os.path.isdir(path) or not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UserError("cannot write --metrics-textfile %s: give a file in an existing, "
                        "writable directory" % path)
    return path


@click.command("exec", context_settings={"allow_interspersed_args": False})
@click.option("--name", metavar="NAME", help="Name of this supervisor; picks its control "
              "socket and labels its log lines. Default: pyboss.")
@click.option("--control", metavar="PATH", help="Control socket path (default: NAME.sock in "
              "$RUNTIME_DIRECTORY, else $XDG_RUNTIME_DIR/pyboss, else /run/pyboss for "
              "root, else /tmp/pyboss-UID).")
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
@click.option("--ready-probe", metavar="PATH", help="Ready also means: answers HTTP GET PATH "
              "with 2xx or 3xx on a unix socket of its own, passed after the listeners and "
              "named pyboss-probe in LISTEN_FDNAMES (the old generation cannot answer it). "
              "Retried every 0.1s until --ready-timeout. An app that speaks sd_notify must "
              "send READY=1 as well. For servers that serve every inherited socket.")
@click.option("--ready-grace", type=SECONDS, default=DEFAULT_READY_GRACE, show_default=True,
              metavar="SECONDS", help="Settle period: a generation that reported ready must "
              "stay alive this long before the old one drains and the reload succeeds; dying "
              "inside it fails the reload (or counts toward --crash-limit). Catches builds "
              "that send READY=1 and then die, like gunicorn's master before its workers "
              "load a broken app. Each reload takes this much longer; 0 turns it off.")
@click.option("--drain-signal", type=SignalType(), default="TERM", show_default=True,
              help="Sent to the old generation once the new one is ready.")
@click.option("--drain-timeout", type=SECONDS, default=30, show_default=True,
              metavar="SECONDS", help="SIGKILL an old generation still running this long "
              "after the drain signal.")
@click.option("--stop-signal", type=SignalType(), default="TERM", show_default=True,
              help="Sent to every generation when pyboss stops.")
@click.option("--stop-timeout", type=SECONDS, default=30, show_default=True,
              metavar="SECONDS", help="SIGKILL what is still running this long after the "
              "stop signal. Keep it below systemd's TimeoutStopSec=, or a container's grace "
              "period (docker/podman stop -t: 10 s; Kubernetes terminationGracePeriodSeconds: "
              "30 s), after which the runtime SIGKILLs everything.")
@click.option("--max-draining", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Old generations allowed to drain at once; the oldest is killed beyond.")
@click.option("--crash-limit", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Give up (exit 1) after this many generations in a row exited without "
                   "ever becoming ready, or died inside their settle period; systemd's "
                   "Restart= can take over from there.")
@click.option("--capture-output", is_flag=True,
              help="Relay every generation's stdout and stderr through pyboss, each line "
                   "prefixed with '[gen N] ', and keep the last lines so that a failed reload "
                   "says why. Costs a copy of every byte through pyboss, and if pyboss dies "
                   "the app's next write fails (EPIPE or SIGPIPE). Under systemd it is not "
                   "needed: each generation gets a journal stream of its own. Default: the "
                   "generations write where pyboss writes.")
@click.option("--metrics", "metrics_address", metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (e.g. "
                   "127.0.0.1:9100), from pyboss's own event loop.")
@click.option("--metrics-textfile", metavar="PATH",
              help="Keep the same metrics in PATH (e.g. /var/lib/node_exporter/myapp.prom "
                   "for node_exporter's textfile collector), replaced atomically after "
                   "every event.")
@click.option("--reload-on-change", "watched", metavar="PATH", multiple=True,
              help="Reload when PATH changes; repeatable. PATH is a file or a directory "
                   "(its entries), and need not exist yet (its creation counts). Files "
                   "replaced by rename (editors, certificate tools) and Kubernetes "
                   "ConfigMap/Secret volumes (a swapped ..data symlink) are followed. A "
                   "failed reload is logged and counted in 'pyboss status'; the old "
                   "generation keeps serving and the next change tries again.")
@click.option("--reload-debounce", type=float, default=0.2, show_default=True,
              metavar="SECONDS", help="Reload once changes have been quiet this long "
              "(0.01 to 60); a burst of writes is one reload.")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help="Processes per generation, all on the same listeners; each gets "
                   "PYBOSS_WORKER=0..N-1 and its own LISTEN_PID. Each worker's READY=1 counts "
                   "for that worker; a generation is ready once all are. A worker that dies "
                   "is respawned alone, with backoff, and --crash-limit counts per worker "
                   "slot. 'pyboss scale N', SIGTTIN and SIGTTOU change the number at run time.")
@click.option("--reload-strategy", type=click.Choice(["all", "rolling"]), default="all",
              show_default=True, help="all: start every worker of the new generation, drain "
              "the old ones once all new ones are ready (needs room for twice the workers). "
              "rolling: replace --max-surge workers at a time, each old one drained once its "
              "replacement is ready; a new worker that fails stops the roll, the workers "
              "already replaced stay and the rest of the old ones serve on.")
@click.option("--max-surge", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help="With --reload-strategy rolling: new workers starting at once.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_command(name, control, listens, socket_mode, backlog, ready_after, ready_timeout,
                 ready_probe, ready_grace, drain_signal, drain_timeout, stop_signal,
                 stop_timeout, max_draining, crash_limit, capture_output, metrics_address,
                 metrics_textfile, watched, reload_debounce, workers, reload_strategy, max_surge,
                 quiet, command):
    """Run COMMAND as supervised generations on shared listening sockets.

    \b
    pyboss exec --listen 127.0.0.1:8080 -- myapp --its-own-options
    pyboss exec --listen http=:80 --listen admin=unix:/run/myapp.sock -- myapp

    Every generation gets the listeners on fds 3, 4, ... with LISTEN_FDS,
    LISTEN_FDNAMES and LISTEN_PID set as systemd would, a NOTIFY_SOCKET of
    pyboss's own on which it reports READY=1, PYBOSS_GENERATION and PYBOSS_WORKER
    (0..N-1 with --workers N).

    SIGHUP or 'pyboss reload' starts a new generation; the old one gets the drain
    signal once the new one is ready (READY=1, or --ready-after, and --ready-probe
    if given) and then stayed alive for --ready-grace. SIGTERM, SIGINT or 'pyboss stop' stop every
    generation gracefully, then pyboss exits. Exit status: 0 after a stop, 1 when
    the app never became ready CRASH_LIMIT times in a row, 2 for bad input or a
    COMMAND that cannot be executed, 70 when pyboss itself failed (its generations
    are then left serving, never killed).

    pyboss is a child subreaper: processes an app daemonizes stay under it, are
    signalled with their generation, and 'pyboss stop' returns only when none is
    left. As a container's entrypoint (PID 1) it reaps every orphan in the
    container; SIGTERM from 'docker stop' or the kubelet drains within
    --stop-timeout, SIGHUP ('docker kill -s HUP') reloads. With --reload-on-change
    a changed configuration or certificate reloads the app by itself.

    With --workers N every generation is N processes; SIGTTIN adds one worker,
    SIGTTOU drains one, 'pyboss scale N' sets the number and waits until the
    new workers are ready. --reload-strategy rolling replaces them a few at a
    time; 'pyboss reload --wait' then fails with "k of N replaced; failed
    because ..." if a new worker fails half-way.

    Every SECONDS is a finite number from 0 to 604800 (a week; --reload-debounce
    0.01 to 60); every SIGNAL a name (TERM, SIGTERM, term) or number of a signal
    the app can catch (not KILL or STOP). pyboss raises its own soft fd limit to
    the hard one; generations get the soft limit pyboss was started with.

    \b
    A failed reload says why: 'pyboss reload --wait', 'pyboss status', the
    STATUS= pyboss sends to systemd and its log carry the last lines (up to 5,
    up to 1 KiB) the failed generation wrote. Under systemd (JOURNAL_STREAM set)
    every generation opens a journal stream of its own, so journald attributes
    its lines to its own pid (journalctl _PID=N) and pyboss reads them back from
    there; elsewhere only --capture-output gives pyboss the lines.
    """
    if not command:
        raise UserError("no COMMAND given: put the program to run after '--', e.g. "
                        "pyboss exec --listen :8080 -- myapp")
    name = checked_name(name)
    check_executable(command[0])
    check_readiness_options(ready_after, ready_timeout, ready_grace, ready_probe)
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
                        drain_timeout, stop_signal, stop_timeout, max_draining, crash_limit,
                        capture_output=capture_output,
                        metrics_textfile=checked_textfile(metrics_textfile),
                        reload_on_change=checked_watch_paths(watched, reload_debounce),
                        reload_debounce=reload_debounce, ready_grace=ready_grace,
                        ready_probe=ready_probe, workers=workers,
                        reload_strategy=reload_strategy, max_surge=max_surge)
    metrics_spec = checked_metrics_address(metrics_address)
    path = control_path(name, control)
    # A copy: the supervisor this process becomes reads NOTIFY_SOCKET from the environment.
    log, upstream = EventLog(name, quiet), Upstream(dict(os.environ))
    store = FdStore(upstream, log)      # what an earlier pyboss of this unit left there
    # Under systemd the state lives in the fd store, which Restart= hands back.
    under_systemd = upstream.active and bool(os.environ.get("INVOCATION_ID"))
    with contextlib.ExitStack() as cleanup:
        try:
            inherited = store.split(sd.listen_fds(unset=True))
            inherited += store.reusable(specs, inherited)
            if under_systemd:
                state_fd = store.state_fd()
                state = StateMemfd(state_fd) if state_fd is not None else StateMemfd.create()
                previous = state.read() if state_fd is not None else None
            else:
                state = StateFile.beside(path)
                previous = orphaned(state.read(), command, specs, inherited)
                if previous is not None:
                    inherited += adoption.take_listeners(
                        previous, adoption.live_generations(previous), specs)
            listeners = ListenerSet.open(specs, inherited, backlog or 4096, mode)
            cleanup.callback(listeners.close, True)
            server = ControlServer(path)
            cleanup.callback(server.close)
            notify = store.notify_receiver(sd.NotifyReceiver) or \
                (previous and not under_systemd and adoption.notify_receiver(previous)) or \
                open_notify_socket(os.path.dirname(path))
            cleanup.callback(notify.close)
            if ready_probe is not None:
                check_probe_paths(notify, path, workers)
            metrics = None
            if metrics_spec is not None:
                try:
                    metrics = bind(metrics_spec).sock
                except ListenError as e:
                    raise ListenError("--metrics: %s" % e)
                cleanup.callback(metrics.close)
        except (ListenError, ControlError, sd.ListenFdsError, adoption.AdoptError) as e:
            raise UserError(str(e))
        store.adopt(listeners, specs)
        adopting = previous is not None and bool(adoption.live_generations(previous))
        if adopting:
            adoption.mark_taken(listeners, previous)
        else:
            store.drain(notify)     # with generations to adopt, their messages count
        store.sync(listeners, notify, state.fd if under_systemd else None)
        cleanup.pop_all()   # from here the supervisor owns and removes them
    return hand_off(settings, listeners, server, notify, quiet, state,
                    previous if adopting else None, after_crash=adopting, sweep=under_systemd,
                    metrics=metrics)


def orphaned(previous, command, specs, inherited):
    """The state of a dead pyboss whose generations still run, if this one may adopt
    them; UserError if they run another command or on other listeners."""
    if previous is None or adoption.supervisor_alive(previous):
        return None     # nothing saved, or its pyboss runs: the control socket says so
    live = adoption.live_generations(previous)
    if not live:
        return None
    names = [spec.name for spec in specs] + [name for _, name in inherited]
    different = adoption.difference(previous, command, names)
    if different:
        raise UserError("%s; %s: run 'pyboss exec' with that same command and listeners "
                        "to adopt them, or stop them first (kill %s)"
                        % (adoption.what_runs(previous, live), different,
                           " ".join(map(str, adoption.live_pids(live)))))
    return previous
