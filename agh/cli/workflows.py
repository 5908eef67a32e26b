"""``agh compose``: a workflow (a DAG of steps) from a YAML file
(PROTOCOL ``workflows.compose``; the format is in agh-protocol(7)).

The file is sent as text and validated by aghd, which names the line and
column of every error. Owns: parsing and printing for compose. Must not:
parse the YAML itself (the CLI never imports yaml).
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import click

from agh.cli.connect import connect
from agh.cli.options import json_option, workspace_ref
from agh.cli.output import emit_json, format_fields, json_text, plural, shorten

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agh import protocol as p


def parse_vars(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    """``--var k=v`` options to a dict of strings (a later k wins)."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", ctx, param)
        result[key] = value
    return result


@click.command("compose")
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
    YAML errors name the line and column (exit 2).

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
