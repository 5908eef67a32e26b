"""The task graph: dependencies, approval, what blocks a task, skipped steps,
container (workflow / branch) status, subtree cancel and the tree view.

One rule drives it all: a task gets a queued run only while nothing blocks
it (not a draft, approved or needing no approval, every dependency
completed). A task asked to run while blocked keeps the request
(``run_requested``) and is re-examined (``refresh``) whenever something it
waits for changes (``settle``) — in the same transaction as that change, so
a completion and the runs it unblocks commit together.

Kinds: a ``task`` has runs; a ``workflow`` (a workflow's root) or ``group``
(an inline branch) is a container whose status is derived from its
children's and which never has a run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, NotFound
from aghd.store import runs as runs_store
from aghd.store import tasks as tasks_store
from aghd.store.db import Caller, Tx, from_json

if TYPE_CHECKING:
    import sqlite3

CLOSED = ("completed", "failed", "canceled")
# A task in one of these states has no open run and has not closed: it is
# the only kind ``refresh`` re-examines.
WAITING = ("pending", "blocked")
_NAMES_SHOWN = 5


@dataclass(slots=True)
class Blocking:
    """Why a task cannot run now (``reason`` None: it can), and whether a
    skipped dependency means it must be skipped too."""

    reason: str | None
    skip: bool = False


# -- reads ------------------------------------------------------------------


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


def _names(identifiers: list[str]) -> str:
    shown = ", ".join(identifiers[:_NAMES_SHOWN])
    more = len(identifiers) - _NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def blocking(tx: Tx, task: sqlite3.Row) -> Blocking:
    """What keeps ``task`` from running now, from its approval and dependencies."""
    reasons: list[str] = []
    if task["approval_state"] == "pending":
        reasons.append("awaiting approval")
    deps = dependencies(tx, task["id"])
    skipped = [d["dep_identifier"] for d in deps if d["dep_skipped"]]
    if skipped:
        return Blocking(f"dependency {_names(skipped)} was skipped", skip=True)
    for status in ("failed", "canceled"):
        bad = [d["dep_identifier"] for d in deps if d["dep_status"] == status]
        if bad:
            noun = "dependency" if len(bad) == 1 else "dependencies"
            reasons.append(
                f"{noun} {_names(bad)} {status}; retry it (tasks.runs.enqueue) "
                "or remove the dependency"
            )
    waiting = [
        d["dep_identifier"]
        for d in deps
        if d["dep_status"] not in ("completed", "failed", "canceled")
    ]
    if waiting:
        reasons.append(f"waiting on {_names(waiting)}")
    return Blocking("; ".join(reasons) or None)


# -- conditions (workflow steps) ------------------------------------------------


def _lookup(value: Any, path: list[str]) -> tuple[bool, Any]:
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _conditions_hold(tx: Tx, task: sqlite3.Row) -> bool:
    """Evaluate a workflow step's conditions against the ``result`` of the
    referenced steps' latest completed runs (``steps.test.output.passed``)."""
    spec = from_json(task["step_spec"]) or {}
    for cond in spec.get("conditions", []):
        result = tx.one(
            "SELECT r.result FROM tasks t JOIN runs r ON r.task_id = t.id"
            " WHERE t.workflow_id = ? AND t.step_id = ? AND r.status = 'completed'"
            " ORDER BY r.id DESC LIMIT 1",
            (task["workflow_id"], cond["step"]),
        )
        found, value = _lookup(from_json(result[0]) if result else None, cond["path"])
        if cond["op"] == "exists":
            ok = found == bool(cond["value"])
        elif cond["op"] == "equals":
            ok = found and value == cond["value"]
        else:
            ok = not found or value != cond["value"]
        if not ok:
            return False
    return True


# -- the core: re-examine waiting tasks --------------------------------------------


def request_run(
    tx: Tx,
    caller: Caller,
    task: sqlite3.Row,
    *,
    input_json: str | None,
    idempotency_key: str | None,
) -> sqlite3.Row | None:
    """Queue a run for ``task`` now if nothing blocks it, else remember the
    request (with its input and key) and mark the task ``blocked``."""
    updated = tx.one(
        "UPDATE tasks SET run_requested = 1, requested_input = ?, requested_key = ?,"
        " updated_at = ? WHERE id = ? RETURNING *",
        (input_json, idempotency_key, tx.now, task["id"]),
    )
    assert updated is not None
    return refresh(tx, caller, updated)


