"""Task operations, each with its events, in the caller's transaction.

Owns: create, publish, start (request a run), update, delete,
dependencies, approval and subtree cancel. A task's ``status`` is derived
from the task and its runs but stored (lists and the claim path filter on
it with an index), so every change to what it derives from sets it in the
same transaction, through ``progress``. Must not: read for display
(``rows``), judge what blocks a task (``graph``), or import workflows,
claims or leases: a workflow's root is started by
``workflows.start_task_or_workflow``, which builds on this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, InvalidParams, NotFound
from agh.protocol import PRIORITY_RANK
from aghd.store.db import Caller, Tx, new_id, to_json
from aghd.store.graph import cycle_path
from aghd.store.models import CLOSED, NewTask, Started
from aghd.store.progress import (
    end_run_canceled,
    refresh,
    refuse_open_run,
    request_run,
    settle,
)
from aghd.store.rows import (
    dependents,
    find_task,
    open_run_for_task,
    run_by_idempotency_key,
    subtree_ids,
    task_by_id,
    task_by_idempotency_key,
)
from aghd.store.workspaces import find_workspace, next_identifier, resolve_workspace

if TYPE_CHECKING:
    import sqlite3


# -- create -----------------------------------------------------------------


def create_task(tx: Tx, caller: Caller, new: NewTask) -> sqlite3.Row:
    """Insert a task (identifier assigned here) and its ``task.created`` event."""
    parent = None if new.parent_task_id is None else find_task(tx, new.parent_task_id)
    parent_id = None if parent is None else parent["id"]
    workspace = None
    scope = new.scope
    if new.workspace is not None:
        workspace = resolve_workspace(tx, new.workspace)
        scope = scope or "workspace"
    elif parent is not None and parent["workspace_id"] is not None and scope != "global":
        # A child lives in its parent's workspace unless told otherwise.
        workspace = find_workspace(tx, parent["workspace_id"])
        scope = "workspace"
    if scope == "workspace" and workspace is None:
        raise InvalidParams(
            "scope 'workspace' needs a workspace",
            {"field": "$.params.workspace", "hint": "pass workspace (an absolute path, id or key)"},
        )
    scope = scope or "global"
    # A live task starts pending; refresh() below makes it blocked if its
    # approval or dependencies say so.
    status = "draft" if new.draft else "pending"
    approval_state = "pending" if new.approval_policy == "manual" else "not_required"
    now = tx.now
    task_id = new_id("task")
    row = tx.one(
        "INSERT INTO tasks (id, identifier, title, description, scope, workspace_id, owner_kind,"
        " owner_ref, created_by_kind, created_by_ref, origin_kind, origin_ref, priority,"
        " network_channel, max_attempts, metadata, draft, status, approval_policy,"
        " approval_state, parent_task_id, idempotency_key, created_at,"
        " updated_at, last_activity_at, kind, workflow_id, step_id, step_spec)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " RETURNING *",
        (
            task_id,
            next_identifier(tx, workspace),
            new.title,
            new.description,
            scope,
            None if workspace is None else workspace["id"],
            new.owner_kind,
            new.owner_ref,
            caller.actor_kind,
            caller.actor_ref,
            new.origin_kind,
            new.origin_ref,
            new.priority,
            new.network_channel,
            new.max_attempts,
            to_json(new.metadata),
            1 if new.draft else 0,
            status,
            new.approval_policy,
            approval_state,
            parent_id,
            new.idempotency_key,
            now,
            now,
            now,
            new.kind,
            new.workflow_id,
            new.step_id,
            new.step_spec,
        ),
    )
    assert row is not None
    tx.emit(
        "task.created",
        caller,
        task_id=task_id,
        payload={"identifier": row["identifier"], "title": new.title, "status": status},
    )
    if new.depends_on:
        add_initial_dependencies(tx, task_id, list(new.depends_on))
    # Workflow steps wait, plainly pending, until their workflow starts.
    if not new.draft and new.kind == "task" and new.workflow_id is None:
        refresh(tx, caller, row)
        return task_by_id(tx, task_id)
    return row


def create_and_start(
    tx: Tx, caller: Caller, new: NewTask, *, start: bool, input_value: Any
) -> Started:
    """``tasks.create``: a repeat with the same idempotency key returns the
    first task and the run its first create started (the reply was lost)."""
    key = new.idempotency_key
    if key is not None:
        existing = task_by_idempotency_key(tx, key)
        if existing is not None:
            return Started(existing, run_by_idempotency_key(tx, existing["id"], key))
    row = create_task(tx, caller, new)
    if not start:
        return Started(row, None)
    return start_task_row(tx, caller, row, idempotency_key=key, input_value=input_value)


def publish_task(tx: Tx, caller: Caller, ref: str) -> Started:
    """Draft → live, and its run is queued (PROTOCOL: publish enqueues work)
    unless something blocks it, carrying the input and key of a start
    requested while it was a draft."""
    task = find_task(tx, ref)
    if not task["draft"]:
        raise Conflict(
            f"task {task['identifier']} is not a draft (it is {task['status']}); "
            "nothing to publish",
            {"task_id": task["id"], "status": task["status"]},
        )
    live = tx.one(
        "UPDATE tasks SET draft = 0, status = 'pending', updated_at = ? WHERE id = ? RETURNING *",
        (tx.now, task["id"]),
    )
    assert live is not None
    tx.emit("task.published", caller, task_id=task["id"])
    run = request_run(
        tx,
        caller,
        live,
        input_json=task["requested_input"],
        idempotency_key=task["requested_key"],
    )
    return Started(task_by_id(tx, task["id"]), run)


# -- start ------------------------------------------------------------------


def start_task_row(
    tx: Tx, caller: Caller, task: sqlite3.Row, *, idempotency_key: str | None, input_value: Any
) -> Started:
    """Request a run of ``task`` (a row the caller looked up): queued now if
    nothing blocks the task, else remembered and queued the moment it is
    published, approved or its dependencies complete. Repeating a request
    with the same ``idempotency_key`` returns the run it made. A branch of a
    workflow is refused; a workflow's root never comes here
    (``workflows.start_task_or_workflow`` starts its whole DAG)."""
    if task["kind"] != "task":
        raise Conflict(
            f"task {task['identifier']} is a branch of a workflow; start the workflow's root "
            "task instead",
            {"task_id": task["id"], "kind": task["kind"]},
        )
    if idempotency_key is not None:
        existing = run_by_idempotency_key(tx, task["id"], idempotency_key)
        if existing is not None:
            return Started(task, existing)
        if task["run_requested"] and task["requested_key"] == idempotency_key:
            return Started(task, None)
    if task["run_requested"] and (task["draft"] or task["status"] == "blocked"):
        when = "published" if task["draft"] else f"unblocked ({task['blocking_reason']})"
        raise Conflict(
            f"task {task['identifier']} already has a run requested; it is queued when the "
            f"task is {when}",
            {"task_id": task["id"], "status": task["status"]},
        )
    input_json = to_json(input_value)
    if task["draft"]:
        updated = tx.one(
            "UPDATE tasks SET run_requested = 1, requested_input = ?, requested_key = ?,"
            " updated_at = ? WHERE id = ? RETURNING *",
            (input_json, idempotency_key, tx.now, task["id"]),
        )
        assert updated is not None
        tx.emit("task.run_requested", caller, task_id=task["id"])
        return Started(updated, None)
    if task["status"] in ("ready", "in_progress"):
        refuse_open_run(tx, task)
    reopened = task["status"] in CLOSED
    if reopened:
        task = _reopen(tx, caller, task)
    run = request_run(tx, caller, task, input_json=input_json, idempotency_key=idempotency_key)
    if reopened or task["parent_task_id"] is not None:
        # Dependents wait for it again (not "failed"); its container follows.
        settle(tx, caller, task["id"], task["parent_task_id"])
    return Started(task_by_id(tx, task["id"]), run)


def _reopen(tx: Tx, caller: Caller, task: sqlite3.Row) -> sqlite3.Row:
    """A finished task asked to run again: it waits like a new one, and a
    task under manual approval needs a fresh approval for the new run."""
    manual = task["approval_policy"] == "manual"
    row = tx.one(
        "UPDATE tasks SET status = 'pending', closed_at = NULL, closed_reason = NULL,"
        " skipped = 0, approval_state = ?, approved_by_kind = NULL, approved_by_ref = NULL,"
        " approved_at = NULL, updated_at = ? WHERE id = ? RETURNING *",
        ("pending" if manual else "not_required", tx.now, task["id"]),
    )
    assert row is not None
    tx.emit("task.reopened", caller, task_id=task["id"], payload={"from": task["status"]})
    return row


# -- update / delete ---------------------------------------------------------

_UPDATABLE = (
    "title",
    "description",
    "priority",
    "network_channel",
    "max_attempts",
    "metadata",
    "owner_kind",
    "owner_ref",
)


def update_task(tx: Tx, caller: Caller, ref: str, changes: dict[str, Any]) -> sqlite3.Row:
    """Apply a PATCH. Priority, channel and max_attempts also move onto the
    task's queued run so the claim order follows the edit."""
    task = find_task(tx, ref)
    if "approval_policy" in changes:
        set_approval_policy(tx, caller, task, changes["approval_policy"])
        task = task_by_id(tx, task["id"])
    sets = {k: v for k, v in changes.items() if k in _UPDATABLE}
    if "metadata" in sets:
        sets["metadata"] = to_json(sets["metadata"])
    if not sets:
        if "approval_policy" in changes:
            tx.emit("task.updated", caller, task_id=task["id"], payload={"fields": sorted(changes)})
        return task
    assignments = ", ".join(f"{k} = ?" for k in sets)
    row = tx.one(
        f"UPDATE tasks SET {assignments}, updated_at = ? WHERE id = ? RETURNING *",
        (*sets.values(), tx.now, task["id"]),
    )
    assert row is not None
    tx.execute(
        "UPDATE runs SET priority_rank = ?, network_channel = ?, max_attempts = ?"
        " WHERE task_id = ? AND ended_at IS NULL",
        (PRIORITY_RANK[row["priority"]], row["network_channel"], row["max_attempts"], task["id"]),
    )
    tx.emit(
        "task.updated",
        caller,
        task_id=task["id"],
        payload={"fields": sorted(changes)},
    )
    return row


