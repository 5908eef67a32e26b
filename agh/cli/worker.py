"""``agh worker -- CMD ARGS…``: a leased worker in one line.

Parses the options, checks the command can be found, starts aghd if none
runs (the autostart of every agh command, ``agh.cli.connect``) and hands
over to the engine, ``agh.runner``, which owns the claim loop and the
commands. Autostart happens only here, at start-up: when aghd goes away
later (stopped, restarted by systemd) the worker waits for it rather than
start a second one beside a supervisor's, and with AGH_AUTOSTART=0 it
waits from the start (a worker unit may well start before aghd's).
Owns: parsing and the exit status. Must not: claim, run or finish anything
itself.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import TYPE_CHECKING

import click

from agh.cli.connect import autostart_enabled, connect, socket_path
from agh.cli.exits import EXIT_CONFLICT, EXIT_FAILED, EXIT_NO_WORK, EXIT_OK, fail
from agh.cli.options import workspace_ref
from agh.errors import DaemonUnreachable

if TYPE_CHECKING:
    from agh.runner import Outcome

# With --once, how the run ended decides the exit status.
_ONCE_EXIT: dict[str, int] = {
    "completed": EXIT_OK,
    "failed": EXIT_FAILED,
    "lost": EXIT_CONFLICT,
    "released": EXIT_OK,  # stopped by a signal: a clean stop
    "stopped": EXIT_OK,
}


@click.command(
    "worker",
    # Everything from CMD on is CMD's: `agh worker python agent.py -v`.
    context_settings={"allow_interspersed_args": False},
)
@click.option("--channel", metavar="NAME", help="Only runs on this network channel.")
@click.option("--workspace", metavar="W", help="Only runs of this workspace (path, id or key).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    metavar="N",
    help="Run up to N commands at once (N slots, each claiming only while free).",
)
@click.option(
    "--lease",
    type=click.FloatRange(1, 86_400),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Lease length, renewed every third of it while the command runs; "
    "a worker that dies lets its runs go after this long.",
)
@click.option(
    "--name",
    "agent_name",
    metavar="NAME",
    help="The agent sessions' name. [default: worker-<hostname>-<pid>]",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="With --once: how long to wait for a run before exiting 6. Otherwise the "
    "length of each long poll (1 to 60).",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="After SIGTERM to a command (stop, lost lease), how long before SIGKILL.",
)
@click.option("--once", is_flag=True, help="Handle at most one run, then exit with its status.")
@click.option("-q", "--quiet", is_flag=True, help="Do not echo the commands' output on stderr.")
@click.argument(
    "command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]..."
)
@click.pass_context
def worker(
    ctx: click.Context,
    channel: str | None,
    workspace: str | None,
    concurrency: int,
    lease: float,
    agent_name: str | None,
    wait: float,
    grace: float,
    once: bool,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Run a command for every claimed run: a leased worker in one line.

    Claims runs as an agent session named --name (one session per slot),
    runs CMD for each, and finishes the run from how CMD ends. While CMD
    runs, the worker renews the lease, sends CMD's stdout and stderr to the
    run's log as they come (`agh logs RUN -f` follows them; they are also
    echoed on stderr after the task's identifier, unless --quiet) and
    hands CMD the input sent to the task with `agh send`.

    CMD gets the run's input as JSON on stdin (then end of file), and in
    its environment AGH_TASK_ID, AGH_TASK_IDENTIFIER, AGH_RUN_ID,
    AGH_CLAIM_TOKEN, AGH_SESSION_ID, AGH_ATTEMPT, AGH_INPUT (the input as
    JSON, when under 64 KiB), AGH_SOCKET and AGH_MESSAGES. AGH_MESSAGES is
    a private file (mode 0600, removed after the run) to which each
    message sent with `agh send` is appended within a second, as one JSON
    line ({"id", "kind", "message", ...}): read it with
    `tail -f "$AGH_MESSAGES"`. `agh agent log`, `agh agent ask` and
    `agh agent messages` work inside CMD as they are: the variables name
    the run, its token, the session and the daemon.

    Exit 0 completes the run; its result is the last non-empty line of
    stdout when that line is JSON, else {"exit_code": 0}. Any other exit
    fails it with "exit status N: <the last 20 lines of stderr>" (or
    "killed by signal S: ..."), and the task's max_attempts decide whether
    it is retried. If the lease is lost (the task was canceled, or the
    lease ran out) CMD is stopped and the run left alone. CMD runs in its
    own process group: what it leaves running ends with it.

    SIGTERM or Ctrl-C: stop claiming, send SIGTERM to the commands'
    process groups, SIGKILL what still runs after --grace, give their runs
    back to the queue (released, "worker stopped") and exit 0; a second
    signal kills at once. While aghd is unreachable the worker says so
    once, retries with a backoff of up to 5 s and says when it is back. It
    starts aghd at start-up like every agh command (never with
    AGH_AUTOSTART=0), but not later: a daemon stopped on purpose stays
    stopped. --once exits 0 when its run completed, 1 when it failed, 4
    when its lease was lost, 6 when nothing was claimable within --wait.

    \b
    Example:
      agh worker --channel docs -- ./write-notes.sh
      agh worker --concurrency 4 -- python agent.py
      agh worker --once --wait 0 -- sh -c 'jq -r .path | xargs wc -l'
    """
    from agh.runner import Worker, WorkerOptions

    if once and concurrency > 1:
        raise click.UsageError("--once handles one run: leave out --concurrency", ctx)
    program = command[0]
    found = shutil.which(program)
    if found is None:
        raise click.UsageError(
            f"cannot run {program!r}: no such executable"
            + ("" if os.sep in program else " on PATH")
            + "; give the command after --, e.g. `agh worker -- ./script.sh`",
            ctx,
        )
    path = socket_path(ctx)
    if autostart_enabled():
        try:
            with connect(ctx):
                pass
        except DaemonUnreachable as exc:
            if exc.details.get("cause") in ("impostor", "permission"):
                raise
            # The engine waits for it and says so.
            click.echo(f"agh worker: {exc.message}", err=True)
    options = WorkerOptions(
        socket_path=path,
        command=command,
        agent_name=agent_name or f"worker-{socket.gethostname()}-{os.getpid()}",
        channel=channel,
        workspace=workspace_ref(workspace),
        concurrency=concurrency,
        lease_s=lease,
        wait_s=wait,
        grace_s=grace,
        once=once,
        quiet=quiet,
    )
    outcome: Outcome = Worker(options).run()
    if outcome == "no_work":
        fail("no work available", EXIT_NO_WORK)
    if once:
        ctx.exit(_ONCE_EXIT[outcome])
