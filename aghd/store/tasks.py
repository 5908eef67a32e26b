"""Tasks: create, find, list, update, delete and start (request a run).

Task ``status`` is derived from the task and its runs but stored, so lists
and the claim path can filter on it with an index; every function that
changes what it derives from sets it in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, InvalidParams, NotFound
from agh.protocol import PRIORITY_RANK
from aghd.store import graph, workflows
from aghd.store import runs as runs_store
from aghd.store.db import (
    PREFIX_CANDIDATES,
    Caller,
    Tx,
    ambiguous_prefix,
    id_prefix,
    new_id,
    to_json,
)
from aghd.store.events import recent_task_events
from aghd.store.workspaces import find_workspace, next_identifier, resolve_workspace

if TYPE_CHECKING:
    import sqlite3


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to create; defaults are those of ``tasks.create``."""

    title: str
    owner_kind: str
    owner_ref: str | None
    origin_kind: str
    origin_ref: str | None = None
    description: str | None = None
    scope: str | None = None
    workspace: str | None = None
    priority: str = "medium"
    network_channel: str | None = None
    max_attempts: int = 1
    metadata: Any = None
    draft: bool = False
    approval_policy: str = "none"
    parent_task_id: str | None = None
    idempotency_key: str | None = None
    depends_on: tuple[str, ...] = ()
    # Workflow tasks (see store/workflows.py): the container kind, the
    # workflow and step they belong to, and the step's definition (JSON).
    kind: str = "task"
    workflow_id: str | None = None
    step_id: str | None = None
    step_spec: str | None = None


@dataclass(slots=True)
class Started:
    task: sqlite3.Row
    run: sqlite3.Row | None


# -- lookups ----------------------------------------------------------------


def find_task(tx: Tx, ref: str) -> sqlite3.Row:
    """A task by id, human identifier (``T-42``, case-insensitive) or unique
    id prefix; raises NotFound (listing the candidates of an ambiguous prefix)."""
    if ref.startswith("task_"):
        row = tx.one("SELECT * FROM tasks WHERE id = ?", (ref,))
    else:
        row = tx.one("SELECT * FROM tasks WHERE identifier = ?", (ref.upper(),))
    prefix = None if row is not None else id_prefix(ref, "task")
    if prefix is not None:
        found = tx.all(
            "SELECT * FROM tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "~", PREFIX_CANDIDATES),
        )
        if len(found) > 1:
            raise ambiguous_prefix("task", ref, [f"{r['identifier']} ({r['id']})" for r in found])
        row = found[0] if found else None
    if row is None:
        raise NotFound(
            f"task {ref} not found", {"task": ref, "hint": "list tasks with tasks.list (agh ls)"}
        )
    return row


def task_by_id(tx: Tx, task_id: str) -> sqlite3.Row:
    row = tx.one("SELECT * FROM tasks WHERE id = ?", (task_id,))
    if row is None:
        raise NotFound(
            f"task {task_id} not found (deleted?)",
            {"task": task_id, "hint": "list tasks with tasks.list (agh ls)"},
        )
    return row


def child_count(tx: Tx, task_id: str) -> int:
    return int(tx.scalar("SELECT count(*) FROM tasks WHERE parent_task_id = ?", (task_id,)))


def children(tx: Tx, task_id: str, limit: int = 1000) -> list[sqlite3.Row]:
    return tx.all(
        "SELECT * FROM tasks WHERE parent_task_id = ? ORDER BY id LIMIT ?", (task_id, limit)
    )


def subtree_ids(tx: Tx, task_id: str) -> list[str]:
    """The task and all its descendants."""
    return [
        r[0]
        for r in tx.all(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL"
            " SELECT t.id FROM tasks t JOIN sub ON t.parent_task_id = sub.id)"
            " SELECT id FROM sub",
            (task_id,),
        )
    ]


# -- create -----------------------------------------------------------------


