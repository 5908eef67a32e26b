"""Run logs and the messages of a run's coordination channel.

Owns: the log lines agents write (``agent.log``) and the status or question
messages they post (``agent.send``) under their claim token, and the input
people send a task (``tasks.send``), delivered to its active run or kept
for its next one; a question marks the task as awaiting input until
someone answers. Must not: change a run's state (``leases`` does): it only
checks the fence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, NotFound
from aghd.store.db import Caller, Tx, to_json
from aghd.store.leases import fenced
from aghd.store.models import ACTIVE
from aghd.store.rows import find_run, find_task, open_run_for_task

if TYPE_CHECKING:
    import sqlite3

LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True, slots=True)
class NewLine:
    level: str
    message: str
    step: int | None
    metadata: Any


def append_logs(
    tx: Tx,
    caller: Caller,
    run_id: str,
    token_hash: str,
    lines: list[NewLine],
    retention: int,
) -> tuple[int, int]:
    """Store a batch of log lines for the caller's live run, trim the run's
    log to ``retention`` lines, and write one ``run.log`` event naming the
    span (stream subscribers get the lines with it). Returns (count, last id)."""
    run = fenced(tx, run_id, token_hash)
    first_id = last_id = 0
    for line in lines:
        last_id = (
            tx.execute(
                "INSERT INTO run_logs (run_id, task_id, level, message, step, metadata, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    run_id,
                    run["task_id"],
                    line.level,
                    line.message,
                    line.step,
                    to_json(line.metadata),
                    tx.now,
                ),
            ).lastrowid
            or 0
        )
        first_id = first_id or last_id
    # Ids grow per insert, so the newest `retention` lines of a run are the
    # ones above its (count - retention)-th newest id: one index range delete.
    tx.execute(
        "DELETE FROM run_logs WHERE run_id = ? AND id <= ("
        " SELECT id FROM run_logs WHERE run_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (run_id, run_id, retention),
    )
    tx.emit(
        "run.log",
        caller,
        task_id=run["task_id"],
        run_id=run_id,
        payload={"count": len(lines), "first_id": first_id, "last_id": last_id},
    )
    return len(lines), last_id


def read_logs(
    tx: Tx,
    ref: str,
    *,
    level: str | None,
    step: int | None,
    after: int,
    limit: int,
) -> tuple[str, list[sqlite3.Row]]:
    """Log lines of run ``ref`` (or of task ``ref``'s latest run) after id
    ``after``, at ``level`` or above. Returns (run id, lines)."""
    if ref.startswith("run_"):
        run_id = find_run(tx, ref)["id"]
    else:
        task = find_task(tx, ref)
        latest = tx.scalar(
            "SELECT id FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT 1", (task["id"],)
        )
        if latest is None:
            raise NotFound(
                f"task {task['identifier']} has no runs yet, so no logs",
                {"task_id": task["id"], "hint": "start it (agh start) and let an agent claim it"},
            )
        run_id = latest
    sql = "SELECT * FROM run_logs WHERE run_id = ? AND id > ?"
    args: list[Any] = [run_id, after]
    if level is not None and level != "debug":
        allowed = LEVELS[LEVELS.index(level) :]
        sql += f" AND level IN ({','.join('?' * len(allowed))})"
        args.extend(allowed)
    if step is not None:
        sql += " AND step = ?"
        args.append(step)
    sql += " ORDER BY id LIMIT ?"
    args.append(limit)
    return run_id, tx.all(sql, args)


# -- messages -----------------------------------------------------------------


def _insert_message(
    tx: Tx,
    caller: Caller,
    *,
    task_id: str,
    run_id: str | None,
    direction: str,
    kind: str,
    message: str,
) -> sqlite3.Row:
    row = tx.one(
        "INSERT INTO run_messages (task_id, run_id, direction, kind, message, actor_kind,"
        " actor_ref, created_at) VALUES (?,?,?,?,?,?,?,?) RETURNING *",
        (task_id, run_id, direction, kind, message, caller.actor_kind, caller.actor_ref, tx.now),
    )
    assert row is not None
    tx.emit(
        "message.sent" if direction == "to_agent" else "message.posted",
        caller,
        task_id=task_id,
        run_id=run_id,
        payload={"message_id": row["id"], "kind": kind, "message": message},
    )
    return row


def send_to_task(tx: Tx, caller: Caller, ref: str, message: str) -> tuple[sqlite3.Row, bool]:
    """Input for the task's active run, or kept for its next run. Answers a
    pending question. Returns (message, delivered to a live run now)."""
    task = find_task(tx, ref)
    if task["kind"] != "task":
        raise Conflict(
            f"task {task['identifier']} is a {task['kind']}: it never has a run to read input; "
            "send to one of its steps (agh tree shows them)",
            {"task_id": task["id"], "kind": task["kind"]},
        )
    run = open_run_for_task(tx, task["id"])
    live = run is not None and run["status"] in ACTIVE
    row = _insert_message(
        tx,
        caller,
        task_id=task["id"],
        run_id=run["id"] if live and run is not None else None,
        direction="to_agent",
        kind="input",
        message=message,
    )
    if task["awaiting_input"]:
        tx.execute(
            "UPDATE tasks SET awaiting_input = 0, blocking_reason = NULL, updated_at = ?"
            " WHERE id = ?",
            (tx.now, task["id"]),
        )
    return row, live


def agent_post(
    tx: Tx, caller: Caller, run_id: str, token_hash: str, message: str, kind: str
) -> sqlite3.Row:
    """A status or question from the agent holding the run; a question marks
    the task as awaiting input (blocking_reason says what it asks)."""
    run = fenced(tx, run_id, token_hash)
    row = _insert_message(
        tx,
        caller,
        task_id=run["task_id"],
        run_id=run_id,
        direction="from_agent",
        kind=kind,
        message=message,
    )
    if kind == "question":
        tx.execute(
            "UPDATE tasks SET awaiting_input = 1, blocking_reason = ?, updated_at = ? WHERE id = ?",
            (f"awaiting input: {message[:200]}", tx.now, run["task_id"]),
        )
    return row


def agent_messages(
    tx: Tx, run_id: str, token_hash: str, after: int, limit: int
) -> list[sqlite3.Row]:
    """Input for the caller's run after id ``after``: what was sent to this
    run, and what was sent to its task while no run held it (bound to this
    run now, so it is delivered once)."""
    run = fenced(tx, run_id, token_hash)
    tx.execute(
        "UPDATE run_messages SET run_id = ? WHERE task_id = ? AND run_id IS NULL"
        " AND direction = 'to_agent'",
        (run_id, run["task_id"]),
    )
    return tx.all(
        "SELECT * FROM run_messages WHERE run_id = ? AND direction = 'to_agent' AND id > ?"
        " ORDER BY id LIMIT ?",
        (run_id, after, limit),
    )
