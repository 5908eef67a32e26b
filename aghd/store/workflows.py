"""Workflows composed from YAML: a root task (kind ``workflow``) whose
children are the steps (kind ``task``, or ``group`` for an inline branch),
wired by dependencies.

Owns: turning a parsed workflow into rows; updating it to a new version of
its definition without destroying finished work (a step task that has runs
or messages is never deleted, whatever the new file says: the update is
refused instead when the new file has no place for it); and starting (or
restarting) the DAG, also when ``tasks.start`` names the root
(``start_task_or_workflow`` is the entry point that starts any task). Must
not: parse or validate YAML (``aghd.workflows``), or judge what blocks
a step (``graph``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from agh.errors import Conflict, InvalidParams, NotFound
from aghd.store.db import Caller, Tx, from_json, new_id, to_json
from aghd.store.models import WAITING, NewTask, Started
from aghd.store.progress import refresh, settle
from aghd.store.rows import find_task, subtree_ids, task_by_id
from aghd.store.tasks import add_initial_dependencies, create_task, start_task_row

if TYPE_CHECKING:
    import sqlite3

    from aghd.workflows.model import Step, Workflow


def find_workflow(tx: Tx, ref: str) -> sqlite3.Row:
    """A workflow by ``wf_…`` id, or by its root task's id or identifier."""
    if ref.startswith("wf_"):
        row = tx.one("SELECT * FROM workflows WHERE id = ?", (ref,))
    else:
        task = find_task(tx, ref)
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
        return find_task(tx, step.task_ref)
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
) -> NewTask:
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
    return NewTask(
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
        row = create_task(tx, caller, new)
        task_ids[step.id] = row["id"]
        if step.depends_on:
            add_initial_dependencies(tx, row["id"], [task_ids[d] for d in step.depends_on])


def compose(
    tx: Tx,
    caller: Caller,
    wf: Workflow,
    *,
    source: str,
    variables: dict[str, Any],
    owner: tuple[str, str | None],
    workspace: str | None,
    default_max_attempts: int,
) -> tuple[sqlite3.Row, sqlite3.Row]:
    """Create the workflow: a root task and one task per step, all pending.
    Returns (workflow row, root task row)."""
    workflow_id = new_id("wf")
    root = create_task(
        tx,
        caller,
        NewTask(
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
    _create_steps(
        tx,
        caller,
        wf,
        workflow_id=workflow_id,
        root=root,
        default_max_attempts=default_max_attempts,
    )
    tx.emit(
        "workflow.composed",
        caller,
        task_id=root["id"],
        payload={"workflow_id": workflow_id, "version": workflow["version"]},
    )
    return workflow, root


# -- update: a new version of the definition --------------------------------


@dataclass(slots=True)
class _OldStep:
    row: sqlite3.Row
    # Runs and messages of the step's task and of every task under it: what
    # an update must never delete.
    runs: int = 0
    messages: int = 0

    @property
    def has_run(self) -> bool:
        return self.runs > 0 or self.messages > 0


@dataclass(slots=True)
class UpdatePlan:
    """What updating a workflow to a new definition does to its step tasks.

    A step of the new definition whose full id and kind (task or branch)
    match a step of the current one takes over that step's task (same id
    and identifier); every other step gets a new task. ``kept`` lists the
    taken-over steps that have run: their status, runs, results, logs,
    messages and events stay as they are. ``changed`` lists those among them
    whose definition changed. ``removed`` lists the steps that are not in the
    new definition; they never ran, so their tasks are deleted.
    """

    workflow: sqlite3.Row
    root: sqlite3.Row
    reuse: dict[str, _OldStep] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    delete: list[sqlite3.Row] = field(default_factory=list)
    # Taken-over steps that wait for other steps than before.
    rewired: set[str] = field(default_factory=set)


def _old_steps(tx: Tx, workflow_id: str, root_id: str) -> dict[str, _OldStep]:
    """The workflow's step tasks by full step id, each with the runs and
    messages of its whole subtree (a task added under a step with
    ``tasks.children.create`` counts for the step)."""
    rows = tx.all(
        "WITH RECURSIVE sub(id, depth) AS (SELECT id, 1 FROM tasks WHERE parent_task_id = ?"
        " UNION ALL SELECT t.id, sub.depth + 1 FROM tasks t JOIN sub ON t.parent_task_id = sub.id)"
        " SELECT tasks.*,"
        " (SELECT count(*) FROM runs r WHERE r.task_id = tasks.id) AS run_count,"
        " (SELECT count(*) FROM run_messages m WHERE m.task_id = tasks.id) AS message_count"
        " FROM sub JOIN tasks ON tasks.id = sub.id ORDER BY sub.depth, tasks.id",
        (root_id,),
    )
    totals = {r["id"]: [r["run_count"], r["message_count"]] for r in rows}
    parent = {r["id"]: r["parent_task_id"] for r in rows}
    # Deepest first: each subtree is summed into its task before that task
    # is added to its own parent.
    for row in reversed(rows):
        up = parent[row["id"]]
        if up in totals:
            totals[up][0] += totals[row["id"]][0]
            totals[up][1] += totals[row["id"]][1]
    return {
        r["step_id"]: _OldStep(r, *totals[r["id"]])
        for r in rows
        if r["workflow_id"] == workflow_id and r["step_id"] is not None
    }


def _kind(step: Step) -> str:
    return "group" if step.action == "branch" else "task"


def _definition(new: NewTask) -> dict[str, Any]:
    """The columns of a step's task that its definition sets."""
    return {
        "title": new.title,
        "description": new.description,
        "priority": new.priority,
        "network_channel": new.network_channel,
        "max_attempts": new.max_attempts,
        "metadata": to_json(new.metadata),
        "approval_policy": new.approval_policy,
        "step_spec": new.step_spec,
    }


def _depends_on(tx: Tx, task_id: str, step_ids: dict[str, str]) -> set[str]:
    """The step ids a step task waits for (edges to tasks outside the
    workflow are not part of its definition)."""
    return {
        step_ids[r[0]]
        for r in tx.all(
            "SELECT depends_on_task_id FROM task_dependencies WHERE task_id = ?", (task_id,)
        )
        if r[0] in step_ids
    }


def _refuse_losing_runs(root: sqlite3.Row, lost: list[tuple[_OldStep, str]]) -> NoReturn:
    parts = []
    for old, why in lost:
        row = old.row
        what = [f"{old.runs} run{'s' if old.runs != 1 else ''}"]
        if old.messages:
            what.append(f"{old.messages} message{'s' if old.messages != 1 else ''}")
        parts.append(f"{row['step_id']} ({row['identifier']}: {' and '.join(what)}; {why})")
    shown = "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")
    raise Conflict(
        f"cannot update workflow {root['identifier']}: {len(parts)} step"
        f"{'s' if len(parts) != 1 else ''} that ran would lose their tasks with their runs, "
        f"results, logs and events: {shown}. Keep those steps in the file (with the same id "
        "and kind, a step keeps its task and runs and takes its new definition), compose the "
        "new file as a separate workflow (without update), or delete this workflow first "
        f"(tasks.delete {root['identifier']}, which deletes all its runs) and compose again",
        {
            "task_id": root["id"],
            "steps": [
                {
                    "step": old.row["step_id"],
                    "task_id": old.row["id"],
                    "identifier": old.row["identifier"],
                    "runs": old.runs,
                    "messages": old.messages,
                    "reason": why,
                }
                for old, _why in lost
            ],
        },
    )


def plan_update(
    tx: Tx, caller: Caller, wf: Workflow, ref: str, default_max_attempts: int
) -> UpdatePlan:
    """What ``compose`` with ``update`` would do (a dry run shows it).

    Raises NotFound for an unknown workflow, and Conflict while a step has an
    open run or when a step that has run (or was sent input) would lose its
    task: it is not in the new definition, or it changed between a task and a
    branch. Nothing is written."""
    existing = find_workflow(tx, ref)
    root = task_by_id(tx, existing["root_task_id"])
    _refuse_while_running(tx, existing["id"], root, "update")
    old = _old_steps(tx, existing["id"], root["id"])
    plan = UpdatePlan(existing, root)
    new_kinds = {s.id: _kind(s) for s in wf.steps}
    lost: list[tuple[_OldStep, str]] = []
    for step_id, current in old.items():
        kind = new_kinds.get(step_id)
        if kind == current.row["kind"]:
            plan.reuse[step_id] = current
            continue
        if current.has_run:
            if kind is None:
                why = "not in the new file"
            elif kind == "group":
                why = "a branch in the new file"
            else:
                why = "no longer a branch in the new file"
            lost.append((current, why))
            continue
        if kind is None:
            plan.removed.append(step_id)
        plan.delete.append(current.row)
    if lost:
        _refuse_losing_runs(root, lost)
    step_ids = {s.row["id"]: i for i, s in old.items()}
    for step in wf.steps:
        reused = plan.reuse.get(step.id)
        if reused is None:
            continue
        row = reused.row
        rewired = _depends_on(tx, row["id"], step_ids) != set(step.depends_on)
        if rewired:
            plan.rewired.add(step.id)
        if not reused.has_run:
            continue
        plan.kept.append(step.id)
        new = _new_step(
            tx,
            caller,
            step,
            workflow_id=existing["id"],
            parent_id=row["parent_task_id"],
            root=root,
            default_max_attempts=default_max_attempts,
        )
        if rewired or any(row[k] != v for k, v in _definition(new).items()):
            plan.changed.append(step.id)
    return plan


def _drop_step_dependencies(tx: Tx, workflow_id: str) -> None:
    """Forget which steps the workflow's steps wait for: the new definition
    says it again. Dependencies on tasks outside the workflow
    (tasks.dependencies.add) are not part of the file and stay."""
    # One statement: each IN list is built once, not once per step.
    tx.execute(
        "DELETE FROM task_dependencies"
        " WHERE task_id IN (SELECT id FROM tasks WHERE workflow_id = ? AND step_id IS NOT NULL)"
        " AND depends_on_task_id IN"
        " (SELECT id FROM tasks WHERE workflow_id = ? AND step_id IS NOT NULL)",
        (workflow_id, workflow_id),
    )


def _delete_unrun(tx: Tx, caller: Caller, rows: list[sqlite3.Row], version: int) -> None:
    """Delete step tasks that have no runs and no messages anywhere under
    them (``plan_update`` checked), with one ``task.deleted`` each. Unlike
    ``tasks.delete`` it leaves the containers alone: ``update`` re-derives
    them once, at the end, so their status does not flicker in the log."""
    doomed: list[str] = []
    gone: set[str] = set()
    for row in rows:  # parents before their steps: a deleted branch takes its steps
        if row["id"] in gone:
            continue
        ids = subtree_ids(tx, row["id"])
        for task_id in ids:
            tx.emit(
                "task.deleted",
                caller,
                task_id=task_id,
                payload={"root": row["id"], "workflow_version": version},
            )
        doomed.extend(ids)
        gone.update(ids)
    waiting: set[str] = set()
    for chunk in _chunks(doomed):
        marks = ",".join("?" * len(chunk))
        waiting.update(
            r[0]
            for r in tx.all(
                f"SELECT task_id FROM task_dependencies WHERE depends_on_task_id IN ({marks})",
                chunk,
            )
        )
    # A task's parent is checked at the end of each statement, so the
    # deepest tasks go first: no chunk leaves a task without its parent.
    for chunk in _chunks(doomed[::-1]):
        marks = ",".join("?" * len(chunk))
        tx.execute(f"DELETE FROM tasks WHERE id IN ({marks})", chunk)
    # Tasks outside the workflow that waited for a deleted step are
    # re-examined, as after tasks.delete.
    for task_id in sorted(waiting - gone):
        refresh(tx, caller, task_by_id(tx, task_id))


def _chunks(ids: list[str], size: int = 500) -> list[list[str]]:
    # Well under SQLite's limit on ? parameters per statement.
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _redefine(
    tx: Tx,
    caller: Caller,
    old: _OldStep,
    new: NewTask,
    *,
    rewired: bool,
    version: int,
) -> None:
    """An existing step task takes the new definition. One that has run and
    finished keeps its status, approval record and closing reason: they
    describe its last run, whose input records what it ran. One that has not
    run, or waits for a run of the previous version, starts over as a fresh
    step: pending, no run requested."""
    row = old.row
    sets = {k: v for k, v in _definition(new).items() if row[k] != v}
    if not old.has_run or row["status"] in WAITING:
        fresh: dict[str, Any] = {
            "status": "pending",
            "blocking_reason": None,
            "closed_at": None,
            "closed_reason": None,
            "skipped": 0,
            "awaiting_input": 0,
            "run_requested": 0,
            "requested_input": None,
            "requested_key": None,
            "approval_state": "pending" if new.approval_policy == "manual" else "not_required",
            "approved_by_kind": None,
            "approved_by_ref": None,
            "approved_at": None,
        }
        sets.update({k: v for k, v in fresh.items() if row[k] != v})
    if sets:
        assignments = ", ".join(f"{k} = ?" for k in sets)
        tx.execute(
            f"UPDATE tasks SET {assignments}, updated_at = ? WHERE id = ?",
            (*sets.values(), tx.now, row["id"]),
        )
    fields = sorted([*sets, "depends_on"] if rewired else sets)
    if fields:
        tx.emit(
            "task.updated",
            caller,
            task_id=row["id"],
            payload={"fields": fields, "workflow_version": version},
        )


def update(
    tx: Tx,
    caller: Caller,
    wf: Workflow,
    *,
    ref: str,
    source: str,
    variables: dict[str, Any],
    default_max_attempts: int,
) -> tuple[sqlite3.Row, sqlite3.Row, UpdatePlan]:
    """Make ``wf`` the next version of workflow ``ref`` without losing
    anything that ran (see ``UpdatePlan``): step tasks are taken over by id,
    new steps get tasks, steps that never ran and left the file are deleted,
    dependencies are rewired from the file, and the root and branches are
    re-derived from their steps (a completed root stays completed unless the
    new version has a step that has not run; ``task.status_changed`` says
    so). Raises what ``plan_update`` raises, before writing anything.
    Returns (workflow row, root task row, the plan)."""
    plan = plan_update(tx, caller, wf, ref, default_max_attempts)
    workflow, root = plan.workflow, plan.root
    version = workflow["version"] + 1
    _drop_step_dependencies(tx, workflow["id"])
    _delete_unrun(tx, caller, plan.delete, version)
    task_ids: dict[str, str] = {}
    for step in wf.steps:  # parents and dependencies come first
        new = _new_step(
            tx,
            caller,
            step,
            workflow_id=workflow["id"],
            parent_id=root["id"] if step.parent is None else task_ids[step.parent],
            root=root,
            default_max_attempts=default_max_attempts,
        )
        reused = plan.reuse.get(step.id)
        if reused is None:
            task_ids[step.id] = create_task(tx, caller, new)["id"]
        else:
            task_ids[step.id] = reused.row["id"]
            _redefine(tx, caller, reused, new, rewired=step.id in plan.rewired, version=version)
        if step.depends_on:
            add_initial_dependencies(tx, task_ids[step.id], [task_ids[d] for d in step.depends_on])
    tx.execute(
        "UPDATE tasks SET title = ?, description = ?, updated_at = ? WHERE id = ?",
        (wf.name, wf.description, tx.now, root["id"]),
    )
    branches = [task_ids[s.id] for s in wf.steps if s.action == "branch"]
    for container_id in [*reversed(branches), root["id"]]:  # inner branches first
        # settle(x, x) re-derives container x (and outwards if it changed)
        # without re-examining the steps inside, which stay plainly pending
        # until the workflow is started.
        settle(tx, caller, container_id, container_id)
    updated = tx.one(
        "UPDATE workflows SET name = ?, description = ?, source = ?, vars = ?, version = ?,"
        " updated_at = ? WHERE id = ? RETURNING *",
        (wf.name, wf.description, source, to_json(variables), version, tx.now, workflow["id"]),
    )
    assert updated is not None
    tx.emit(
        "workflow.updated",
        caller,
        task_id=root["id"],
        payload={
            "workflow_id": workflow["id"],
            "version": version,
            "kept_steps": plan.kept,
            "changed_steps": plan.changed,
            "removed_steps": plan.removed,
        },
    )
    return updated, task_by_id(tx, root["id"]), plan


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
        refresh(tx, caller, task_by_id(tx, step["id"]))
    # Containers follow their steps: settle one step per container.
    for parent_id in dict.fromkeys(s["parent_task_id"] for s in steps):
        first = next(s for s in steps if s["parent_task_id"] == parent_id)
        settle(tx, caller, first["id"], parent_id)
    return task_by_id(tx, root["id"])


def start_task_or_workflow(
    tx: Tx, caller: Caller, ref: str, *, idempotency_key: str | None, input_value: Any
) -> Started:
    """``tasks.start``: a workflow's root starts its whole DAG (``start``);
    any other task gets a run requested (``tasks.start_task_row``). Repeating
    a request with the same ``idempotency_key`` returns what it did."""
    task = find_task(tx, ref)
    if task["kind"] == "workflow":
        # The root has no runs: it keeps the key of the start that ran its
        # DAG, so a retried start does not run the workflow a second time.
        if idempotency_key is not None and task["requested_key"] == idempotency_key:
            return Started(task, None)
        start(tx, caller, task, input_value)
        root = tx.one(
            "UPDATE tasks SET requested_key = ? WHERE id = ? RETURNING *",
            (idempotency_key, task["id"]),
        )
        assert root is not None
        return Started(root, None)
    return start_task_row(
        tx, caller, task, idempotency_key=idempotency_key, input_value=input_value
    )