def task_by_idempotency_key(tx: Tx, key: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM tasks WHERE idempotency_key = ?", (key,))


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
        graph.add_initial_dependencies(tx, task_id, list(new.depends_on))
    # Workflow steps wait, plainly pending, until their workflow starts.
    if not new.draft and new.kind == "task" and new.workflow_id is None:
        graph.refresh(tx, caller, row)
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
            return Started(existing, runs_store.run_by_idempotency_key(tx, existing["id"], key))
    row = create_task(tx, caller, new)
    if not start:
        return Started(row, None)
    return start_task(tx, caller, row["id"], idempotency_key=key, input_value=input_value)


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
    run = graph.request_run(
        tx,
        caller,
        live,
        input_json=task["requested_input"],
        idempotency_key=task["requested_key"],
    )
    return Started(task_by_id(tx, task["id"]), run)


# -- start ------------------------------------------------------------------


def start_task(
    tx: Tx, caller: Caller, ref: str, *, idempotency_key: str | None, input_value: Any
) -> Started:
    """Request a run: queued now if nothing blocks the task, else remembered
    and queued the moment it is published, approved or its dependencies
    complete. Repeating a request with the same ``idempotency_key`` returns
    the run it made. A workflow's root starts its whole DAG."""
    task = find_task(tx, ref)
    if task["kind"] == "workflow":
        # The root has no runs: it keeps the key of the start that ran its
        # DAG, so a retried start does not run the workflow a second time.
        if idempotency_key is not None and task["requested_key"] == idempotency_key:
            return Started(task, None)
        workflows.start(tx, caller, task, input_value)
        root = tx.one(
            "UPDATE tasks SET requested_key = ? WHERE id = ? RETURNING *",
            (idempotency_key, task["id"]),
        )
        assert root is not None
        return Started(root, None)
    if task["kind"] != "task":
        raise Conflict(
            f"task {task['identifier']} is a branch of a workflow; start the workflow's root "
            "task instead",
            {"task_id": task["id"], "kind": task["kind"]},
        )
    if idempotency_key is not None:
        existing = runs_store.run_by_idempotency_key(tx, task["id"], idempotency_key)
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
        runs_store.refuse_open_run(tx, task)
    reopened = task["status"] in graph.CLOSED
    if reopened:
        task = _reopen(tx, caller, task)
    run = graph.request_run(
        tx, caller, task, input_json=input_json, idempotency_key=idempotency_key
    )
    if reopened or task["parent_task_id"] is not None:
        # Dependents wait for it again (not "failed"); its container follows.
        graph.settle(tx, caller, task["id"], task["parent_task_id"])
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


# -- list -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFilters:
    scope: str | None = None
    workspace: str | None = None
    status: str | None = None
    priority: str | None = None
    include_drafts: bool = False
    approval_state: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    parent_task_id: str | None = None
    network_channel: str | None = None
    query: str | None = None


def list_tasks(tx: Tx, filters: TaskFilters, limit: int, cursor: str | None) -> list[sqlite3.Row]:
    """Tasks newest first; ``limit + 1`` rows so the caller can tell if more exist."""
    where: list[str] = []
    args: list[Any] = []
    if filters.workspace is not None:
        ws = find_workspace(tx, filters.workspace)
        if ws is None:
            return []
        where.append("workspace_id = ?")
        args.append(ws["id"])
    if filters.parent_task_id is not None:
        where.append("parent_task_id = ?")
        args.append(find_task(tx, filters.parent_task_id)["id"])
    for column, value in (
        ("scope", filters.scope),
        ("status", filters.status),
        ("priority", filters.priority),
        ("approval_state", filters.approval_state),
        ("owner_kind", filters.owner_kind),
        ("owner_ref", filters.owner_ref),
        ("network_channel", filters.network_channel),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if not filters.include_drafts and filters.status != "draft":
        where.append("draft = 0")
    if filters.query:
        where.append("(identifier = ? OR title LIKE ? ESCAPE '\\')")
        escaped = filters.query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args.extend([filters.query.upper(), f"%{escaped}%"])
    if cursor is not None:
        where.append("id < ?")
        args.append(cursor)
    sql = "SELECT * FROM tasks"
    if filters.status is not None and filters.workspace is None and filters.parent_task_id is None:
        # Walk the status in id order and stop at the page's end. With
        # statistics from an ANALYZE older than tasks_facets (also led by
        # status), the planner picks that and sorts the whole status per page.
        sql += " INDEXED BY tasks_status"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit + 1)
    return tx.all(sql, args)


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
        graph.set_approval_policy(tx, caller, task, changes["approval_policy"])
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
        graph.refresh(tx, caller, task_by_id(tx, task_id))
    if task["parent_task_id"] is not None:
        parent = task_by_id(tx, task["parent_task_id"])
        if parent["kind"] != "task":
            graph.settle(tx, caller, task["id"], parent["id"])
    return ids


# -- enriched reads ------------------------------------------------------------


@dataclass(slots=True)
class ListItemParts:
    task: sqlite3.Row
    active_run: sqlite3.Row | None
    child_count: int
    dependencies: list[sqlite3.Row]


@dataclass(slots=True)
class DetailParts:
    item: ListItemParts
    runs: list[sqlite3.Row]
    events: list[sqlite3.Row]
    children: list[ListItemParts]


def list_item_parts(tx: Tx, rows: list[sqlite3.Row]) -> list[ListItemParts]:
    """Each task with its open run, child count and dependencies (three
    indexed lookups each)."""
    return [
        ListItemParts(
            row,
            runs_store.open_run_for_task(tx, row["id"]),
            child_count(tx, row["id"]),
            graph.dependencies(tx, row["id"]),
        )
        for row in rows
    ]


def list_tasks_enriched(
    tx: Tx, filters: TaskFilters, limit: int, cursor: str | None
) -> list[ListItemParts]:
    return list_item_parts(tx, list_tasks(tx, filters, limit, cursor))


def task_detail(tx: Tx, ref: str, runs_limit: int = 100, events_limit: int = 100) -> DetailParts:
    """Everything ``tasks.get`` shows, read in one transaction."""
    task = find_task(tx, ref)
    (item,) = list_item_parts(tx, [task])
    return DetailParts(
        item=item,
        runs=tx.all(
            "SELECT * FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT ?",
            (task["id"], runs_limit),
        ),
        events=recent_task_events(tx, task["id"], events_limit),
        children=list_item_parts(tx, children(tx, task["id"])),
    )
