"""The ``agh`` command line: argument parsing, output and exit codes over
``agh.client.Client``.

This module owns how results look (a readable table or one ``--json``
document on stdout, diagnostics on stderr) and what each failure exits
with. It never talks to the socket itself and must stay light: ``agh --help``
may import click, msgspec and platformdirs, never aghd, anyio, watchfiles,
uvloop or yaml. The client is imported inside the command that connects.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

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
    if hint:
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
    stdout). Data goes to stdout, diagnostics and errors to stderr.

    \b
    Exit status:
      0   success
      1   the operation failed: aghd returned an error (printed as
          "agh: <message>" with a hint), or `agh claim` found no work
      2   usage error: unknown option, bad value, invalid JSON in
          --input/--result
      69  aghd cannot be reached on the socket (EX_UNAVAILABLE): it is
          not running, did not answer in time, or the socket is not
          yours; the message says which and what to do

    \b
    Example:
      agh add "Write the release notes" --priority high
      agh ls
      agh claim --wait 30
    """


# -- tasks ------------------------------------------------------------------------


@main.command("add")
@click.argument("title")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Priority. [default: medium]")
@click.option("--channel", metavar="NAME", help="Network channel agents can claim by.")
@click.option(
    "--workspace",
    metavar="PATH",
    help="Workspace directory (made absolute; `.` is the current directory).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    metavar="N",
    help="How many claims the run may take before the task fails. [default: 1]",
)
@click.option("--input", "input_", type=JSON, metavar="JSON", help="JSON input handed to the run.")
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
    """
    fields: dict[str, Any] = {"start": not draft, "draft": draft}
    if priority is not None:
        fields["priority"] = priority
    if channel is not None:
        fields["network_channel"] = channel
    if workspace is not None:
        fields["workspace"] = os.path.abspath(os.path.expanduser(workspace))
    if max_attempts is not None:
        fields["max_attempts"] = max_attempts
    if input_ is not None:
        fields["input"] = input_
    if description is not None:
        fields["description"] = description
    with connect(ctx) as client:
        result = client.tasks_create(title, **fields)
    if as_json:
        emit_json(result)
        return
    task = result.task
    if quiet:
        click.echo(task.identifier)
        return
    line = f"{task.identifier}  {task.id}  {task.status}"
    if result.run is not None:
        line += f"  run {result.run.id} {result.run.status}"
    click.echo(line)


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
