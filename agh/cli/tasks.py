"""Task commands: ``add``, ``ls``, ``show``, ``publish``, ``start``, ``send``,
``cancel``, ``rm`` and ``wait`` (PROTOCOL ``tasks.*``).

Tasks are named by id, identifier (``T-42``) or unique id prefix; aghd
resolves all three, and lists the candidates of an ambiguous prefix.
Owns: parsing and printing for these commands. Must not: know the wire
format (the client does).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from agh.cli.connect import connect
from agh.cli.exits import EXIT_FAILED
from agh.cli.names import agent_names, run_agent
from agh.cli.options import (
    ACTIVE_RUN_STATUSES,
    CLOSED_STATUSES,
    JSON,
    PRIORITIES,
    TASK_STATUSES,
    complete_task_ids,
    confirm_or_stop,
    json_option,
    require_confirmation,
    run_options,
    task_options,
    workspace_ref,
    yes_option,
)
from agh.cli.output import (
    actor_text,
    age,
    emit_json,
    format_fields,
    format_table,
    indent,
    json_text,
    plural,
    shorten,
    status_text,
    terminal_width,
)
from agh.errors import AghError

if TYPE_CHECKING:
    from collections.abc import Callable

    from agh import protocol as p
    from agh.client import Client


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


@click.command("add")
@click.argument("title", required=False)
@task_options
@click.option(
    "--workspace",
    metavar="PATH",
    help="Workspace directory (made absolute; `.` is the current directory).",
)
@run_options
@click.option("--draft", is_flag=True, help="Create a draft: not published, no run.")
@click.option("--description", metavar="TEXT", help="Longer description of the work.")
@click.option(
    "--stdin", "from_stdin", is_flag=True, help="Read the title from stdin (also: TITLE -)."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the task id (task_…).")
@json_option
@click.pass_context
def add(
    ctx: click.Context,
    title: str | None,
    priority: str | None,
    channel: str | None,
    approval: str | None,
    workspace: str | None,
    max_attempts: int | None,
    input_: Any,
    draft: bool,
    description: str | None,
    from_stdin: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Create a task and queue its run (unless --draft).

    TITLE - (or --stdin) reads the title from stdin: its first line, the
    rest (if any) becoming the description unless --description is given.

    \b
    Example:
      agh add "Fix the flaky login test" --priority high --workspace .
      git log -1 --format=%B | agh add - --channel review
      agh add "Summarise the logs" --input '{"since": "1h"}' --json
      agh add "Plan the migration" --draft --description "Only a sketch"
      agh add "Deploy to production" --approval manual
    """
    title, description = title_and_description(ctx, title, from_stdin, description)
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
    emit_created(result, quiet, as_json)


def emit_created(result: p.TaskRunResult, quiet: bool, as_json: bool) -> None:
    """A new task: the result (--json), its id (-q) or its line."""
    if as_json:
        emit_json(result)
    elif quiet:
        click.echo(result.task.id)
    else:
        click.echo(task_run_line(result))


def text_argument(ctx: click.Context, value: str | None, from_stdin: bool, what: str) -> str:
    """An argument's text, or stdin's when it is ``-`` or ``--stdin`` was
    given (one trailing newline dropped). Empty text is a usage error."""
    if from_stdin or value == "-":
        if from_stdin and value not in (None, "-"):
            raise click.UsageError(f"give {what} or --stdin, not both", ctx)
        value = sys.stdin.read().removesuffix("\n")
    if value is None:
        raise click.UsageError(f"missing {what} (or - / --stdin to read it)", ctx)
    if not value.strip():
        raise click.BadParameter(f"the {what.lower()} is empty", ctx, param_hint=what)
    return value


def title_and_description(
    ctx: click.Context, title: str | None, from_stdin: bool, description: str | None
) -> tuple[str, str | None]:
    text = text_argument(ctx, title, from_stdin, "TITLE")
    if not (from_stdin or title == "-"):
        return text, description
    first, _, rest = text.strip().partition("\n")
    return first.strip(), description if description is not None else (rest.strip() or None)


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


# Columns of `agh ls -c`: header, and the cell of a row. TITLE is cut to
# the terminal's width; the others are short.
LS_COLUMNS: dict[str, str] = {
    "id": "TASK ID",
    "identifier": "ID",
    "status": "STATUS",
    "priority": "PRIORITY",
    "channel": "CHANNEL",
    "run": "RUN",
    "agent": "AGENT",
    "attempt": "ATTEMPT",
    "created": "CREATED",
    "updated": "UPDATED",
    "workspace": "WORKSPACE",
    "title": "TITLE",
}
LS_DEFAULT = ("identifier", "status", "priority", "run", "agent", "updated", "title")


