"""Workflows composed from YAML: a root task (kind ``workflow``) whose
children are the steps (kind ``task``, or ``group`` for an inline branch),
wired by dependencies. Parsing and validation live in
``aghd.workflow_spec``; this module turns a parsed workflow into rows, and
starts (or restarts) the DAG.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from agh.errors import Conflict, InvalidParams, NotFound
from aghd.store import graph
from aghd.store import tasks as tasks_store
from aghd.store.db import Caller, Tx, from_json, new_id, to_json
from aghd.workflow_spec import Step, Workflow


def find_workflow(tx: Tx, ref: str) -> sqlite3.Row:
    """A workflow by ``wf_…`` id, or by its root task's id or identifier."""
    if ref.startswith("wf_"):
        row = tx.one("SELECT * FROM workflows WHERE id = ?", (ref,))
    else:
        task = tasks_store.find_task(tx, ref)
        row = tx.one("SELECT * FROM workflows WHERE root_task_id = ?", (task["id"],))
    if row is None:
        raise NotFound(
            f"workflow {ref} not found",
            {"workflow": ref, "hint": "pass a wf_… id or the workflow's root task (agh ls)"},
        )
    return row


def _open_run(tx: Tx, workflow_id: str) -> sqlite3.Row | None:
    return tx.one(
        "SELECT r.id, r.status, t.identifier, t.step_id FROM runs r"
        " JOIN tasks t ON t.id = r.task_id WHERE t.workflow_id = ? AND r.ended_at IS NULL LIMIT 1",
        (workflow_id,),
    )


def _refuse_while_running(tx: Tx, workflow_id: str, root: sqlite3.Row, action: str) -> None:
    run = _open_run(tx, workflow_id)
    if run is not None:
        raise Conflict(
            f"cannot {action} workflow {root['identifier']}: step {run['step_id']} "
            f"({run['identifier']}) has run "
            f"{run['id']} ({run['status']}); wait for it to finish or cancel the workflow "
            f"(tasks.cancel {root['identifier']})",
            {"task_id": root["id"], "run_id": run["id"], "status": run["status"]},
        )


def _step_spec(step: Step) -> str | None:
    """What a step's runs need (their input) and its conditions."""
    if step.action == "branch":
        return None
    return to_json(
        {
            "action": step.action,
            "tool": step.tool,
            "inputs": step.inputs,
            "task_ref": step.task_ref,
            "conditions": [
                {
                    "field": c.field,
                    "step": c.step,
                    "path": list(c.path),
                    "op": c.op,
                    "value": c.value,
                }
                for c in step.conditions
            ],
        }
    )


def _referenced_task(tx: Tx, step: Step) -> sqlite3.Row:
    """The task a ``sub_task`` step copies; a missing one is a YAML error."""
    assert step.task_ref is not None
    try:
        return tasks_store.find_task(tx, step.task_ref)
    except NotFound:
        raise InvalidParams(
            f"workflow YAML line {step.line}, column {step.column}: step '{step.id}' "
            f"references task {step.task_ref}, which does not exist; create it first or "
            "fix the reference (agh ls)",
            {"field": "$.params.yaml", "line": step.line, "column": step.column},
        ) from None


def check_references(tx: Tx, wf: Workflow) -> None:
    """What a dry run checks beyond the YAML itself: referenced tasks exist."""
    for step in wf.steps:
        if step.task_ref is not None:
            _referenced_task(tx, step)


def _new_step(
    tx: Tx,
    caller: Caller,
    step: Step,
    *,
    workflow_id: str,
    parent_id: str,
    root: sqlite3.Row,
    default_max_attempts: int,
) -> tasks_store.NewTask:
    title, description = step.title, step.description
    priority, channel = step.priority, step.network_channel
    max_attempts, metadata = step.max_attempts, step.metadata
    if step.task_ref is not None:
        # A sub_task copies the referenced task's definition; the step's own
        # keys win.
        ref = _referenced_task(tx, step)
        title = title if title != step.id else ref["title"]
        description = description or ref["description"]
        priority = priority or ref["priority"]
        channel = channel or ref["network_channel"]
        max_attempts = max_attempts or ref["max_attempts"]
        metadata = metadata if metadata is not None else from_json(ref["metadata"])
    return tasks_store.NewTask(
        title=title,
        description=description,
        scope=root["scope"],
        workspace=root["workspace_id"],
        owner_kind=root["owner_kind"],
        owner_ref=root["owner_ref"],
        origin_kind=caller.origin_kind,
        origin_ref=caller.origin_ref,
        priority=priority or root["priority"],
        network_channel=channel,
        max_attempts=max_attempts or default_max_attempts,
        metadata=metadata,
        approval_policy=step.approval,
        parent_task_id=parent_id,
        kind="group" if step.action == "branch" else "task",
        workflow_id=workflow_id,
        step_id=step.id,
        step_spec=_step_spec(step),
    )


def _create_steps(
    tx: Tx,
    caller: Caller,
    wf: Workflow,
    *,
    workflow_id: str,
    root: sqlite3.Row,
    default_max_attempts: int,
) -> None:
    task_ids: dict[str, str] = {}
    for step in wf.steps:  # parents and dependencies come first
        parent_id = root["id"] if step.parent is None else task_ids[step.parent]
        new = _new_step(
            tx,
            caller,
            step,
            workflow_id=workflow_id,
            parent_id=parent_id,
            root=root,
            default_max_attempts=default_max_attempts,
        )
        row = tasks_store.create_task(tx, caller, new)
        task_ids[step.id] = row["id"]
        if step.depends_on:
            graph.add_initial_dependencies(tx, row["id"], [task_ids[d] for d in step.depends_on])