def delete_task(tx: Tx, caller: Caller, ref: str) -> list[str]:
    """Delete a task, its descendants and their runs; refused while any of
    them has an active run. Returns the deleted ids."""
    task = find_task(tx, ref)
    ids = subtree_ids(tx, task["id"])
    marks = ",".join("?" * len(ids))
    active = tx.one(
        f"SELECT r.id, r.status, t.identifier FROM runs r JOIN tasks t ON t.id = r.task_id"
        f" WHERE r.task_id IN ({marks}) AND r.lease_until IS NOT NULL LIMIT 1",
        ids,
    )
    if active is not None:
        raise Conflict(
            f"task {active['identifier']} has an active run {active['id']} ({active['status']}); "
            "cancel it (tasks.cancel) or wait for it to finish before deleting",
            {"task_id": task["id"], "run_id": active["id"], "status": active["status"]},
        )
    # Tasks outside the subtree that waited for a task in it: once the
    # dependency is gone they are re-examined (like tasks.dependencies.remove).
    waiting = [
        r[0]
        for r in tx.all(
            f"SELECT DISTINCT task_id FROM task_dependencies WHERE depends_on_task_id IN ({marks})"
            f" AND task_id NOT IN ({marks})",
            (*ids, *ids),
        )
    ]
    for task_id in ids:
        tx.emit("task.deleted", caller, task_id=task_id, payload={"root": task["id"]})
    # Children first is unnecessary: the FK is checked at statement end.
    tx.execute(f"DELETE FROM tasks WHERE id IN ({marks})", ids)
    for task_id in waiting:
        refresh(tx, caller, task_by_id(tx, task_id))
    if task["parent_task_id"] is not None:
        parent = task_by_id(tx, task["parent_task_id"])
        if parent["kind"] != "task":
            settle(tx, caller, task["id"], parent["id"])
    return ids