def ls_cell(item: p.TaskListItem, column: str, names: dict[str, str]) -> str:
    run = item.active_run
    cells: dict[str, Callable[[], str]] = {
        "id": lambda: item.id,
        "identifier": lambda: item.identifier,
        "status": lambda: status_text(item.status),
        "priority": lambda: item.priority,
        "channel": lambda: item.network_channel or "-",
        "run": lambda: status_text(run.status) if run else "-",
        "agent": lambda: run_agent(run, names) or "-",
        "attempt": lambda: f"{run.attempt}/{item.max_attempts}" if run else "-",
        "created": lambda: age(item.created_at),
        "updated": lambda: age(item.last_activity_at or item.updated_at),
        "workspace": lambda: item.workspace_id or "-",
        "title": lambda: " ".join(item.title.split()),
    }
    return cells[column]()


def parse_columns(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """``-c id,title -c status`` → ("id", "title", "status"); names checked."""
    columns = tuple(c.strip().lower() for v in values for c in v.split(",") if c.strip())
    unknown = [c for c in columns if c not in LS_COLUMNS]
    if unknown:
        raise click.BadParameter(
            f"unknown column {unknown[0]!r}; choose from {', '.join(LS_COLUMNS)}", ctx, param
        )
    return columns


@click.command("ls")
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
@click.option(
    "-c",
    "--column",
    "columns",
    multiple=True,
    callback=parse_columns,
    metavar="COLS",
    help="Columns to show, comma-separated or repeated: " + ", ".join(LS_COLUMNS) + ".",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only task ids (task_…), one a line.")
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
    columns: tuple[str, ...],
    quiet: bool,
    as_json: bool,
) -> None:
    """List tasks as a table.

    RUN is the status of the task's active run (- when it has none) and
    AGENT the agent holding it; UPDATED is the task's last activity.
    On a terminal the title is cut to its width; in a pipe it is whole.

    \b
    Example:
      agh ls
      agh ls --status ready --priority urgent
      agh ls -c identifier,status,title --workspace .
      agh ls --all -q | xargs agh cancel --yes
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
    columns = columns or LS_DEFAULT
    with connect(ctx) as client:
        result = client.tasks_list(**filters)
        names: dict[str, str] = {}
        if "agent" in columns and not (as_json or quiet):
            names = agent_names(
                client, (t.active_run.session_id for t in result.tasks if t.active_run)
            )
    if as_json:
        emit_json(result)
        return
    if quiet:
        for item in result.tasks:
            click.echo(item.id)
    elif not result.tasks:
        click.echo("no tasks", err=True)
    else:
        rows = [[ls_cell(item, c, names) for c in columns] for item in result.tasks]
        flex = columns.index("title") if "title" in columns else None
        headers = [LS_COLUMNS[c] for c in columns]
        click.echo(format_table(headers, rows, flex=flex, width=terminal_width()))
    if result.next_cursor:
        click.echo(f"more tasks: agh ls --cursor {result.next_cursor}", err=True)


@click.command("show")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
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
    """Show a task (or a run) with its runs and recent events.

    ID is the task's identifier (T-42), id (task_…) or a unique prefix of
    its id; given a run id (run_…) it shows that run, as `agh run show`.

    \b
    Example:
      agh show T-42
      agh show task_01kbx3 --json
      agh show run_01kbx4
    """
    with connect(ctx) as client:
        if task_id.startswith("run_"):
            from agh.cli.runs import show_run

            show_run(client, task_id, as_json)
            return
        result = client.tasks_get(task_id)
        names = {} if as_json else agent_names(client, (r.session_id for r in result.task.runs))
    if as_json:
        emit_json(result)
        return
    click.echo(format_task_detail(result.task, events, names))


def format_task_detail(
    detail: p.TaskDetail, max_events: int = 10, names: dict[str, str] | None = None
) -> str:
    """The readable form of a ``tasks.get`` result."""
    task = detail.task
    summary = detail.summary
    origin = task.origin.kind if task.origin else None
    pairs: list[tuple[str, Any]] = [
        ("Task", f"{task.identifier}  {task.id}"),
        ("Title", task.title),
        ("Status", status_text(task.status)),
        ("Priority", task.priority),
        ("Channel", task.network_channel),
        ("Workspace", task.workspace_id),
        ("Owner", actor_text(task.owner)),
        (
            "Created",
            f"{task.created_at} by {actor_text(task.created_by)}"
            + (f" via {origin}" if origin else ""),
        ),
        ("Updated", f"{task.updated_at} ({age(task.updated_at)})"),
        ("Closed", task.closed_at and f"{task.closed_at} ({age(task.closed_at)})"),
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
                status_text(run.status),
                str(run.attempt),
                run_agent(run, names or {}) or "-",
                age(run.lease_until) if run.ended_at is None and run.lease_until else "-",
                shorten(run.error or "", 50) or "-",
            )
            for run in detail.runs
        ]
        table = format_table(("RUN", "STATUS", "ATTEMPT", "AGENT", "LEASE ENDS", "ERROR"), rows)
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


@click.command("publish")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@json_option
@click.pass_context
def publish(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Publish a draft: make it live and queue its run.

    Prints the task and its queued run, or what it waits for (approval,
    dependencies) when something still blocks it. A run requested with
    `agh start` while it was a draft is the one queued, with its --input.

    \b
    Example:
      agh add "Plan the migration" --draft -q      # task_01kb…
      agh publish T-7
    """
    with connect(ctx) as client:
        result = client.tasks_publish(task_id)
    if as_json:
        emit_json(result)
        return
    click.echo(task_run_line(result))


@click.command("start")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
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


def confirm_subtrees(client: Client, task_ids: tuple[str, ...], verb: str, tail: str) -> None:
    """Ask once for all the tasks: what each subtree holds, then ``tail``."""
    lines = []
    active = 0
    for task_id in task_ids:
        tree = client.tasks_tree(task_id).tree
        counts = subtree_counts(tree)
        active += counts.active_runs
        root = tree.root.task
        lines.append(
            f"  {root.identifier} ({shorten(root.title, 40)}): "
            f"{plural(counts.tasks, 'task')} ({counts.open_tasks} open), "
            f"{plural(counts.active_runs, 'active run')}, "
            f"{plural(counts.queued_runs, 'queued run')}"
        )
    click.echo(f"{verb} {plural(len(task_ids), 'task')} and their subtrees:", err=True)
    click.echo("\n".join(lines), err=True)
    question = tail
    if verb == "Delete" and active:
        question = (
            f"{plural(active, 'active run')}: aghd refuses those until they are canceled. " + tail
        )
    done = "canceled" if verb == "Cancel" else "deleted"
    confirm_or_stop(question, f"{', '.join(task_ids)} not {done}")


def for_each_task(task_ids: tuple[str, ...], act: Callable[[str], Any]) -> list[Any]:
    """Apply ``act`` to each task in turn; on an error, say which tasks
    were already done before it goes on to exit with the error's code."""
    done: list[Any] = []
    for task_id in task_ids:
        try:
            done.append(act(task_id))
        except AghError as exc:
            if done:
                click.echo(
                    f"agh: stopped at {task_id}; done before it: "
                    + ", ".join(task_ids[: len(done)]),
                    err=True,
                )
            raise exc from None
    return done


@click.command("cancel")
@click.argument(
    "task_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_task_ids
)
@click.option("--reason", metavar="TEXT", help="Why; recorded on every canceled task.")
@yes_option
@json_option
@click.pass_context
def cancel(
    ctx: click.Context, task_ids: tuple[str, ...], reason: str | None, yes: bool, as_json: bool
) -> None:
    """Cancel tasks and everything under them, active runs included.

    Every open task of each subtree is canceled; queued and running runs
    end as canceled, and their agents get lease_lost on their next call.
    Without --yes, asks first, saying how many tasks and runs it affects;
    when stdin is not a terminal, --yes is required (exit 2 without it).
    Tasks are canceled in the order given; an error stops there. --json
    prints {"tasks": [...]}, the canceled tasks.

    \b
    Example:
      agh cancel T-1
      agh cancel T-1 T-2 --reason "superseded by T-9" --yes
      agh ls --status ready -q | xargs agh cancel -y
    """
    ask = require_confirmation(ctx, yes, f"cancel {', '.join(task_ids)} and their subtrees")
    with connect(ctx) as client:
        if ask:
            confirm_subtrees(client, task_ids, "Cancel", "Continue?")
        results = for_each_task(task_ids, lambda t: client.tasks_cancel(t, reason=reason).task)
    if as_json:
        emit_json({"tasks": results})
        return
    for task in results:
        line = f"{task.identifier}  {status_text(task.status)}"
        if task.closed_reason and task.closed_reason != task.status:
            line += f"  ({task.closed_reason})"
        click.echo(line)


@click.command("rm")
@click.argument(
    "task_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_task_ids
)
@yes_option
@json_option
@click.pass_context
def rm(ctx: click.Context, task_ids: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Delete tasks and their subtrees, with their runs and events.

    Refused (exit 4) while any task of a subtree has an active run:
    `agh cancel` it first. Tasks outside the subtree that depended on a
    deleted task lose that dependency. Without --yes, asks first; when
    stdin is not a terminal, --yes is required (exit 2 without it).
    With --json prints {"deleted": [ids]}, the task ids (task_…).

    \b
    Example:
      agh rm T-7
      agh rm T-7 T-8 -y
    """
    ask = require_confirmation(ctx, yes, f"delete {', '.join(task_ids)} and their subtrees")
    with connect(ctx) as client:
        if ask:
            confirm_subtrees(
                client, task_ids, "Delete", "Delete them with their runs and events, for good?"
            )

        def delete(ref: str) -> p.Task:
            # Resolved first, so the output names the task (not a prefix) and
            # the delete is by its id.
            task = client.tasks_get(ref).task.task
            client.tasks_delete(task.id)
            return task

        deleted = for_each_task(task_ids, delete)
    if as_json:
        emit_json({"deleted": [task.id for task in deleted]})
        return
    for task in deleted:
        click.echo(f"deleted {task.identifier}")


@click.command("send")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
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
    Sending answers a question the agent asked. Give MESSAGE, or - or
    --stdin to read it (one trailing newline is dropped).

    \b
    Example:
      agh send T-42 "please also update the docs"
      git diff | agh send T-42 -
    """
    message = text_argument(ctx, message, from_stdin, "MESSAGE")
    with connect(ctx) as client:
        result = client.tasks_send(task_id, message)
    if as_json:
        emit_json(result)
    elif result.delivered:
        click.echo(f"{task_id}: delivered to the running agent (run {result.message.run_id})")
    else:
        click.echo(f"{task_id}: no run holds it now; queued for its next run")


@click.command("wait")
@click.argument(
    "task_ids", metavar="ID...", nargs=-1, required=True, shell_complete=complete_task_ids
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; only the exit status tells.")
@json_option
@click.pass_context
def wait(ctx: click.Context, task_ids: tuple[str, ...], quiet: bool, as_json: bool) -> None:
    """Wait until tasks are closed; exit 0 if all completed.

    Blocks until every task is completed, failed or canceled (or deleted),
    printing each as it closes. Exits 0 when all completed, 1 when one
    failed, was canceled or was deleted, as pueue's wait does. Follows the
    event stream, so it wakes as soon as a task closes; exits 69 if aghd
    stops meanwhile. For a deadline, run it under timeout(1): `timeout 600
    agh wait T-1`.

    \b
    Example:
      agh wait T-1 T-2 && echo "all done"
      id=$(agh add "Build the docs" -q) && agh wait "$id"
    """
    with connect(ctx) as client:
        closed = wait_closed(
            client, task_ids, lambda t: None if quiet else report_closed(t, as_json)
        )
    if any(status != "completed" for status in closed.values()):
        raise click.exceptions.Exit(EXIT_FAILED)


def report_closed(task: p.Task | str, as_json: bool) -> None:
    if isinstance(task, str):
        deleted = {"id": task, "status": "deleted"}
        click.echo(json_text(deleted) if as_json else f"{task}  deleted")
    elif as_json:
        click.echo(json_text({"task": task}))
    else:
        click.echo(f"{task.identifier}  {status_text(task.status)}")


def wait_closed(
    client: Client, refs: tuple[str, ...], closed_one: Callable[[p.Task | str], None]
) -> dict[str, str]:
    """Task id → final status (``deleted`` for a deleted task) once every
    task named by ``refs`` is closed; ``closed_one`` is told of each."""
    from agh.errors import NotFound

    # Subscribe first, then read each task: a task closing in between is
    # then either seen closed by the read or announced by the stream.
    client.events_subscribe()
    open_ids: set[str] = set()
    closed: dict[str, str] = {}

    def check(task_id: str) -> None:
        try:
            task = client.tasks_get(task_id).task.task
        except NotFound:
            if task_id.startswith("task_"):
                closed[task_id] = "deleted"
                open_ids.discard(task_id)
                closed_one(task_id)
                return
            raise
        if task.status in CLOSED_STATUSES:
            closed[task.id] = task.status
            open_ids.discard(task.id)
            closed_one(task)
        else:
            open_ids.add(task.id)

    for ref in dict.fromkeys(refs):
        check(ref)
    while open_ids:
        try:
            event = client.next_event(timeout=_WAIT_RECHECK_S)
        except TimeoutError:
            event = None
        item = event.timeline if event is not None else None
        if event is None or event.type == "overflow":
            # A quiet stream or lost events: read every open task again.
            for task_id in list(open_ids):
                check(task_id)
        elif item is not None and item.task is not None and item.task.id in open_ids:
            check(item.task.id)
    return closed


# `agh wait` reads its open tasks again this often even without events: a
# safety net should an event never come. (aghd going away ends the wait
# with exit 69: the stream, and so the wait, cannot go on.)
_WAIT_RECHECK_S = 30.0