def refresh(tx: Tx, caller: Caller, task: sqlite3.Row) -> sqlite3.Row | None:
    """Bring a waiting task (pending or blocked, not a draft) up to date with
    what blocks it: blocked with the reason, skipped, or — nothing blocking
    and a run requested — its run queued (returned)."""
    if task["draft"] or task["kind"] != "task" or task["status"] not in WAITING:
        return None
    block = blocking(tx, task)
    if block.skip and task["run_requested"]:
        _skip(tx, caller, task, block.reason or "skipped")
        return None
    if block.reason is not None:
        _set_waiting(tx, caller, task, "blocked", block.reason)
        return None
    if not task["run_requested"]:
        _set_waiting(tx, caller, task, "pending", None)
        return None
    if task["step_spec"] is not None and not _conditions_hold(tx, task):
        _skip(tx, caller, task, "condition not met")
        return None
    run = runs_store.enqueue_run(
        tx,
        caller,
        task,
        idempotency_key=task["requested_key"],
        input_json=task["requested_input"],
    )
    return run


def _set_waiting(
    tx: Tx, caller: Caller, task: sqlite3.Row, status: str, reason: str | None
) -> None:
    if task["status"] == status and task["blocking_reason"] == reason:
        return
    tx.execute(
        "UPDATE tasks SET status = ?, blocking_reason = ?, updated_at = ? WHERE id = ?",
        (status, reason, tx.now, task["id"]),
    )
    if status == "blocked":
        tx.emit("task.blocked", caller, task_id=task["id"], payload={"reason": reason})
    elif task["status"] == "blocked":
        tx.emit("task.unblocked", caller, task_id=task["id"])


def _skip(tx: Tx, caller: Caller, task: sqlite3.Row, reason: str) -> None:
    """A workflow step that will not run this time (GitHub Actions' skipped
    job): canceled with the reason; its dependents are skipped in turn."""
    tx.execute(
        "UPDATE tasks SET status = 'canceled', skipped = 1, closed_reason = ?, closed_at = ?,"
        " blocking_reason = NULL, run_requested = 0, requested_input = NULL,"
        " requested_key = NULL, updated_at = ? WHERE id = ?",
        (reason, tx.now, tx.now, task["id"]),
    )
    tx.emit("task.skipped", caller, task_id=task["id"], payload={"reason": reason})
    settle(tx, caller, task["id"])


def settle(tx: Tx, caller: Caller, task_id: str, parent_task_id: str | None = None) -> None:
    """``task_id`` changed status (finished, or got a run again): re-examine
    the tasks that wait for it and the container it sits in, and so on
    outwards. Iterative, so a long chain of skipped steps cannot overflow
    the stack; each task is looked up by primary key or index."""
    if parent_task_id is None:
        parent_task_id = tx.scalar("SELECT parent_task_id FROM tasks WHERE id = ?", (task_id,))
    todo: deque[tuple[str, str | None]] = deque([(task_id, parent_task_id)])
    while todo:
        changed, parent_id = todo.popleft()
        for dependent_id in dependents(tx, changed):
            row = tx.one("SELECT * FROM tasks WHERE id = ?", (dependent_id,))
            if row is not None and row["status"] in WAITING:
                # A skip inside refresh settles its own dependents.
                refresh(tx, caller, row)
        if parent_id is not None:
            parent = tx.one("SELECT * FROM tasks WHERE id = ?", (parent_id,))
            if parent is not None and parent["kind"] != "task" and _recompute(tx, caller, parent):
                todo.append((parent["id"], parent["parent_task_id"]))