# -- dependencies -------------------------------------------------------------


def _identifiers(tx: Tx, ids: list[str]) -> list[str]:
    marks = ",".join("?" * len(ids))
    found = {
        r["id"]: r["identifier"]
        for r in tx.all(f"SELECT id, identifier FROM tasks WHERE id IN ({marks})", ids)
    }
    return [found.get(i, i) for i in ids]


def add_dependency(tx: Tx, caller: Caller, ref: str, depends_on_ref: str) -> str:
    """``ref`` waits for ``depends_on_ref``. Refused when it would close a
    cycle (the cycle is named) or the task already has an open run. Adding an
    existing dependency again is a no-op. Returns the task id."""
    task = find_task(tx, ref)
    dep = find_task(tx, depends_on_ref)
    if task["kind"] != "task":
        raise Conflict(
            f"task {task['identifier']} is a {task['kind']}; its steps' dependencies come from "
            "its workflow YAML (workflows.compose with update)",
            {"task_id": task["id"], "kind": task["kind"]},
        )
    path = [task["id"]] if dep["id"] == task["id"] else cycle_path(tx, dep["id"], task["id"])
    if path is not None:
        cycle = _identifiers(tx, [task["id"], *path]) if len(path) > 1 else [task["identifier"]] * 2
        raise Conflict(
            f"dependency cycle: {' -> '.join(cycle)} (each waits for the next); "
            "remove a dependency on the cycle first",
            {"task_id": task["id"], "depends_on_task_id": dep["id"], "cycle": cycle},
        )
    if tx.one(
        "SELECT 1 FROM task_dependencies WHERE task_id = ? AND depends_on_task_id = ?",
        (task["id"], dep["id"]),
    ):
        return str(task["id"])
    if task["status"] in ("ready", "in_progress"):
        run = open_run_for_task(tx, task["id"])
        raise Conflict(
            f"task {task['identifier']} already has run {run['id'] if run else '?'} "
            f"({task['status']}); add dependencies before it is started, or cancel the run first",
            {"task_id": task["id"], "status": task["status"]},
        )
    tx.execute(
        "INSERT INTO task_dependencies (task_id, depends_on_task_id, kind, created_at)"
        " VALUES (?, ?, 'blocks', ?)",
        (task["id"], dep["id"], tx.now),
    )
    tx.emit(
        "task.dependency_added",
        caller,
        task_id=task["id"],
        payload={"depends_on_task_id": dep["id"], "depends_on": dep["identifier"]},
    )
    refresh(tx, caller, task_by_id(tx, task["id"]))
    return str(task["id"])


