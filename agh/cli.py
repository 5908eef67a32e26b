"""The ``agh`` command line: argument parsing, output and exit codes over
``agh.client.Client``.

This module owns how results look (a readable table or one ``--json``
document on stdout, diagnostics on stderr) and what each failure exits
with. It never talks to the socket itself and must stay light: ``agh --help``
may import click, msgspec and platformdirs, never aghd, anyio, watchfiles,
uvloop or yaml. The client is imported inside the command that connects.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import msgspec

from agh import __version__
from agh.errors import AghError, DaemonUnreachable

if TYPE_CHECKING:
    from agh import protocol as p
    from agh.client import Client

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE

# Kept here rather than read from agh.protocol so `--help` builds without it;
# tests pin them against the protocol's Literal types.
PRIORITIES = ("low", "medium", "high", "urgent")
TASK_STATUSES = (
    "draft",
    "pending",
    "blocked",
    "ready",
    "in_progress",
    "completed",
    "failed",
    "canceled",
)

CLOSED_STATUSES = ("completed", "failed", "canceled")
ACTIVE_RUN_STATUSES = ("claimed", "starting", "running")

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- pure helpers -------------------------------------------------------------


class JsonParam(click.ParamType):
    """A JSON document given on the command line; invalid JSON is a usage error."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            self.fail(f"not valid JSON ({exc}): {value!r}", param, ctx)


JSON = JsonParam()


def seconds_to_ms(seconds: float | None) -> int | None:
    """Seconds from an option to the protocol's integer milliseconds."""
    return None if seconds is None else round(seconds * 1000)


def workspace_ref(value: str | None) -> str | None:
    """A workspace filter: a path-like value (``.``, ``../x``, ``a/b``, ``~``)
    becomes absolute, as the daemon needs; an id, key or name passes as is."""
    if value is None:
        return None
    if value.startswith((".", "~")) or "/" in value:
        return os.path.abspath(os.path.expanduser(value))
    return value


def actor_text(actor: p.Actor | None) -> str:
    if actor is None:
        return "-"
    return f"{actor.kind}:{actor.ref}" if actor.ref else actor.kind


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, with an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def format_fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``Label:  value`` lines, values aligned; ``None`` shows as ``-``."""
    width = max(len(label) for label, _ in pairs) + 1
    lines = []
    for label, value in pairs:
        text = "-" if value is None or value == "" else str(value)
        lines.append(f"{label + ':':<{width}}  {text}")
    return "\n".join(lines)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# -- output and errors ------------------------------------------------------------


def emit_json(value: Any) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(json_text(value))


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Report on stderr and exit with ``code`` (raises click's ``Exit``)."""
    click.echo(f"agh: {message}", err=True)
    raise click.exceptions.Exit(code)


def report_error(exc: AghError) -> int:
    """Print a daemon error (and its hint) to stderr; return the exit code."""
    if isinstance(exc, DaemonUnreachable):
        # Its message already names the socket, the cause (not running, no
        # answer in time, permission denied) and what to do next.
        click.echo(f"agh: {exc.message}", err=True)
        return EXIT_UNAVAILABLE
    click.echo(f"agh: {exc.message}", err=True)
    hint = exc.details.get("hint")
    # Some messages already end with their hint (workflow YAML errors do).
    if hint and str(hint) not in exc.message:
        click.echo(f"hint: {hint}", err=True)
    return EXIT_FAILED