def _recompute(tx: Tx, caller: Caller, container: sqlite3.Row) -> bool:
    """Derive a workflow's or branch's status from its children; True if it changed.

    Order of precedence: anything queued or running → ``in_progress``; a
    failed step → ``failed``; a blocked step → ``blocked`` (its reason);
    a canceled (not skipped) step → ``canceled``; a step not yet asked to
    run → ``pending``; every step skipped → skipped; else ``completed``.
    """
    rows = tx.all(
        "SELECT status, skipped, identifier, blocking_reason FROM tasks"
        " WHERE parent_task_id = ? ORDER BY id",
        (container["id"],),
    )
    statuses = {r["status"] for r in rows}
    reason = None
    skipped = 0
    if not rows:
        status = "pending"
    elif statuses & {"ready", "in_progress"}:
        status = "in_progress"
    elif "failed" in statuses:
        status = "failed"
    elif "blocked" in statuses:
        status = "blocked"
        first = next(r for r in rows if r["status"] == "blocked")
        reason = f"{first['identifier']}: {first['blocking_reason']}"
    elif any(r["status"] == "canceled" and not r["skipped"] for r in rows):
        status = "canceled"
    elif statuses & {"pending", "draft"}:
        status = "pending"
    elif all(r["skipped"] for r in rows):
        status, skipped, reason = "canceled", 1, "every step was skipped"
    else:
        status = "completed"
    closed = status in CLOSED
    if (
        status == container["status"]
        and skipped == container["skipped"]
        and (reason if not closed else None) == container["blocking_reason"]
    ):
        return False
    tx.execute(
        "UPDATE tasks SET status = ?, skipped = ?, blocking_reason = ?, closed_reason = ?,"
        " closed_at = ?, updated_at = ? WHERE id = ?",
        (
            status,
            skipped,
            None if closed else reason,
            reason if closed else None,
            tx.now if closed else None,
            tx.now,
            container["id"],
        ),
    )
    if status != container["status"]:
        tx.emit(
            "task.status_changed",
            caller,
            task_id=container["id"],
            payload={"from": container["status"], "to": status, "reason": reason},
        )
    return True


# -- dependencies -------------------------------------------------------------


def _cycle_path(tx: Tx, start: str, goal: str) -> list[str] | None:
    """Task ids from ``start`` to ``goal`` following depends-on edges, or None."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (prev := came_from[path[-1]]) is not None:
                path.append(prev)
            return list(reversed(path))
        for row in tx.all(
            "SELECT depends_on_task_id FROM task_dependencies WHERE task_id = ?", (node,)
        ):
            nxt = row[0]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return None


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
    task = tasks_store.find_task(tx, ref)
    dep = tasks_store.find_task(tx, depends_on_ref)
    if task["kind"] != "task":
        raise Conflict(
            f"task {task['identifier']} is a {task['kind']}; its steps' dependencies come from "
            "its workflow YAML (workflows.compose with update)",
            {"task_id": task["id"], "kind": task["kind"]},
        )
    path = [task["id"]] if dep["id"] == task["id"] else _cycle_path(tx, dep["id"], task["id"])
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
        run = runs_store.open_run_for_task(tx, task["id"])
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
    refresh(tx, caller, tasks_store.task_by_id(tx, task["id"]))
    return str(task["id"])


def remove_dependency(tx: Tx, caller: Caller, ref: str, depends_on_ref: str) -> str:
    """Drop one dependency; the task may become runnable (its requested run is queued)."""
    task = tasks_store.find_task(tx, ref)
    dep = tasks_store.find_task(tx, depends_on_ref)
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
    refresh(tx, caller, tasks_store.task_by_id(tx, task["id"]))
    return str(task["id"])


def add_initial_dependencies(tx: Tx, task_id: str, depends_on: list[str]) -> None:
    """Dependencies of a task being created: nothing depends on a new task
    yet, so no cycle is possible and no refresh is needed before it exists."""
    for ref in depends_on:
        dep = tasks_store.find_task(tx, ref)
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


def approve(tx: Tx, caller: Caller, ref: str, comment: str | None) -> tasks_store.Started:
    """Record the approval and queue the task's run (or keep it requested
    while dependencies are unmet)."""
    task = tasks_store.find_task(tx, ref)
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
    return tasks_store.Started(tasks_store.task_by_id(tx, task["id"]), run)


def reject(tx: Tx, caller: Caller, ref: str, reason: str | None) -> sqlite3.Row:
    """Close an approval-gated task as ``canceled``; its dependents stay blocked."""
    task = tasks_store.find_task(tx, ref)
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
    return tasks_store.task_by_id(tx, task["id"])


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
    root = tasks_store.find_task(tx, ref)
    ids = tasks_store.subtree_ids(tx, root["id"])
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
        runs_store.end_run_canceled(tx, caller, run, reason)
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
    return tasks_store.task_by_id(tx, root["id"])


# -- tree view ---------------------------------------------------------------------


@dataclass(slots=True)
class TreeNode:
    task: sqlite3.Row
    depth: int
    active_run: sqlite3.Row | None
    child_count: int


def tree(tx: Tx, ref: str) -> list[TreeNode]:
    """The task and its descendants, depth first (children in creation order)."""
    root = tasks_store.find_task(tx, ref)
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
            runs_store.open_run_for_task(tx, row["id"]),
            tasks_store.child_count(tx, row["id"]),
        )
        for row in rows
    ]