def remove_dependency(tx: Tx, caller: Caller, ref: str, depends_on_ref: str) -> str:
    """Drop one dependency; the task may become runnable (its requested run is queued)."""
    task = find_task(tx, ref)
    dep = find_task(tx, depends_on_ref)
    removed = tx.execute(
        "DELETE FROM task_dependencies WHERE task_id = ? AND depends_on_task_id = ?",
        (task["id"], dep["id"]),
    ).rowcount
    if not removed:
        raise NotFound(
            f"task {task['identifier']} does not depend on {dep['identifier']}",
            {"task_id": task["id"], "depends_on_task_id": dep["id"]},
        )
    tx.emit(
        "task.dependency_removed",
        caller,
        task_id=task["id"],
        payload={"depends_on_task_id": dep["id"], "depends_on": dep["identifier"]},
    )
    refresh(tx, caller, task_by_id(tx, task["id"]))
    return str(task["id"])


def add_initial_dependencies(tx: Tx, task_id: str, depends_on: list[str]) -> None:
    """Dependencies of a task being created: nothing depends on a new task
    yet, so no cycle is possible and no refresh is needed before it exists."""
    for ref in depends_on:
        dep = find_task(tx, ref)
        tx.execute(
            "INSERT OR IGNORE INTO task_dependencies (task_id, depends_on_task_id, kind,"
            " created_at) VALUES (?, ?, 'blocks', ?)",
            (task_id, dep["id"], tx.now),
        )


# -- approval -------------------------------------------------------------------


def _require_pending_approval(task: sqlite3.Row, action: str) -> None:
    state = task["approval_state"]
    if state == "pending" and not task["draft"]:
        return
    if task["draft"]:
        why = "is a draft; publish it first"
    elif state == "not_required":
        why = "needs no approval (approval_policy none)"
    elif state == "approved":
        who = task["approved_by_ref"] or task["approved_by_kind"] or "someone"
        why = f"was already approved by {who}"
    else:
        why = "was rejected"
    raise Conflict(
        f"cannot {action} task {task['identifier']}: it {why}",
        {"task_id": task["id"], "approval_state": state, "status": task["status"]},
    )


def approve(tx: Tx, caller: Caller, ref: str, comment: str | None) -> Started:
    """Record the approval and queue the task's run (or keep it requested
    while dependencies are unmet)."""
    task = find_task(tx, ref)
    _require_pending_approval(task, "approve")
    approved = tx.one(
        "UPDATE tasks SET approval_state = 'approved', approved_by_kind = ?, approved_by_ref = ?,"
        " approved_at = ?, updated_at = ? WHERE id = ? RETURNING *",
        (caller.actor_kind, caller.actor_ref, tx.now, tx.now, task["id"]),
    )
    assert approved is not None
    tx.emit("task.approved", caller, task_id=task["id"], payload={"comment": comment})
    run = request_run(
        tx,
        caller,
        approved,
        input_json=approved["requested_input"],
        idempotency_key=approved["requested_key"],
    )
    settle(tx, caller, task["id"], task["parent_task_id"])
    return Started(task_by_id(tx, task["id"]), run)


