"""Lookups of tasks, runs and dependencies.

Owns: the reads of ``tasks``, ``runs`` and ``task_dependencies`` rows that
the layers above and the handlers share — by id, identifier or prefix (with
the NotFound of a missing one), lists, a task's detail and its tree. Must
not: write anything (no INSERT, UPDATE, DELETE or event), or import a store
module above ``models``, ``workspaces`` and ``events``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agh.errors import NotFound
from aghd.store.db import PREFIX_CANDIDATES, Tx, ambiguous_prefix, id_prefix
from aghd.store.events import recent_task_events
from aghd.store.models import DetailParts, ListItemParts, TaskFilters, TreeNode
from aghd.store.workspaces import find_workspace

if TYPE_CHECKING:
    import sqlite3


# -- tasks ------------------------------------------------------------------


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


def task_by_idempotency_key(tx: Tx, key: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM tasks WHERE idempotency_key = ?", (key,))


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


# -- dependencies -------------------------------------------------------------


def dependencies(tx: Tx, task_id: str) -> list[sqlite3.Row]:
    """The task's dependencies, each with the depended-on task's columns
    (prefixed ``dep_``)."""
    return tx.all(
        "SELECT d.task_id, d.depends_on_task_id, d.kind, d.created_at,"
        " t.identifier AS dep_identifier, t.title AS dep_title, t.status AS dep_status,"
        " t.priority AS dep_priority, t.scope AS dep_scope, t.owner_kind AS dep_owner_kind,"
        " t.owner_ref AS dep_owner_ref, t.workspace_id AS dep_workspace_id,"
        " t.skipped AS dep_skipped"
        " FROM task_dependencies d JOIN tasks t ON t.id = d.depends_on_task_id"
        " WHERE d.task_id = ? ORDER BY d.created_at, d.depends_on_task_id",
        (task_id,),
    )


def dependents(tx: Tx, task_id: str) -> list[str]:
    return [
        r[0]
        for r in tx.all(
            "SELECT task_id FROM task_dependencies WHERE depends_on_task_id = ?", (task_id,)
        )
    ]


# -- runs -------------------------------------------------------------------


def get_run(tx: Tx, run_id: str) -> sqlite3.Row:
    """The run row with exactly this id; raises NotFound. Agents name their
    run by the id their claim returned: no prefix on the fenced paths."""
    row = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    if row is None:
        raise _run_not_found(run_id)
    return row


def find_run(tx: Tx, ref: str) -> sqlite3.Row:
    """The run an operator names (``runs.*``): by id, else by unique id
    prefix. Callers go on with the row's ``id``, never ``ref``."""
    row = tx.one("SELECT * FROM runs WHERE id = ?", (ref,))
    if row is not None:
        return row
    prefix = id_prefix(ref, "run")
    found = (
        []
        if prefix is None
        else tx.all(
            "SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "~", PREFIX_CANDIDATES),
        )
    )
    if len(found) > 1:
        raise ambiguous_prefix("run", ref, [r["id"] for r in found])
    if not found:
        raise _run_not_found(ref)
    return found[0]


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(
        f"run {run_id} not found", {"run_id": run_id, "hint": "list runs with tasks.runs.list"}
    )


def list_runs(
    tx: Tx, task_id: str, status: str | None, session_id: str | None, limit: int, cursor: str | None
) -> list[sqlite3.Row]:
    """Runs of one task, newest first; ``limit + 1`` rows so callers see if more exist."""
    sql = "SELECT * FROM runs WHERE task_id = ?"
    args: list[Any] = [task_id]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    if session_id is not None:
        sql += " AND session_id = ?"
        args.append(session_id)
    if cursor is not None:
        sql += " AND id < ?"
        args.append(cursor)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit + 1)
    return tx.all(sql, args)


def run_by_idempotency_key(tx: Tx, task_id: str, key: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM runs WHERE task_id = ? AND idempotency_key = ?", (task_id, key))


def open_run_for_task(tx: Tx, task_id: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM runs WHERE task_id = ? AND ended_at IS NULL", (task_id,))


# -- lists and views ----------------------------------------------------------


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


def list_item_parts(tx: Tx, rows: list[sqlite3.Row]) -> list[ListItemParts]:
    """Each task with its open run, child count and dependencies (three
    indexed lookups each)."""
    return [
        ListItemParts(
            row,
            open_run_for_task(tx, row["id"]),
            child_count(tx, row["id"]),
            dependencies(tx, row["id"]),
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


def tree(tx: Tx, ref: str) -> list[TreeNode]:
    """The task and its descendants, depth first (children in creation order)."""
    root = find_task(tx, ref)
    # Ids have one length, so sorting by the id path gives a pre-order walk.
    rows = tx.all(
        "WITH RECURSIVE sub(id, depth, path) AS ("
        " SELECT id, 0, id FROM tasks WHERE id = ?"
        " UNION ALL SELECT t.id, sub.depth + 1, sub.path || '/' || t.id"
        " FROM tasks t JOIN sub ON t.parent_task_id = sub.id)"
        " SELECT tasks.*, sub.depth AS depth FROM sub JOIN tasks ON tasks.id = sub.id"
        " ORDER BY sub.path",
        (root["id"],),
    )
    return [
        TreeNode(
            row,
            row["depth"],
            open_run_for_task(tx, row["id"]),
            child_count(tx, row["id"]),
        )
        for row in rows
    ]
