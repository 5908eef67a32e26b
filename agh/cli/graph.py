"""Task graph commands: ``child``, ``tree``, ``dep add|rm``, ``approve`` and
``deny`` (PROTOCOL ``tasks.children.*``, ``tasks.dependencies.*``,
``tasks.approve``/``reject``, ``tasks.tree``).

Owns: parsing and printing for these commands. Must not: decide what
blocks a task (aghd does; its ``blocking_reason`` is printed as given).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from agh.cli.connect import connect
from agh.cli.group import SafeGroup
from agh.cli.options import (
    CLOSED_STATUSES,
    complete_task_ids,
    group_json,
    json_option,
    run_options,
    task_options,
)
from agh.cli.output import emit_json, format_table, shorten
from agh.cli.tasks import emit_created, new_task_fields

if TYPE_CHECKING:
    from agh import protocol as p


@click.command("approve")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@click.option("--comment", metavar="TEXT", help="Recorded in the task's approval event.")
@json_option
@click.pass_context
def approve(ctx: click.Context, task_id: str, comment: str | None, as_json: bool) -> None:
    """Approve a task waiting for manual approval; its run is queued.

    Prints the task, its approval state and the queued run, or why the run
    still waits (unmet dependencies). Approving a task that needs no
    approval, or one already approved or rejected, fails (exit 4).

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


@click.command("deny")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@click.option("--reason", metavar="TEXT", help="Why; recorded as the task's closed reason.")
@json_option
@click.pass_context
def deny(ctx: click.Context, task_id: str, reason: str | None, as_json: bool) -> None:
    """Reject a task waiting for manual approval.

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


@click.group("dep", cls=SafeGroup)
@json_option
def dep(as_json: bool) -> None:
    """Add or remove a dependency between two tasks.

    `agh dep add ID DEP` makes task ID wait until task DEP has completed;
    `agh dep rm ID DEP` drops that. Both print ID's dependencies after the
    change. A dependency that would close a cycle is refused (exit 4, the
    cycle named). --json may come before or after the subcommand.

    \b
    Example:
      agh dep add T-3 T-2      # T-3 runs after T-2
      agh dep rm T-3 T-2
    """


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
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@click.argument("depends_on", metavar="DEP", shell_complete=complete_task_ids)
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
    if group_json(ctx, as_json):
        emit_json(result)
        return
    emit_dependencies(result)


@dep.command("rm")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@click.argument("depends_on", metavar="DEP", shell_complete=complete_task_ids)
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
    if group_json(ctx, as_json):
        emit_json(result)
        return
    emit_dependencies(result)


@click.command("child")
@click.argument("parent_id", metavar="ID", shell_complete=complete_task_ids)
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
@click.option("-q", "--quiet", is_flag=True, help="Print only the task id (task_…).")
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
    emit_created(result, quiet, as_json)


@click.command("tree")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
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