def reject(tx: Tx, caller: Caller, ref: str, reason: str | None) -> sqlite3.Row:
    """Close an approval-gated task as ``canceled``; its dependents stay blocked."""
    task = find_task(tx, ref)
    _require_pending_approval(task, "reject")
    closed_reason = "rejected" + (f": {reason}" if reason else "")
    tx.execute(
        "UPDATE tasks SET approval_state = 'rejected', status = 'canceled', closed_at = ?,"
        " closed_reason = ?, blocking_reason = NULL, run_requested = 0, requested_input = NULL,"
        " requested_key = NULL, approved_by_kind = ?, approved_by_ref = ?, approved_at = ?,"
        " updated_at = ? WHERE id = ?",
        (
            tx.now,
            closed_reason,
            caller.actor_kind,
            caller.actor_ref,
            tx.now,
            tx.now,
            task["id"],
        ),
    )
    tx.emit("task.rejected", caller, task_id=task["id"], payload={"reason": reason})
    settle(tx, caller, task["id"], task["parent_task_id"])
    return task_by_id(tx, task["id"])


def set_approval_policy(tx: Tx, caller: Caller, task: sqlite3.Row, policy: str) -> None:
    """Change a task's approval policy while it has no run queued or active."""
    if policy == task["approval_policy"]:
        return
    if task["status"] in ("ready", "in_progress"):
        raise Conflict(
            f"task {task['identifier']} is {task['status']}; change its approval policy once "
            "its run has finished, or cancel the run first",
            {"task_id": task["id"], "status": task["status"]},
        )
    state = "pending" if policy == "manual" else "not_required"
    updated = tx.one(
        "UPDATE tasks SET approval_policy = ?, approval_state = ?, approved_by_kind = NULL,"
        " approved_by_ref = NULL, approved_at = NULL WHERE id = ? RETURNING *",
        (policy, state, task["id"]),
    )
    assert updated is not None
    if updated["status"] not in CLOSED:
        refresh(tx, caller, updated)


# -- cancel a subtree -------------------------------------------------------------


def cancel_tree(tx: Tx, caller: Caller, ref: str, reason: str | None) -> sqlite3.Row:
    """Cancel the task and every open task under it in one transaction:
    queued and active runs canceled (holders get ``lease_lost`` next call),
    requested runs dropped, one event per run and per task."""
    root = find_task(tx, ref)
    ids = subtree_ids(tx, root["id"])
    marks = ",".join("?" * len(ids))
    open_tasks = tx.all(
        f"SELECT id, parent_task_id FROM tasks WHERE id IN ({marks})"
        " AND status NOT IN ('completed', 'failed', 'canceled') ORDER BY id",
        ids,
    )
    if not open_tasks:
        raise Conflict(
            f"task {root['identifier']} and everything under it are already closed "
            f"({root['status']}); nothing to cancel",
            {"task_id": root["id"], "status": root["status"]},
        )
    closed_reason = "canceled" + (f": {reason}" if reason else "")
    for run in tx.all(f"SELECT * FROM runs WHERE task_id IN ({marks}) AND ended_at IS NULL", ids):
        end_run_canceled(tx, caller, run, reason)
    open_ids = [t["id"] for t in open_tasks]
    tx.execute(
        f"UPDATE tasks SET status = 'canceled', closed_at = ?, closed_reason = ?,"
        f" blocking_reason = NULL, awaiting_input = 0, run_requested = 0, requested_input = NULL,"
        f" requested_key = NULL, updated_at = ? WHERE id IN ({','.join('?' * len(open_ids))})",
        (tx.now, closed_reason, tx.now, *open_ids),
    )
    for task_id in open_ids:
        tx.emit(
            "task.canceled",
            caller,
            task_id=task_id,
            payload={"reason": reason, "root": root["id"]},
        )
    inside = set(ids)
    for t in open_tasks:
        # Only edges leaving the subtree matter: inside, everything is closed.
        outside_parent = t["parent_task_id"] if t["parent_task_id"] not in inside else None
        if outside_parent is not None or dependents(tx, t["id"]):
            settle(tx, caller, t["id"], outside_parent)
    return task_by_id(tx, root["id"])