def compose(
    tx: Tx,
    caller: Caller,
    wf: Workflow,
    *,
    source: str,
    variables: dict[str, Any],
    update: str | None,
    owner: tuple[str, str | None],
    workspace: str | None,
    default_max_attempts: int,
) -> tuple[sqlite3.Row, sqlite3.Row]:
    """Create the workflow (root task + one task per step), or replace the
    steps of workflow ``update`` when none of its runs is open. Returns
    (workflow row, root task row)."""
    if update is not None:
        existing = find_workflow(tx, update)
        root = tasks_store.task_by_id(tx, existing["root_task_id"])
        _refuse_while_running(tx, existing["id"], root, "update")
        for child in tasks_store.children(tx, root["id"], limit=1_000_000):
            tasks_store.delete_task(tx, caller, child["id"])
        tx.execute(
            "UPDATE tasks SET title = ?, description = ?, status = 'pending', closed_at = NULL,"
            " closed_reason = NULL, blocking_reason = NULL, skipped = 0, updated_at = ?"
            " WHERE id = ?",
            (wf.name, wf.description, tx.now, root["id"]),
        )
        root = tasks_store.task_by_id(tx, root["id"])
        workflow = tx.one(
            "UPDATE workflows SET name = ?, description = ?, source = ?, vars = ?,"
            " version = version + 1, updated_at = ? WHERE id = ? RETURNING *",
            (wf.name, wf.description, source, to_json(variables), tx.now, existing["id"]),
        )
        assert workflow is not None
        event = "workflow.updated"
    else:
        workflow_id = new_id("wf")
        root = tasks_store.create_task(
            tx,
            caller,
            tasks_store.NewTask(
                title=wf.name,
                description=wf.description,
                workspace=workspace,
                owner_kind=owner[0],
                owner_ref=owner[1],
                origin_kind=caller.origin_kind,
                origin_ref=caller.origin_ref,
                kind="workflow",
                workflow_id=workflow_id,
            ),
        )
        workflow = tx.one(
            "INSERT INTO workflows (id, name, description, source, vars, root_task_id,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?) RETURNING *",
            (
                workflow_id,
                wf.name,
                wf.description,
                source,
                to_json(variables),
                root["id"],
                tx.now,
                tx.now,
            ),
        )
        assert workflow is not None
        event = "workflow.composed"
    _create_steps(
        tx,
        caller,
        wf,
        workflow_id=workflow["id"],
        root=root,
        default_max_attempts=default_max_attempts,
    )
    tx.emit(
        event,
        caller,
        task_id=root["id"],
        payload={"workflow_id": workflow["id"], "version": workflow["version"]},
    )
    return workflow, root


def start(tx: Tx, caller: Caller, root: sqlite3.Row, input_value: Any) -> sqlite3.Row:
    """Run the whole DAG afresh: every step gets a run requested (new runs,
    same tasks); steps with no dependencies are queued now, the rest as
    their dependencies complete. Refused while any step has an open run."""
    workflow_id = root["workflow_id"]
    _refuse_while_running(tx, workflow_id, root, "start")
    steps = tx.all(
        "SELECT * FROM tasks WHERE workflow_id = ? AND kind = 'task' ORDER BY id", (workflow_id,)
    )
    if not steps:
        raise Conflict(
            f"workflow {root['identifier']} has no steps to run",
            {"task_id": root["id"]},
        )
    tx.execute(
        "UPDATE tasks SET status = 'pending', closed_at = NULL, closed_reason = NULL,"
        " skipped = 0, blocking_reason = NULL, updated_at = ?"
        " WHERE workflow_id = ? AND kind != 'task'",
        (tx.now, workflow_id),
    )
    for step in steps:
        spec = from_json(step["step_spec"]) or {}
        run_input = {
            "workflow_id": workflow_id,
            "step": step["step_id"],
            "action": spec.get("action"),
            "tool": spec.get("tool"),
            "inputs": spec.get("inputs", {}),
            "task_ref": spec.get("task_ref"),
            "input": input_value,
        }
        tx.execute(
            "UPDATE tasks SET status = 'pending', closed_at = NULL, closed_reason = NULL,"
            " skipped = 0, blocking_reason = NULL, run_requested = 1, requested_input = ?,"
            " requested_key = NULL, approval_state = CASE approval_policy"
            " WHEN 'manual' THEN 'pending' ELSE 'not_required' END, approved_by_kind = NULL,"
            " approved_by_ref = NULL, approved_at = NULL, updated_at = ? WHERE id = ?",
            (to_json(run_input), tx.now, step["id"]),
        )
    tx.emit("workflow.started", caller, task_id=root["id"], payload={"steps": len(steps)})
    for step in steps:
        graph.refresh(tx, caller, tasks_store.task_by_id(tx, step["id"]))
    # Containers follow their steps: settle one step per container.
    for parent_id in dict.fromkeys(s["parent_task_id"] for s in steps):
        first = next(s for s in steps if s["parent_task_id"] == parent_id)
        graph.settle(tx, caller, first["id"], parent_id)
    return tasks_store.task_by_id(tx, root["id"])