class AghGroup(click.Group):
    """Turns agh errors raised by any command into the documented exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AghError as exc:
            raise click.exceptions.Exit(report_error(exc)) from None
        except BrokenPipeError:
            # `agh ls | head`: the reader left; not an error worth a traceback.
            # Point stdout at /dev/null so the interpreter's final flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_OK) from None


@contextmanager
def connect(ctx: click.Context) -> Iterator[Client]:
    """A client on the selected socket, announced to the daemon as the CLI.

    Raises DaemonUnreachable when no daemon answers; ``AghGroup`` turns it
    (and every other ``AghError``) into the documented exit code."""
    from agh.client import Client  # light import: only for commands that connect
    from agh.paths import default_socket_path

    path = ctx.find_root().params.get("socket_path") or default_socket_path()
    with Client(path, origin_kind="cli") as client:
        yield client


def json_option(fn: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the result as one JSON document instead of text.",
    )(fn)


def token_option(fn: F) -> F:
    return click.option(
        "--token",
        "token",
        required=True,
        envvar="AGH_CLAIM_TOKEN",
        show_envvar=True,
        metavar="TOKEN",
        help="The claim token printed by `agh claim`.",
    )(fn)


# -- the group ----------------------------------------------------------------------


@click.group(cls=AghGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--socket",
    "socket_path",
    envvar="AGH_SOCKET",
    show_envvar=True,
    metavar="PATH",
    help="aghd's Unix socket. [default: <user runtime dir>/agh/agh.sock]",
)
@click.version_option(__version__, "--version", prog_name="agh", message="%(prog)s %(version)s")
def main(socket_path: str | None) -> None:
    """agh: talk to aghd, the per-user task hub for local AI agents.

    Create and inspect tasks, and claim and finish their runs as an agent.
    Every command that prints data takes --json (one JSON document on
    stdout; JSON lines for the streams of watch, events and logs
    --follow). Data goes to stdout, diagnostics and errors to stderr.

    \b
    Exit status:
      0   success
      1   the operation failed: aghd returned an error (printed as
          "agh: <message>" with a hint), `agh claim` found no work,
          a cancel/rm confirmation was declined, or the task `agh watch`
          watched failed or was canceled
      2   usage error: unknown option, bad value, invalid JSON in
          --input/--result, or cancel/rm without --yes when stdin is
          not a terminal
      69  aghd cannot be reached on the socket (EX_UNAVAILABLE): it is
          not running, did not answer in time, or the socket is not
          yours; the message says which and what to do
      130 interrupted (Ctrl-C) while watch, events or logs --follow
          waited for events

    \b
    Example:
      agh add "Write the release notes" --priority high
      agh ls
      agh claim --wait 30
    """


# -- tasks ------------------------------------------------------------------------


def task_options(fn: F) -> F:
    """--priority, --channel and --approval, shared by the commands that
    create tasks."""
    fn = click.option(
        "--approval",
        type=click.Choice(["none", "manual"]),
        help="manual: its run waits until someone runs `agh approve ID`. [default: none]",
    )(fn)
    fn = click.option("--channel", metavar="NAME", help="Network channel agents can claim by.")(fn)
    return click.option(
        "--priority", type=click.Choice(PRIORITIES), help="Priority. [default: medium]"
    )(fn)


def new_task_fields(
    *,
    start: bool,
    draft: bool,
    priority: str | None,
    channel: str | None,
    approval: str | None,
    workspace: str | None,
    max_attempts: int | None,
    input_: Any,
    description: str | None,
) -> dict[str, Any]:
    """tasks.create params from the options of ``add`` and ``child``; options
    left out are not sent, so the daemon's defaults apply."""
    fields: dict[str, Any] = {"start": start, "draft": draft}
    optional = {
        "priority": priority,
        "network_channel": channel,
        "approval_policy": approval,
        "workspace": None if workspace is None else os.path.abspath(os.path.expanduser(workspace)),
        "max_attempts": max_attempts,
        "input": input_,
        "description": description,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    return fields


def run_options(fn: F) -> F:
    """--max-attempts and --input, shared by the commands that create tasks."""
    fn = click.option(
        "--input", "input_", type=JSON, metavar="JSON", help="JSON input handed to the run."
    )(fn)
    return click.option(
        "--max-attempts",
        type=click.IntRange(1, 1000),
        metavar="N",
        help="How many claims the run may take before the task fails. "
        "[default: aghd --max-attempts, normally 1]",
    )(fn)


@main.command("add")
@click.argument("title")
@task_options
@click.option(
    "--workspace",
    metavar="PATH",
    help="Workspace directory (made absolute; `.` is the current directory).",
)
@run_options
@click.option("--draft", is_flag=True, help="Create a draft: not published, no run.")
@click.option("--description", metavar="TEXT", help="Longer description of the work.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the task identifier.")
@json_option
@click.pass_context
def add(
    ctx: click.Context,
    title: str,
    priority: str | None,
    channel: str | None,
    approval: str | None,
    workspace: str | None,
    max_attempts: int | None,
    input_: Any,
    draft: bool,
    description: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Create a task and queue its run (unless --draft).

    \b
    Example:
      agh add "Fix the flaky login test" --priority high --workspace .
      agh add "Summarise the logs" --input '{"since": "1h"}' --json
      agh add "Plan the migration" --draft --description "Only a sketch"
      agh add "Deploy to production" --approval manual
    """
    fields = new_task_fields(
        start=not draft,
        draft=draft,
        priority=priority,
        channel=channel,
        approval=approval,
        workspace=workspace,
        max_attempts=max_attempts,
        input_=input_,
        description=description,
    )
    with connect(ctx) as client:
        result = client.tasks_create(title, **fields)
    if as_json:
        emit_json(result)
        return
    if quiet:
        click.echo(result.task.identifier)
        return
    click.echo(task_run_line(result))


def task_run_line(result: p.TaskRunResult) -> str:
    """``T-3  task_…  ready  run run_… queued``, or why no run is queued yet."""
    task, run = result.task, result.run
    line = f"{task.identifier}  {task.id}  {task.status}"
    if run is not None:
        line += f"  run {run.id} {run.status}"
    elif task.kind == "workflow" and task.status not in ("pending", *CLOSED_STATUSES):
        line += f"  steps run as their dependencies complete (agh tree {task.identifier})"
    elif task.blocking_reason:
        line += f"  waits: {task.blocking_reason}"
    return line


@main.command("ls")
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only tasks in this status.")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Only tasks of this priority.")
@click.option("--channel", metavar="NAME", help="Only tasks on this network channel.")
@click.option("--workspace", metavar="W", help="Only tasks of this workspace (path, id or key).")
@click.option(
    "--query",
    metavar="Q",
    help="Only tasks whose identifier is Q (T-42) or whose title contains Q.",
)
@click.option("--limit", type=click.IntRange(1, 1000), metavar="N", help="At most N tasks.")
@click.option("--cursor", metavar="CURSOR", help="Continue a listing cut by --limit.")
@click.option("--all", "include_drafts", is_flag=True, help="Include drafts.")
@click.option("-q", "--quiet", is_flag=True, help="Print only task identifiers, one a line.")
@json_option
@click.pass_context
def ls(
    ctx: click.Context,
    status: str | None,
    priority: str | None,
    channel: str | None,
    workspace: str | None,
    query: str | None,
    limit: int | None,
    cursor: str | None,
    include_drafts: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """List tasks as a table.

    RUN shows the status of the task's active run, or - when it has none.

    \b
    Example:
      agh ls
      agh ls --status ready --priority urgent
      agh ls --workspace . --all -q
    """
    filters: dict[str, Any] = {
        "status": status,
        "priority": priority,
        "network_channel": channel,
        "workspace": workspace_ref(workspace),
        "query": query,
        "limit": limit,
        "cursor": cursor,
    }
    filters = {k: v for k, v in filters.items() if v is not None}
    if include_drafts:
        filters["include_drafts"] = True
    with connect(ctx) as client:
        result = client.tasks_list(**filters)
    if as_json:
        emit_json(result)
        return
    if quiet:
        for item in result.tasks:
            click.echo(item.identifier)
    elif not result.tasks:
        click.echo("no tasks", err=True)
    else:
        rows = [
            (
                item.identifier,
                item.status,
                item.priority,
                item.network_channel or "-",
                shorten(item.title, 60),
                item.active_run.status if item.active_run else "-",
            )
            for item in result.tasks
        ]
        click.echo(format_table(("ID", "STATUS", "PRIORITY", "CHANNEL", "TITLE", "RUN"), rows))
    if result.next_cursor:
        click.echo(f"more tasks: agh ls --cursor {result.next_cursor}", err=True)


@main.command("show")
@click.argument("task_id", metavar="ID")
@click.option(
    "--events",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="How many of the latest events to print.",
)
@json_option
@click.pass_context
def show(ctx: click.Context, task_id: str, events: int, as_json: bool) -> None:
    """Show a task with its runs and recent events.

    ID is the task's identifier (T-42) or id (task_…).

    \b
    Example:
      agh show T-42
      agh show T-42 --json
    """
    with connect(ctx) as client:
        result = client.tasks_get(task_id)
    if as_json:
        emit_json(result)
        return
    click.echo(format_task_detail(result.task, events))


def format_task_detail(detail: p.TaskDetail, max_events: int = 10) -> str:
    """The readable form of a ``tasks.get`` result."""
    task = detail.task
    summary = detail.summary
    origin = task.origin.kind if task.origin else None
    pairs: list[tuple[str, Any]] = [
        ("Task", f"{task.identifier}  {task.id}"),
        ("Title", task.title),
        ("Status", task.status),
        ("Priority", task.priority),
        ("Channel", task.network_channel),
        ("Workspace", task.workspace_id),
        ("Owner", actor_text(task.owner)),
        (
            "Created",
            f"{task.created_at} by {actor_text(task.created_by)}"
            + (f" via {origin}" if origin else ""),
        ),
        ("Updated", task.updated_at),
        ("Closed", task.closed_at),
        ("Max attempts", task.max_attempts),
        ("Approval", f"{task.approval_policy} ({task.approval_state})"),
    ]
    if task.blocking_reason:
        pairs.append(("Blocked by", task.blocking_reason))
    if task.parent_task_id:
        pairs.append(("Parent", task.parent_task_id))
    if summary.child_count:
        pairs.append(("Children", summary.child_count))
    if task.description:
        pairs.append(("Description", task.description))
    parts = [format_fields(pairs)]

    if detail.runs:
        rows = [
            (
                run.id,
                run.status,
                str(run.attempt),
                actor_text(run.claimed_by),
                run.lease_until or "-",
                shorten(run.error or "", 50) or "-",
            )
            for run in detail.runs
        ]
        table = format_table(
            ("RUN", "STATUS", "ATTEMPT", "CLAIMED BY", "LEASE UNTIL", "ERROR"), rows
        )
        parts.append("Runs:\n" + indent(table))
    else:
        parts.append("Runs: none")

    if detail.events and max_events:
        recent = sorted(detail.events, key=lambda e: (e.timestamp, e.sequence))[-max_events:]
        event_rows = [
            (event.timestamp, event.event_type, event.run_id or "-", actor_text(event.actor))
            for event in recent
        ]
        title = f"Events (last {len(recent)} of {len(detail.events)}):"
        parts.append(
            title + "\n" + indent(format_table(("TIME", "EVENT", "RUN", "ACTOR"), event_rows))
        )
    return "\n\n".join(parts)


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


@main.command("publish")
@click.argument("task_id", metavar="ID")
@json_option
@click.pass_context
def publish(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Publish a draft: make it live and queue its run.

    Prints the task and its queued run, or what it waits for (approval,
    dependencies) when something still blocks it. A run requested with
    `agh start` while it was a draft is the one queued, with its --input.

    \b
    Example:
      agh add "Plan the migration" --draft -q      # T-7
      agh publish T-7
    """
    with connect(ctx) as client:
        result = client.tasks_publish(task_id)
    if as_json:
        emit_json(result)
        return
    click.echo(task_run_line(result))


@main.command("start")
@click.argument("task_id", metavar="ID")
@click.option("--input", "input_", type=JSON, metavar="JSON", help="JSON input handed to the run.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Repeating the command with the same KEY returns the run it made "
    "instead of requesting another.",
)
@json_option
@click.pass_context
def start(
    ctx: click.Context, task_id: str, input_: Any, idempotency_key: str | None, as_json: bool
) -> None:
    """Request a run of a task (for a workflow: run its whole DAG).

    The run is queued at once unless something blocks the task; then the
    request is kept and the run queued when the task is published,
    approved or its dependencies complete. A finished task gets a new run
    (a manual retry). Starting a workflow's root task (from `agh compose`)
    requests a run of every step: steps without dependencies are queued
    now, the others as their dependencies complete; --input is handed to
    every step's run.

    \b
    Example:
      agh start T-42
      agh start T-42 --input '{"branch": "main"}' --idempotency-key deploy-42
      agh start T-1 && agh tree T-1      # a workflow root
    """
    fields: dict[str, Any] = {}
    if input_ is not None:
        fields["input"] = input_
    if idempotency_key is not None:
        fields["idempotency_key"] = idempotency_key
    with connect(ctx) as client:
        result = client.tasks_start(task_id, **fields)
    if as_json:
        emit_json(result)
        return
    line = task_run_line(result)
    if result.run is None and result.task.draft:
        line += f"  waits: queued when published (agh publish {result.task.identifier})"
    click.echo(line)


# -- agent work -------------------------------------------------------------------


@main.command("claim")
@click.option("--channel", metavar="NAME", help="Only runs on this network channel.")
@click.option("--workspace", metavar="W", help="Only runs of this workspace (path, id or key).")
@click.option(
    "--wait",
    type=click.FloatRange(0, 60),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait up to this long for work to appear.",
)
@click.option(
    "--lease",
    type=click.FloatRange(1, 86_400),
    metavar="SECONDS",
    help="Lease length; renew it with `agh heartbeat`. [default: the daemon's, 300]",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Retrying with the same KEY (after a lost reply or a timeout) returns the same "
    "run with a fresh token instead of claiming another.",
)
@click.option(
    "--session",
    "session_id",
    metavar="ID",
    help="Claim for this agent session (created by session.hello; it must exist). "
    "The daemon's limit of one active claim per session then applies.",
)
@json_option
@click.pass_context
def claim(
    ctx: click.Context,
    channel: str | None,
    workspace: str | None,
    wait: float,
    lease: float | None,
    idempotency_key: str | None,
    session_id: str | None,
    as_json: bool,
) -> None:
    """Claim the best queued run, as an agent.

    Prints the run id, the task, the claim token and when the lease ends.
    Exits 1 with "no work available" on stderr when nothing is claimable
    (with --json, after printing {"claim": null}).

    With --idempotency-key, a retry of the same command with the same key
    (say, after a timeout or lost reply) gets the run it already claimed,
    under a new token that replaces the old one, rather than a second run.
    Once that claim has ended, the key is spent: use a new one.

    \b
    Example:
      agh claim --wait 30 --lease 600
      agh claim --idempotency-key "job-$JOB_ID" --json
      export AGH_CLAIM_TOKEN=$(agh claim --json | jq -r .claim.claim_token)
    """
    fields: dict[str, Any] = {"wait_ms": seconds_to_ms(wait) or 0}
    if channel is not None:
        fields["network_channel"] = channel
    if workspace is not None:
        fields["workspace"] = workspace_ref(workspace)
    if lease is not None:
        fields["lease_ms"] = seconds_to_ms(lease)
    if idempotency_key is not None:
        fields["idempotency_key"] = idempotency_key
    if session_id is not None:
        fields["session_id"] = session_id
    with connect(ctx) as client:
        result = client.claim_next(**fields)
    if as_json:
        emit_json(result)
    got = result.claim
    if got is None:
        fail("no work available")
    if as_json:
        return
    click.echo(
        format_fields(
            [
                ("run", got.run.id),
                ("task", f"{got.task.identifier}  {got.task.title}"),
                ("attempt", got.run.attempt),
                ("claim token", got.claim_token),
                ("lease until", got.lease.lease_until),
            ]
        )
    )


def emit_lease(result: p.LeaseResult, as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        click.echo(lease_line(result.lease))


def lease_line(lease: p.Lease) -> str:
    line = f"{lease.run_id}  {lease.status}  attempt {lease.attempt}"
    if lease.lease_until and lease.status in ("claimed", "starting", "running"):
        line += f"  lease until {lease.lease_until}"
    return line


@main.command("heartbeat")
@click.argument("run_id", metavar="RUN")
@token_option
@click.option(
    "--lease",
    type=click.FloatRange(1, 86_400),
    metavar="SECONDS",
    help="New lease length from now. [default: the length last granted]",
)
@json_option
@click.pass_context
def heartbeat(
    ctx: click.Context, run_id: str, token: str, lease: float | None, as_json: bool
) -> None:
    """Extend the lease on a claimed run.

    The first heartbeat also moves the run from claimed to running. Without
    --lease the lease is extended from now by the length last granted (the
    claim's --lease, or the last heartbeat's), not by the daemon's default.

    \b
    Example:
      agh heartbeat run_01J… --token "$AGH_CLAIM_TOKEN" --lease 600
    """
    with connect(ctx) as client:
        result = client.heartbeat(run_id, token, lease_ms=seconds_to_ms(lease))
    emit_lease(result, as_json)


@main.command("complete")
@click.argument("run_id", metavar="RUN")
@token_option
@click.option("--result", "result_", type=JSON, metavar="JSON", help="JSON result of the run.")
@json_option
@click.pass_context
def complete(ctx: click.Context, run_id: str, token: str, result_: Any, as_json: bool) -> None:
    """Mark a claimed run completed.

    \b
    Example:
      agh complete run_01J… --token "$AGH_CLAIM_TOKEN" --result '{"pr": 123}'
    """
    with connect(ctx) as client:
        result = client.complete(run_id, token, result=result_)
    emit_lease(result, as_json)


@main.command("fail")
@click.argument("run_id", metavar="RUN")
@token_option
@click.option("--error", "error", required=True, metavar="MSG", help="What went wrong.")
@click.option(
    "--no-retry",
    is_flag=True,
    help="Fail the run and its task now, even if attempts remain.",
)
@json_option
@click.pass_context
def fail_(
    ctx: click.Context, run_id: str, token: str, error: str, no_retry: bool, as_json: bool
) -> None:
    """Mark a claimed run failed (or retry it).

    The run is queued again after a backoff only while attempts remain (and
    not with --no-retry); otherwise the run and its task are failed. Tasks
    default to max_attempts 1, so by default a fail is final: create the
    task with `agh add --max-attempts N` to allow retries.

    \b
    Example:
      agh fail run_01J… --token "$AGH_CLAIM_TOKEN" --error "tests do not pass"
      agh fail run_01J… --token "$AGH_CLAIM_TOKEN" --error "bad spec" --no-retry
    """
    with connect(ctx) as client:
        result = client.fail(run_id, token, error, retry=not no_retry)
    emit_lease(result, as_json)


@main.command("release")
@click.argument("run_id", metavar="RUN")
@token_option
@click.option("--reason", metavar="TEXT", help="Why the run is given back.")
@json_option
@click.pass_context
def release(ctx: click.Context, run_id: str, token: str, reason: str | None, as_json: bool) -> None:
    """Give a claimed run back to the queue.

    The run is queued again on the same attempt, for any agent to claim.

    \b
    Example:
      agh release run_01J… --token "$AGH_CLAIM_TOKEN" --reason "out of context"
    """
    with connect(ctx) as client:
        result = client.release(run_id, token, reason=reason)
    emit_lease(result, as_json)


# -- approval and the task graph ----------------------------------------------------


@main.command("approve")
@click.argument("task_id", metavar="ID")
@click.option("--comment", metavar="TEXT", help="Recorded in the task's approval event.")
@json_option
@click.pass_context
def approve(ctx: click.Context, task_id: str, comment: str | None, as_json: bool) -> None:
    """Approve a task waiting for manual approval; its run is queued.

    Prints the task, its approval state and the queued run, or why the run
    still waits (unmet dependencies). Approving a task that needs no
    approval, or one already approved or rejected, fails (exit 1).

    \b
    Example:
      agh approve T-12 --comment "looks safe"
    """
    with connect(ctx) as client:
        result = client.tasks_approve(task_id, comment=comment)
    if as_json:
        emit_json(result)
        return
    task, run = result.task, result.run
    line = f"{task.identifier}  {task.approval_state}  {task.status}"
    if run is not None:
        line += f"  run {run.id} {run.status}"
    elif task.blocking_reason:
        line += f"  waits: {task.blocking_reason}"
    click.echo(line)


@main.command("deny")
@click.argument("task_id", metavar="ID")
@click.option("--reason", metavar="TEXT", help="Why; recorded as the task's closed reason.")
@json_option
@click.pass_context
def deny(ctx: click.Context, task_id: str, reason: str | None, as_json: bool) -> None:
    """Reject a task waiting for manual approval (alias: reject).

    The task closes as canceled; tasks that depend on it stay blocked.
    `agh reject` is the same command.

    \b
    Example:
      agh deny T-12 --reason "not during the freeze"
      agh reject T-12
    """
    with connect(ctx) as client:
        result = client.tasks_reject(task_id, reason=reason)
    if as_json:
        emit_json(result)
        return
    task = result.task
    line = f"{task.identifier}  {task.approval_state}  {task.status}"
    if task.closed_reason and task.closed_reason != task.approval_state:
        line += f"  ({task.closed_reason})"
    click.echo(line)


# The protocol calls it tasks.reject: accept that name too, without listing
# the command twice in `agh --help`.
_reject = copy.copy(deny)
_reject.name = "reject"
_reject.hidden = True
main.add_command(_reject, "reject")


def stdin_is_tty() -> bool:
    stdin = sys.stdin
    return stdin is not None and stdin.isatty()


def require_confirmation(ctx: click.Context, yes: bool, what: str) -> bool:
    """Whether the caller must be asked. Without --yes and without a terminal
    to ask on, refuse (a usage error): a script must say --yes explicitly."""
    if yes:
        return False
    if not stdin_is_tty():
        raise click.UsageError(
            f"refusing to {what} without confirmation: stdin is not a terminal; "
            "pass --yes (-y) to go ahead",
            ctx,
        )
    return True


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class SubtreeCounts:
    tasks: int
    open_tasks: int
    active_runs: int
    queued_runs: int


def subtree_counts(tree: p.TaskTree) -> SubtreeCounts:
    nodes = [tree.root, *tree.descendants]
    runs = [n.active_run.status for n in nodes if n.active_run is not None]
    return SubtreeCounts(
        tasks=len(nodes),
        open_tasks=sum(n.task.status not in CLOSED_STATUSES for n in nodes),
        active_runs=sum(status in ACTIVE_RUN_STATUSES for status in runs),
        queued_runs=sum(status == "queued" for status in runs),
    )


def confirm_or_stop(question: str, refused: str) -> None:
    """Ask on stderr (stdout is for data); a no (or end of input) exits 1."""
    if not click.confirm(question, default=False, err=True):
        fail(refused)


yes_option = click.option(
    "-y", "--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal)."
)


@main.command("cancel")
@click.argument("task_id", metavar="ID")
@click.option("--reason", metavar="TEXT", help="Why; recorded on every canceled task.")
@yes_option
@json_option
@click.pass_context
def cancel(ctx: click.Context, task_id: str, reason: str | None, yes: bool, as_json: bool) -> None:
    """Cancel a task and everything under it, active runs included.

    Every open task of the subtree is canceled; queued and running runs
    end as canceled, and their agents get lease_lost on their next call.
    Without --yes, asks first, saying how many tasks and runs it affects;
    when stdin is not a terminal, --yes is required (exit 2 without it).

    \b
    Example:
      agh cancel T-1
      agh cancel T-1 --reason "superseded by T-9" --yes
    """
    ask = require_confirmation(ctx, yes, f"cancel {task_id} and its subtree")
    with connect(ctx) as client:
        if ask:
            tree = client.tasks_tree(task_id).tree
            counts = subtree_counts(tree)
            root = tree.root.task
            confirm_or_stop(
                f"Cancel {root.identifier} ({shorten(root.title, 40)}): "
                f"{plural(counts.tasks, 'task')} in its subtree ({counts.open_tasks} open); "
                f"{plural(counts.active_runs, 'active run')} and "
                f"{plural(counts.queued_runs, 'queued run')} will be canceled. Continue?",
                f"{root.identifier} not canceled",
            )
        result = client.tasks_cancel(task_id, reason=reason)
    if as_json:
        emit_json(result)
        return
    task = result.task
    line = f"{task.identifier}  {task.status}"
    if task.closed_reason and task.closed_reason != task.status:
        line += f"  ({task.closed_reason})"
    click.echo(line)


@main.command("rm")
@click.argument("task_id", metavar="ID")
@yes_option
@json_option
@click.pass_context
def rm(ctx: click.Context, task_id: str, yes: bool, as_json: bool) -> None:
    """Delete a task and its subtree, with their runs and events.

    Refused (exit 1) while any task of the subtree has an active run:
    `agh cancel` it first. Tasks outside the subtree that depended on a
    deleted task lose that dependency. Without --yes, asks first; when
    stdin is not a terminal, --yes is required (exit 2 without it).
    With --json prints {}.

    \b
    Example:
      agh rm T-7
      agh rm T-7 -y
    """
    ask = require_confirmation(ctx, yes, f"delete {task_id} and its subtree")
    with connect(ctx) as client:
        if ask:
            tree = client.tasks_tree(task_id).tree
            counts = subtree_counts(tree)
            root = tree.root.task
            question = (
                f"Delete {root.identifier} ({shorten(root.title, 40)}) and its subtree: "
                f"{plural(counts.tasks, 'task')} with their runs and events, for good"
            )
            if counts.active_runs:
                question += (
                    f" ({plural(counts.active_runs, 'active run')}: aghd refuses until "
                    "they are canceled)"
                )
            confirm_or_stop(question + ". Continue?", f"{root.identifier} not deleted")
        result = client.tasks_delete(task_id)
    if as_json:
        emit_json(result)
        return
    click.echo(f"deleted {task_id}")


@main.group("dep")
@json_option
def dep(as_json: bool) -> None:
    """Add or remove a dependency between two tasks.

    `agh dep add ID DEP` makes task ID wait until task DEP has completed;
    `agh dep rm ID DEP` drops that. Both print ID's dependencies after the
    change. A dependency that would close a cycle is refused (exit 1, the
    cycle named). --json may come before or after the subcommand.

    \b
    Example:
      agh dep add T-3 T-2      # T-3 runs after T-2
      agh dep rm T-3 T-2
    """


def dep_json(ctx: click.Context, as_json: bool) -> bool:
    """``agh dep --json add`` and ``agh dep add --json`` mean the same."""
    return as_json or bool(ctx.parent is not None and ctx.parent.params.get("as_json"))


def emit_dependencies(result: p.TaskDetailResult) -> None:
    detail = result.task
    task = detail.task
    line = f"{task.identifier}  {task.status}"
    if task.blocking_reason:
        line += f"  waits: {task.blocking_reason}"
    click.echo(line)
    refs = detail.dependency_references
    if not refs:
        click.echo(f"{task.identifier} has no dependencies")
        return
    rows = [
        (
            ref.depends_on.identifier if ref.depends_on else ref.depends_on_task_id,
            ref.depends_on.status if ref.depends_on else "-",
            shorten(ref.depends_on.title, 60) if ref.depends_on else "-",
        )
        for ref in refs
    ]
    click.echo(format_table(("DEPENDS ON", "STATUS", "TITLE"), rows))


@dep.command("add")
@click.argument("task_id", metavar="ID")
@click.argument("depends_on", metavar="DEP")
@json_option
@click.pass_context
def dep_add(ctx: click.Context, task_id: str, depends_on: str, as_json: bool) -> None:
    """Make task ID wait for task DEP to complete.

    Adding a dependency twice is a no-op. Refused while ID has a queued or
    active run, and when it would close a cycle.

    \b
    Example:
      agh dep add T-3 T-2
    """
    with connect(ctx) as client:
        result = client.tasks_dependencies_add(task_id, depends_on)
    if dep_json(ctx, as_json):
        emit_json(result)
        return
    emit_dependencies(result)


@dep.command("rm")
@click.argument("task_id", metavar="ID")
@click.argument("depends_on", metavar="DEP")
@json_option
@click.pass_context
def dep_rm(ctx: click.Context, task_id: str, depends_on: str, as_json: bool) -> None:
    """Stop task ID waiting for task DEP.

    If nothing else blocks ID and a run was requested, it is queued now.

    \b
    Example:
      agh dep rm T-3 T-2
    """
    with connect(ctx) as client:
        result = client.tasks_dependencies_remove(task_id, depends_on)
    if dep_json(ctx, as_json):
        emit_json(result)
        return
    emit_dependencies(result)


@main.command("child")
@click.argument("parent_id", metavar="ID")
@click.argument("title")
@task_options
@click.option(
    "--workspace",
    metavar="PATH",
    help="Workspace directory (made absolute). [default: the parent's]",
)
@run_options
@click.option("--draft", is_flag=True, help="Create a draft: not published.")
@click.option("--description", metavar="TEXT", help="Longer description of the work.")
@click.option(
    "--start/--no-start",
    "start_",
    default=None,
    help="Queue its run now (the default), or only create it. "
    "With --draft the default is --no-start; --draft --start queues the run on publish.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the task identifier.")
@json_option
@click.pass_context
def child(
    ctx: click.Context,
    parent_id: str,
    title: str,
    priority: str | None,
    channel: str | None,
    approval: str | None,
    workspace: str | None,
    max_attempts: int | None,
    input_: Any,
    draft: bool,
    description: str | None,
    start_: bool | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Create a subtask of task ID and queue its run (like `agh add`).

    The child is shown under its parent by `agh tree` and is canceled or
    deleted with it. Use --no-start to only create it (start it later with
    `agh start`).

    \b
    Example:
      agh child T-1 "Write the tests" --priority high
      agh child T-1 "Review" --no-start -q
    """
    fields = new_task_fields(
        start=(not draft) if start_ is None else start_,
        draft=draft,
        priority=priority,
        channel=channel,
        approval=approval,
        workspace=workspace,
        max_attempts=max_attempts,
        input_=input_,
        description=description,
    )
    with connect(ctx) as client:
        result = client.tasks_children_create(parent_id, title, **fields)
    if as_json:
        emit_json(result)
        return
    if quiet:
        click.echo(result.task.identifier)
        return
    click.echo(task_run_line(result))


@main.command("tree")
@click.argument("task_id", metavar="ID")
@json_option
@click.pass_context
def tree(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show a task and everything under it, one line per task.

    Each level of depth is indented by two spaces. A line shows the
    identifier, status and title, then the task's open run (id and
    status), why a blocked task waits, or why a closed task closed.

    \b
    Example:
      agh tree T-1
      agh tree T-1 --json | jq '.tree.descendants | length'
    """
    with connect(ctx) as client:
        result = client.tasks_tree(task_id)
    if as_json:
        emit_json(result)
        return
    click.echo(format_tree(result.tree))


def format_tree(tree: p.TaskTree) -> str:
    """The readable form of a ``tasks.tree`` result: indented, columns aligned."""
    nodes = [tree.root, *tree.descendants]
    base = tree.root.depth
    heads = ["  " * (n.depth - base) + n.task.identifier for n in nodes]
    head_width = max(len(h) for h in heads)
    status_width = max(len(n.task.status) for n in nodes)
    lines = []
    for head, node in zip(heads, nodes, strict=True):
        parts = [head.ljust(head_width), node.task.status.ljust(status_width)]
        parts.append(shorten(node.task.title, 60))
        if node.active_run is not None:
            parts.append(f"run {node.active_run.id} {node.active_run.status}")
        if node.task.status == "blocked" and node.blocking_reason:
            parts.append(f"(waits: {node.blocking_reason})")
        elif node.task.status in CLOSED_STATUSES and node.closed_reason not in (
            None,
            node.task.status,
        ):
            parts.append(f"({node.closed_reason})")
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# -- workflows ------------------------------------------------------------------------


def parse_vars(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    """``--var k=v`` options to a dict of strings (a later k wins)."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", ctx, param)
        result[key] = value
    return result


@main.command("compose")
@click.argument("file", type=click.File("r", encoding="utf-8"), metavar="FILE")
@click.option(
    "--var",
    "variables",
    multiple=True,
    callback=parse_vars,
    metavar="NAME=VALUE",
    help="Fill {{ var.NAME }} in the YAML. Repeatable. Values are always strings.",
)
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; write nothing.")
@click.option(
    "--update",
    metavar="ID",
    help="Make the file the next version of this workflow (wf_… id, or its root task) "
    "instead of creating one. Steps that have run keep their tasks, runs, results and "
    "logs; refused while a step has an open run, or if a step that ran is left out.",
)
@click.option("--start", "start_", is_flag=True, help="Start the workflow right away.")
@click.option(
    "--workspace", metavar="W", help="Workspace of a new workflow's tasks (path, id or key)."
)
@json_option
@click.pass_context
def compose(
    ctx: click.Context,
    file: IO[str],
    variables: dict[str, str],
    dry_run: bool,
    update: str | None,
    start_: bool,
    workspace: str | None,
    as_json: bool,
) -> None:
    """Create a workflow (a DAG of steps) from a YAML file.

    FILE - reads the YAML from stdin. The workflow becomes a root task
    with one child task per step; steps wait for their depends_on steps
    and run only if their condition holds. Nothing runs until it is
    started (`agh start <root>`, or --start).

    --var values are passed as strings, never parsed: "3" and "true" stay
    strings. With --dry-run nothing is written: the plan is printed level
    by level (steps of one level may run in parallel), with each step's
    action, resolved inputs, conditions, approval gate and dependencies.
    YAML errors name the line and column (exit 1).

    \b
    Example:
      agh compose deploy.yaml --var env=staging --dry-run
      agh compose deploy.yaml --var env=prod --start
      generate-workflow | agh compose - --json
    """
    try:
        text = file.read()
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"not UTF-8 text ({exc})", ctx, param_hint="FILE") from None
    if not text.strip():
        raise click.BadParameter(f"{file.name} is empty", ctx, param_hint="FILE")
    fields: dict[str, Any] = {"vars": variables, "dry_run": dry_run, "start": start_}
    if update is not None:
        fields["update"] = update
    if workspace is not None:
        fields["workspace"] = workspace_ref(workspace)
    with connect(ctx) as client:
        result = client.workflows_compose(text, **fields)
    if as_json:
        emit_json(result)
        return
    if dry_run or result.workflow is None or result.task is None:
        click.echo(format_plan(result.plan))
        return
    workflow, task = result.workflow, result.task
    click.echo(
        format_fields(
            [
                ("Workflow", f"{workflow.id}  {workflow.name}"),
                ("Version", workflow.version),
                ("Root task", f"{task.identifier}  {task.id}  {task.status}"),
                ("Steps", step_count(result.plan)),
            ]
        )
    )
    if not start_:
        click.echo(f"start it with: agh start {task.identifier}", err=True)


def step_count(plan: p.WorkflowPlan) -> str:
    runnable = [s for s in plan.steps if s.action != "branch"]
    return f"{plural(len(runnable), 'step')} in {plural(len(plan.levels), 'level')}"


def condition_text(cond: p.StepCondition) -> str:
    """``steps.test.output.passed == true``; values as compact JSON."""
    if cond.op == "exists":
        return f"{cond.field} {'exists' if cond.value else 'does not exist'}"
    op = "==" if cond.op == "equals" else "!="
    return f"{cond.field} {op} {json_text(cond.value)}"


def format_plan(plan: p.WorkflowPlan) -> str:
    """The readable form of a workflow plan: levels in order, each step with
    what it does, its inputs, conditions, gate and dependencies."""
    lines = [f"workflow: {plan.name}"]
    if plan.description:
        lines.append(f"  {shorten(plan.description, 96)}")
    lines.append(step_count(plan))
    steps = {s.id: s for s in plan.steps}
    for level in plan.levels:
        lines.append(f"level {level.level}" + (" (parallel):" if level.parallel else ":"))
        for step_id in level.steps:
            lines.extend(plan_step_lines(steps[step_id]))
    return "\n".join(lines)


def plan_step_lines(step: p.PlanStep) -> list[str]:
    what: str = step.action
    if step.tool:
        what += f" {step.tool}"
    if step.task_ref:
        what += f" (copies {step.task_ref})"
    lines = [f"  {step.id}  {what}"]
    details: list[str] = []
    if step.title != step.id:
        details.append(f"title: {step.title}")
    if step.parent:
        details.append(f"in branch: {step.parent}")
    if step.inputs:
        details.append(f"inputs: {json_text(step.inputs)}")
    details.extend(f"if {condition_text(c)}" for c in step.conditions)
    if step.approval == "manual":
        details.append("approval: manual (waits for `agh approve`)")
    extras = [
        f"priority {step.priority}" if step.priority else "",
        f"channel {step.network_channel}" if step.network_channel else "",
        f"max attempts {step.max_attempts}" if step.max_attempts else "",
    ]
    if any(extras):
        details.append(", ".join(e for e in extras if e))
    if step.depends_on:
        details.append(f"depends on: {', '.join(step.depends_on)}")
    lines.extend(f"    {d}" for d in details)
    return lines


# -- watching: timeline, watch, logs, send, events ------------------------------------

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
LOG_LEVELS = ("debug", "info", "warn", "error")  # least to most severe
RUN_END_STATUSES = ("completed", "failed", "canceled")
# tasks.timeline pages at most this many events per call.
PAGE = 1000


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C ends a stream quietly with exit 130, no traceback, no "Aborted!"."""
    try:
        yield
    except KeyboardInterrupt:
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def payload_summary(payload: Any, width: int = 80) -> str:
    """An event payload as compact JSON on one line, cut to ``width``."""
    if payload is None or payload == {}:
        return "-"
    return shorten(json_text(payload), width)


def timeline_line(item: p.TimelineItem) -> str:
    """``42  2026-…Z  run.claimed  agent_session:coder-1  {"attempt":1}``."""
    parts = [
        str(item.sequence).rjust(6),
        item.timestamp,
        item.event_type.ljust(18),
        actor_text(item.actor).ljust(20),
        payload_summary(item.payload),
    ]
    return "  ".join(parts)


def read_timeline(
    client: Client, task_id: str, after: int, until: int | None = None
) -> list[p.TimelineItem]:
    """Every event of a task after ``after`` (up to ``until`` when given),
    page by page."""
    items: list[p.TimelineItem] = []
    while True:
        page = client.tasks_timeline(task_id, after_sequence=after, limit=PAGE).timeline
        for item in page:
            if until is not None and item.sequence > until:
                return items
            items.append(item)
        if len(page) < PAGE:
            return items
        after = page[-1].sequence


@main.command("timeline")
@click.argument("task_id", metavar="ID")
@click.option(
    "--after",
    type=click.IntRange(0),
    default=0,
    metavar="SEQ",
    help="Only events after this sequence number. [default: 0, from the start]",
)
@click.option(
    "--limit",
    type=click.IntRange(1, PAGE),
    metavar="N",
    help="At most N events (then a hint to continue). [default: all]",
)
@json_option
@click.pass_context
def timeline(
    ctx: click.Context, task_id: str, after: int, limit: int | None, as_json: bool
) -> None:
    """Print a task's events, oldest first, one line each.

    A line shows the event's sequence number, time, type, actor and its
    payload as compact JSON (cut to fit). --json prints {"timeline":
    [...]}, each item with the task and run as they are now.

    \b
    Example:
      agh timeline T-42
      agh timeline T-42 --after 120 --limit 20
      agh timeline T-42 --json | jq -r '.timeline[].event_type'
    """
    more = False
    with connect(ctx) as client:
        if limit is None:
            items = read_timeline(client, task_id, after)
        else:
            items = client.tasks_timeline(task_id, after_sequence=after, limit=limit).timeline
            if len(items) == limit:
                rest = client.tasks_timeline(task_id, after_sequence=items[-1].sequence, limit=1)
                more = bool(rest.timeline)
    if as_json:
        emit_json({"timeline": items})
    elif not items:
        click.echo("no events" + (f" after {after}" if after else ""), err=True)
    else:
        for item in items:
            click.echo(timeline_line(item))
    if more:
        click.echo(f"more events: agh timeline {task_id} --after {items[-1].sequence}", err=True)


def task_end(client: Client, task_id: str, after: int, until: int | None = None) -> int:
    """The sequence of the task's last event (up to ``until``), or ``after``."""
    items = read_timeline(client, task_id, after, until)
    return items[-1].sequence if items else after


def follow_task(client: Client, task_id: str, as_json: bool) -> str:
    """Print a task's stream until it is closed and every event up to its
    close is printed; return its final status.

    A timeline item carries the task as it is when aghd reads the event,
    so on a replay (or a burst) every item may already say "completed":
    seeing a closed status is not the end. Then the task's last event is
    looked up and the stream read up to it. A task reopened meanwhile (a
    new run) is followed on."""
    sub = client.tasks_stream(task_id).subscription
    last = 0
    end: int | None = None
    while True:
        event = client.next_event()
        if event.subscription != sub:
            continue  # left over from a subscription dropped for overflow
        if event.type == "overflow":
            sub = client.tasks_stream(task_id, after_sequence=last).subscription
            continue
        item = event.timeline
        if event.type != "timeline" or item is None or item.sequence <= last:
            continue
        last = item.sequence
        click.echo(json_text(event) if as_json else timeline_line(item))
        if item.event_type == "task.deleted":
            return "deleted"  # nothing more will happen to it
        status = item.task.status if item.task is not None else None
        if status is None or status not in CLOSED_STATUSES:
            end = None
            continue
        if end is None:
            end = task_end(client, task_id, last)
        if last >= end:
            return status


@main.command("watch")
@click.argument("task_id", metavar="ID")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON lines: each stream.event notification as one object.",
)
@click.pass_context
def watch(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Print a task's events as they happen, until it is closed.

    Replays the task's history first (lines as in `agh timeline`), then
    prints each new event as aghd records it. Stops once the task is
    completed, failed or canceled and its events up to then are printed:
    exits 0 if it completed, 1 if it failed, was canceled or was deleted,
    130 on Ctrl-C.
    A task that is already closed prints its history and exits. --json
    prints each stream.event notification as one JSON object per line.

    \b
    Example:
      agh watch T-42
      agh watch T-42 && echo done
      agh watch T-42 --json | jq -c '.timeline | {sequence, event_type}'
    """
    with interruptible(), connect(ctx) as client:
        status = follow_task(client, task_id, as_json)
    if status != "completed":
        click.echo(f"agh: {task_id} is {status}", err=True)
        raise click.exceptions.Exit(EXIT_FAILED)


def log_line(log: p.RunLog) -> str:
    """``2026-…Z  info   [2] message`` (the step only when the line has one)."""
    step = f"[{log.step}] " if log.step is not None else ""
    return f"{log.timestamp}  {log.level.ljust(5)}  {step}{log.message}"


def log_wanted(log: p.RunLog, level: str | None, step: int | None) -> bool:
    """The --level (minimum) and --step filters, applied by the client to
    lines that arrive with stream events."""
    if step is not None and log.step != step:
        return False
    return level is None or LOG_LEVELS.index(log.level) >= LOG_LEVELS.index(level)


def read_logs(
    client: Client, run_id: str, after: int, filters: dict[str, Any]
) -> tuple[list[p.RunLog], int]:
    """Every retained line of a run after log id ``after``, page by page;
    returns them and the id to continue after."""
    lines: list[p.RunLog] = []
    while True:
        page = client.runs_logs(run_id, after=after, limit=PAGE, **filters)
        lines.extend(page.logs)
        after = page.next_after
        if len(page.logs) < PAGE:
            return lines, after


def emit_log(log: p.RunLog, as_json: bool) -> None:
    click.echo(json_text(log) if as_json else log_line(log))


@dataclass
class LogFollow:
    """Where `agh logs --follow` is: the run, its task's subscription, the
    last event sequence and the last log id seen."""

    run_id: str
    task_id: str
    subscription: str
    last_sequence: int
    last_id: int


def follow_logs(
    client: Client,
    state: LogFollow,
    level: str | None,
    step: int | None,
    as_json: bool,
) -> None:
    """Print the run's new lines as their ``run.log`` events arrive, until
    an event shows the run ended."""
    filters = {k: v for k, v in (("level", level), ("step", step)) if v is not None}
    while True:
        event = client.next_event()
        if event.subscription != state.subscription:
            continue
        if event.type == "overflow":
            state.subscription = client.events_subscribe(
                task_id=state.task_id, after_sequence=state.last_sequence
            ).subscription
            continue
        item = event.timeline
        if event.type != "timeline" or item is None:
            continue
        state.last_sequence = item.sequence
        if item.run is None or item.run.id != state.run_id:
            continue
        if item.event_type == "run.log":
            if event.logs is None:  # no longer retained with the event: ask
                new, state.last_id = read_logs(client, state.run_id, state.last_id, filters)
            else:
                new = [x for x in event.logs if x.id > state.last_id and log_wanted(x, level, step)]
                state.last_id = max([state.last_id, *(x.id for x in event.logs)])
            for log in new:
                emit_log(log, as_json)
        if item.run.status in RUN_END_STATUSES:
            # The item shows the run as it is now: lines of run.log events
            # still on their way are read here instead.
            rest, state.last_id = read_logs(client, state.run_id, state.last_id, filters)
            for log in rest:
                emit_log(log, as_json)
            return


@main.command("logs")
@click.argument("ref", metavar="RUN_OR_TASK")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--step", type=int, metavar="N", help="Only lines of step N.")
@click.option("--level", type=click.Choice(LOG_LEVELS), help="Only lines at this level or above.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    metavar="N",
    help="Only the last N of the lines already written. [default: all]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document; with --follow, JSON lines (one log line each).",
)
@click.pass_context
def logs(
    ctx: click.Context,
    ref: str,
    follow: bool,
    step: int | None,
    level: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Print the log lines an agent wrote for a run.

    RUN_OR_TASK is a run id, or a task (T-42 or task_…) for its latest
    run. A line shows the time, level, [step] and message; aghd keeps the
    last 10,000 lines of each run. With
    --follow, prints new lines as the agent writes them and exits 0 when
    the run ends (at once if it already has). --json prints
    {"logs": [...], "run_id", "next_after"}; with --follow, one log line
    object per line instead.

    \b
    Example:
      agh logs T-42
      agh logs run_01J… --level warn --step 2
      agh logs T-42 --follow --limit 20
    """
    filters = {k: v for k, v in (("level", level), ("step", step)) if v is not None}
    with interruptible(), connect(ctx) as client:
        first = client.runs_logs(ref, limit=PAGE, **filters)  # resolves a task to its run
        run_id = first.run_id
        lines, last_id = list(first.logs), first.next_after
        state: LogFollow | None = None
        ended = True
        if follow:
            task_id = client.runs_get(run_id).run.task.id
            sub = client.events_subscribe(task_id=task_id)
            # After subscribing: a run that ends later is seen in the stream,
            # and the read below has every line written before the stream starts.
            ended = client.runs_get(run_id).run.run.status in RUN_END_STATUSES
            state = LogFollow(run_id, task_id, sub.subscription, sub.after_sequence, last_id)
        if follow or len(first.logs) == PAGE:
            rest, last_id = read_logs(client, run_id, last_id, filters)
            lines.extend(rest)
        if limit is not None:
            lines = lines[-limit:]
        if as_json and not follow:
            emit_json({"logs": lines, "run_id": run_id, "next_after": last_id})
            return
        if not lines and not follow:
            click.echo(f"no log lines for {run_id}", err=True)
        for log in lines:
            emit_log(log, as_json)
        if state is None or ended:
            return
        state.last_id = last_id
        follow_logs(client, state, level, step, as_json)


@main.command("send")
@click.argument("task_id", metavar="ID")
@click.argument("message", required=False)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the message from stdin.")
@json_option
@click.pass_context
def send(
    ctx: click.Context, task_id: str, message: str | None, from_stdin: bool, as_json: bool
) -> None:
    """Send input to the agent working on a task.

    If a run holds the task now, its agent gets the message at once
    (agent.messages); otherwise it is queued for the task's next run.
    Sending answers a question the agent asked. Give MESSAGE, or --stdin
    to read it (one trailing newline is dropped).

    \b
    Example:
      agh send T-42 "please also update the docs"
      git diff | agh send T-42 --stdin
    """
    if from_stdin:
        if message is not None:
            raise click.UsageError("give MESSAGE or --stdin, not both", ctx)
        message = sys.stdin.read()
        if message.endswith("\n"):
            message = message[:-1]
    if message is None:
        raise click.UsageError("missing MESSAGE (or --stdin to read it)", ctx)
    if not message.strip():
        raise click.BadParameter("the message is empty", ctx, param_hint="MESSAGE")
    with connect(ctx) as client:
        result = client.tasks_send(task_id, message)
    if as_json:
        emit_json(result)
    elif result.delivered:
        click.echo(f"{task_id}: delivered to the running agent (run {result.message.run_id})")
    else:
        click.echo(f"{task_id}: no run holds it now; queued for its next run")


@main.command("events")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--after",
    type=click.IntRange(0),
    metavar="SEQ",
    help="Start after this sequence number. [default: 0; with --follow, the end of the log]",
)
@click.option("--task", "task_ref", metavar="ID", help="Only this task's events.")
@click.option("--workspace", metavar="W", help="Only events of this workspace's tasks.")
@click.option("--channel", metavar="NAME", help="Only events of tasks on this network channel.")
@click.option("--json", "as_json", is_flag=True, help="Accepted; the output is JSON lines anyway.")
@click.pass_context
def events(
    ctx: click.Context,
    follow: bool,
    after: int | None,
    task_ref: str | None,
    workspace: str | None,
    channel: str | None,
    as_json: bool,
) -> None:
    """Print the event log as JSON lines, one timeline item per line.

    Each line is one event with its task and run as they are now (the
    items of `agh timeline --json`), in sequence order. Without --follow,
    prints the events stored after --after when the command starts and
    exits 0 (with --workspace or --channel, possibly only at aghd's next
    keepalive, up to 15 s later). With --follow, prints them and then
    every new event until Ctrl-C (exit 130); a subscriber that falls
    behind is resumed where it stopped. The output is always JSON lines
    (--json changes nothing).

    \b
    Example:
      agh events --after 100 | jq -r .event_type
      agh events --follow --channel gpu
      agh events --task T-42
    """
    filters = {
        k: v
        for k, v in (
            ("task_id", task_ref),
            ("workspace", workspace_ref(workspace)),
            ("network_channel", channel),
        )
        if v is not None
    }
    with interruptible(), connect(ctx) as client:
        stream_events(client, filters, after, follow)


def stream_events(client: Client, filters: dict[str, Any], after: int | None, follow: bool) -> None:
    """Print matching timeline items after ``after`` as JSON lines: without
    ``follow`` up to the end of the log as it is now, else until Ctrl-C.

    The end is known by subscribing once without a cursor. The stream stops
    at the event with that sequence or, when a filter skips it, at the
    next keepalive (its sequence is the subscription's cursor)."""
    end: int | None = None
    if not follow:
        # Subscribing without a cursor tells the end of the log now.
        probe = client.events_subscribe(**filters)
        client.subscriptions_cancel(probe.subscription)
        end = probe.after_sequence
        after = after or 0
        task_id = filters.get("task_id")
        if task_id is not None:
            # A task's last event is usually well before the end of the log;
            # stop at it rather than wait for aghd's next keepalive.
            end = min(end, task_end(client, task_id, after, end))
        if end <= after:
            return
    sub = client.events_subscribe(after_sequence=after, **filters)
    sid, last = sub.subscription, sub.after_sequence
    while True:
        event = client.next_event()
        if event.subscription != sid:
            continue  # the probe's, or one dropped for overflow
        if event.type == "overflow":
            sid = client.events_subscribe(after_sequence=last, **filters).subscription
            continue
        item = event.timeline
        if event.type == "timeline" and item is not None and item.sequence > last:
            if end is not None and item.sequence > end:
                return
            click.echo(json_text(item))
            last = item.sequence
        if end is not None and event.sequence >= end:
            return


# -- the operator's view: dashboard and inbox ------------------------------------------

INBOX_LANES = ("my_work", "approvals", "failed_runs", "blocked", "archived")


def duration(ms: int | None) -> str:
    """``850ms``, ``12s``, ``5m03s``, ``2h10m``, ``3d04h``; ``-`` for none."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def health_text(status: str, reasons: Sequence[str]) -> str:
    """``warning (2 stuck runs, queue backlog)``: the status and what made it."""
    return f"{status} ({', '.join(reasons)})" if reasons else status


def format_dashboard(board: p.Dashboard) -> str:
    """The readable form of ``observe.dashboard``: health first, then what
    is running, what waits, and how fast work is picked up."""
    health, totals, queue, fresh = board.health, board.totals, board.queue, board.freshness
    reasons = []
    if health.stuck_runs:
        reasons.append(plural(health.stuck_runs, "stuck run"))
    if health.active_orphan_runs:
        reasons.append(plural(health.active_orphan_runs, "orphaned run"))
    if health.queue_backlog:
        reasons.append("queue backlog")
    if fresh.stale:
        reasons.append(f"stale: nothing happened for {duration(fresh.age_ms)}")
    last = "-"
    if fresh.latest_activity_at:
        last = f"{fresh.latest_activity_at} ({duration(fresh.age_ms)} ago)"
    cards = board.cards
    latency = cards.latency
    window = f"last {duration(latency.window_ms)}" if latency.window_ms else "recent runs"

    def lat(stat: p.LatencyStat) -> str:
        if not stat.samples:
            return "no samples"
        return (
            f"avg {duration(stat.average_ms)}, max {duration(stat.maximum_ms)}"
            f" ({plural(stat.samples, 'run')})"
        )

    breakdown = ", ".join(
        f"{s.status} {s.count} ({s.share_percent:.1f}%)" for s in board.status_breakdown if s.count
    )
    pairs: list[tuple[str, Any]] = [
        ("Health", health_text(health.status, reasons)),
        ("Last activity", last),
        (
            "Tasks",
            f"{totals.tasks_total} ({breakdown})" if breakdown else totals.tasks_total,
        ),
        (
            "Waiting",
            f"{plural(cards.blocked.tasks, 'blocked task')}: "
            f"{cards.blocked.awaiting_approval} awaiting approval, "
            f"{cards.blocked.awaiting_dependencies} awaiting dependencies",
        ),
        (
            "Failed",
            f"{plural(cards.failed.tasks, 'task')}, {plural(cards.failed.failed_runs, 'run')}"
            f" ({cards.failed.forced_stops} forced stops)",
        ),
        (
            "Runs",
            f"{totals.active_runs} active ({totals.claimed_runs} claimed, "
            f"{totals.starting_runs} starting, {totals.running_runs} running), "
            f"{totals.queued_runs} queued; {totals.completed_runs} completed, "
            f"{totals.failed_runs} failed, {totals.canceled_runs} canceled",
        ),
        (
            "Queue",
            f"{queue.total} queued, oldest waited {duration(queue.oldest_queue_age_ms)}"
            + (
                f" ({queue.backlog_status}: over {duration(queue.backlog_threshold_ms)})"
                if queue.backlog_warning
                else ""
            ),
        ),
        (
            f"Latency ({window})",
            f"claim {lat(latency.claim_latency_ms)}; start {lat(latency.start_latency_ms)}",
        ),
    ]
    parts = [format_fields(pairs)]
    if queue.depth:
        rows = [
            (d.network_channel or "-", str(d.count), duration(d.oldest_queue_age_ms))
            for d in queue.depth
        ]
        parts.append(
            "Queue by channel:\n" + indent(format_table(("CHANNEL", "QUEUED", "OLDEST"), rows))
        )
    items = board.active_runs.items
    if items:
        run_rows = [
            (
                r.run_id,
                r.task_identifier,
                r.run_status,
                duration(r.age_ms),
                r.health_status
                + "".join(
                    f", {flag}" for flag, on in (("stuck", r.stuck), ("orphaned", r.orphaned)) if on
                ),
                shorten(r.task_title, 40),
            )
            for r in items
        ]
        table = format_table(("RUN", "TASK", "STATUS", "AGE", "HEALTH", "TITLE"), run_rows)
        parts.append("Active runs:\n" + indent(table))
    else:
        parts.append("Active runs: none")
    return "\n\n".join(parts)


@main.command("dashboard")
@click.option("--workspace", metavar="W", help="Only this workspace's tasks (path, id or key).")
@click.option("--channel", metavar="NAME", help="Only tasks on this network channel.")
@json_option
@click.pass_context
def dashboard(
    ctx: click.Context, workspace: str | None, channel: str | None, as_json: bool
) -> None:
    """Show the hub's health, active runs, queue and latencies.

    Health is ok, warning or critical: the worst of the queue (its oldest
    run waited too long), the active runs (stuck without heartbeat or
    activity, or orphaned by a disconnected session) and freshness (live
    work but nothing happening). Then task and run totals, blocked and
    failed work, the queue per channel, claim and start latencies, and
    every active run with its age and health.

    \b
    Example:
      agh dashboard
      agh dashboard --channel gpu
      agh dashboard --json | jq -r .dashboard.health.status
    """
    filters = {
        k: v
        for k, v in (("workspace", workspace_ref(workspace)), ("network_channel", channel))
        if v is not None
    }
    with connect(ctx) as client:
        result = client.observe_dashboard(**filters)
    if as_json:
        emit_json(result)
        return
    click.echo(format_dashboard(result.dashboard))


def inbox_why(item: p.InboxItem) -> str:
    """What the item waits for or how its run ended: its blocking reason,
    else its run's status (and error)."""
    if item.blocking_reason:
        return item.blocking_reason
    run = item.run
    if run is None:
        return "-"
    if run.error:
        return f"run {run.status}: {shorten(run.error, 50)}"
    return f"run {run.status}"


def format_inbox(inbox: p.Inbox) -> str:
    """One block per lane: ``approvals: 2 (1 unread)`` then its items, an
    unread one marked ``*``."""
    head = f"{plural(inbox.total, 'item')}, {inbox.unread_total} unread"
    if inbox.archived_total:
        head += f" ({inbox.archived_total} archived)"
    blocks = [head]
    for group in inbox.groups:
        title = f"{group.lane}: {group.count}"
        if group.unread_count:
            title += f" ({group.unread_count} unread)"
        if not group.items:
            blocks.append(title)
            continue
        rows = [
            (
                "*" if not item.triage.read else " ",
                item.task.identifier,
                item.task.status,
                shorten(item.task.title, 50),
                inbox_why(item),
            )
            for item in group.items
        ]
        table = format_table(("", "ID", "STATUS", "TITLE", "WHY"), rows)
        more = ""
        if group.count > len(group.items):
            more = f"\n  … {group.count - len(group.items)} more (--limit)"
        blocks.append(title + "\n" + indent(table) + more)
    return "\n\n".join(blocks)


@main.group("inbox", invoke_without_command=True)
@click.option("--lane", type=click.Choice(INBOX_LANES), help="Only this lane.")
@click.option("--unread", is_flag=True, help="Only unread items.")
@click.option(
    "--query", metavar="Q", help="Only tasks whose identifier is Q or whose title contains Q."
)
@click.option("--workspace", metavar="W", help="Only this workspace's tasks (path, id or key).")
@click.option(
    "--limit", type=click.IntRange(1, 1000), metavar="N", help="At most N items per lane."
)
@json_option
@click.pass_context
def inbox(
    ctx: click.Context,
    lane: str | None,
    unread: bool,
    query: str | None,
    workspace: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List what needs you, per lane; or triage one item.

    Lanes: approvals (waiting for a manual approval), failed_runs (failed
    tasks), blocked (blocked, or an agent waits for an answer), my_work
    (your open tasks); archived only with --lane archived. A task is in
    one lane at most. An item is unread (*) while its task has activity
    you have not seen; `agh inbox read ID` marks it seen, `dismiss` hides
    it until something new happens, `archive` moves it to the archived
    lane (`unarchive` brings it back). Each prints the triage state.
    --json may come before or after the subcommand.

    \b
    Example:
      agh inbox
      agh inbox --lane approvals --unread
      agh inbox read T-12
      agh inbox archive T-7 --json
    """
    if ctx.invoked_subcommand is not None:
        return
    filters: dict[str, Any] = {
        "lane": lane,
        "query": query,
        "workspace": workspace_ref(workspace),
        "limit": limit,
    }
    filters = {k: v for k, v in filters.items() if v is not None}
    if unread:
        filters["unread"] = True
    with connect(ctx) as client:
        result = client.observe_inbox(**filters)
    if as_json:
        emit_json(result)
        return
    click.echo(format_inbox(result.inbox))


def make_triage_command(action: str, summary: str) -> click.Command:
    @click.argument("task_id", metavar="ID")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, task_id: str, as_json: bool) -> None:
        with connect(ctx) as client:
            result = client.tasks_triage(action, task_id)
        if dep_json(ctx, as_json):
            emit_json(result)
            return
        t = result.triage
        flags = [name for name, on in (("dismissed", t.dismissed), ("archived", t.archived)) if on]
        state = ", ".join(["read" if t.read else "unread", *flags])
        click.echo(f"{task_id}  {state}")

    command.__doc__ = f"""{summary}

    Prints the task and its triage state for you (read, dismissed,
    archived).

    \b
    Example:
      agh inbox {action} T-12
    """
    return inbox.command(action)(command)


make_triage_command("read", "Mark a task's inbox item read, up to its latest activity.")
make_triage_command("dismiss", "Hide a task from your inbox until it has new activity.")
make_triage_command("archive", "Move a task to your archived lane (and mark it read).")
make_triage_command("unarchive", "Bring an archived task back to its lane.")


# -- daemon -----------------------------------------------------------------------


@main.command("ping")
@json_option
@click.pass_context
def ping(ctx: click.Context, as_json: bool) -> None:
    """Check that aghd answers; show its version.

    Also prints its pid, socket and database paths.

    \b
    Example:
      agh ping
      agh --socket /tmp/agh-test/agh.sock ping --json
    """
    with connect(ctx) as client:
        info = client.server_info()
    if as_json:
        emit_json(info)
        return
    click.echo(
        format_fields(
            [
                ("version", f"aghd {info.version} (protocol {info.protocol})"),
                ("pid", info.pid),
                ("socket", info.socket),
                ("database", info.database),
                ("started", info.started_at),
                ("synchronous", info.synchronous),
            ]
        )
    )


def run() -> None:
    """Entry point for ``python -m agh.cli``: same program name as the script."""
    main(prog_name="agh")


if __name__ == "__main__":
    run()
