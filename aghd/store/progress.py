"""What follows from the blocking rule: runs queued, tasks blocked or
skipped, containers re-derived.

Owns: ``request_run`` (a task asked to run while blocked keeps the request,
``run_requested``), ``refresh`` (bring a waiting task up to date with what
blocks it), ``settle`` (re-examine what waits on a task that changed, in
the same transaction as the change, so a completion and the runs it
unblocks commit together), the status of a container (a ``workflow`` root
or a ``group`` branch: derived from its children, never a run of its own),
and the run writes these and the layers above share (``enqueue_run``,
``end_run_canceled``, ``end_claim``). Must not: look up what a caller named
(``rows``), judge what blocks a task (``graph``), or claim, fence or finish
a run (``claims``, ``leases``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from agh.errors import Conflict
from agh.protocol import PRIORITY_RANK
from aghd.store.db import Caller, Tx, new_id
from aghd.store.graph import blocking, conditions_hold
from aghd.store.models import CLOSED, WAITING
from aghd.store.rows import dependents, open_run_for_task

if TYPE_CHECKING:
    import sqlite3


# -- re-examine waiting tasks ------------------------------------------------------


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
    if task["step_spec"] is not None and not conditions_hold(tx, task):
        _skip(tx, caller, task, "condition not met")
        return None
    run = enqueue_run(
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


# -- the run writes the rule needs --------------------------------------------------


def refuse_open_run(tx: Tx, task: sqlite3.Row) -> None:
    """Conflict (naming the run) when the task already has an open run."""
    current = open_run_for_task(tx, task["id"])
    if current is not None:
        raise Conflict(
            f"task {task['identifier']} already has run {current['id']} ({current['status']}); "
            "wait for it to finish or cancel it first",
            {"task_id": task["id"], "run_id": current["id"], "status": current["status"]},
        )


def enqueue_run(
    tx: Tx,
    caller: Caller,
    task: sqlite3.Row,
    *,
    idempotency_key: str | None,
    input_json: str | None,
) -> sqlite3.Row:
    """Queue a new run for a runnable task and mark the task ``ready``.

    Raises Conflict when the task already has an open run (one open run per
    task is an invariant, enforced again by a unique index).
    """
    refuse_open_run(tx, task)
    now = tx.now
    run = tx.one(
        "INSERT INTO runs (id, task_id, status, attempt, max_attempts, priority_rank,"
        " network_channel, queued_at, available_at, idempotency_key, input, origin_kind,"
        " origin_ref, created_at, workspace_id, workflow_id)"
        " VALUES (?,?,'queued',0,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING *",
        (
            new_id("run"),
            task["id"],
            task["max_attempts"],
            PRIORITY_RANK[task["priority"]],
            task["network_channel"],
            now,
            now,
            idempotency_key,
            input_json,
            caller.origin_kind,
            caller.origin_ref,
            now,
            task["workspace_id"],
            task["workflow_id"],
        ),
    )
    assert run is not None
    tx.execute(
        "UPDATE tasks SET status = 'ready', closed_at = NULL, closed_reason = NULL, skipped = 0,"
        " run_requested = 0, requested_input = NULL, requested_key = NULL,"
        " blocking_reason = NULL, updated_at = ?"
        " WHERE id = ?",
        (now, task["id"]),
    )
    tx.emit(
        "run.queued",
        caller,
        task_id=task["id"],
        run_id=run["id"],
        payload={"idempotency_key": idempotency_key} if idempotency_key else None,
    )
    tx.wake_claimers()
    return run


def end_claim(tx: Tx, run_id: str, reason: str) -> None:
    """End the run's open claim (if any) with ``reason``: its token is dead."""
    tx.execute(
        "UPDATE claims SET ended_at = ?, end_reason = ? WHERE run_id = ? AND ended_at IS NULL",
        (tx.now, reason, run_id),
    )


def end_run_canceled(tx: Tx, caller: Caller, run: sqlite3.Row, reason: str | None) -> sqlite3.Row:
    """Cancel one open run (queued or active) and end its claim; the task's
    status is the caller's to set."""
    updated = tx.one(
        "UPDATE runs SET status = 'canceled', ended_at = ?, lease_until = NULL, error = ?"
        " WHERE id = ? RETURNING *",
        (tx.now, reason, run["id"]),
    )
    assert updated is not None
    tx.execute("UPDATE tasks SET runs_canceled = runs_canceled + 1 WHERE id = ?", (run["task_id"],))
    end_claim(tx, run["id"], "canceled")
    tx.emit(
        "run.canceled",
        caller,
        task_id=run["task_id"],
        run_id=run["id"],
        payload={"reason": reason} if reason else None,
    )
    return updated
