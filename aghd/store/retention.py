"""Retention: deleting the old history of closed tasks, a bounded window at a
time.

Owns: which events and run log lines retention may delete, and deleting
them. An event may go once it is older than the cutoff and its task
closed (completed, failed, canceled) before the cutoff, or is gone
(deleted); a log line once it is older than the cutoff, its run has ended
and its task closed before the cutoff. A live task's history is never
touched, whatever its age, and a closed task's is kept whole until it has
been closed for as long as the retention (a task that ran for weeks and
just finished keeps its timeline). The newest event of the
log always stays: the log's last sequence is what streams and the dashboard
read as "how far the log goes", and it must never move back.

Each call walks one window of at most ``walk`` rows in key order (``seq``
for events, ``id`` for log lines: both grow with time, so the old rows are
the first ones) and deletes the deletable ones in it: one short write
transaction, however large the table. The caller walks on from the
returned cursor. No index beyond the primary keys is needed (and none is
paid by every write): the window is a rowid range, and each row's task is a
primary-key probe. No trigger reads these tables, so no kept count (the
dashboard's ``status_counts``, the inbox's ``inbox_triaged``) moves.

Must not: delete anything of a live task, or decide when to run (aghd's
``retention`` loop does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aghd.store.db import Tx

# Rows a window holds (each a delete and its index entries, at most).
WINDOW = 500


@dataclass(frozen=True, slots=True)
class Window:
    """What one call did: rows deleted, where the next window starts, and
    whether the walk has reached rows newer than the cutoff (or the end)."""

    deleted: int
    cursor: int
    done: bool


def prune_events(tx: Tx, cutoff_ms: int, after: int = 0, walk: int = WINDOW) -> Window:
    """Delete the events created before ``cutoff_ms`` of tasks closed before
    it (or deleted) among the ``walk`` events after sequence ``after``."""
    last = tx.one(
        "SELECT seq, created_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1 OFFSET ?",
        (after, walk - 1),
    )
    if last is None:
        end, done = int(tx.scalar("SELECT coalesce(max(seq), 0) FROM events")), True
    else:
        end, done = int(last["seq"]), last["created_at"] >= cutoff_ms
    cur = tx.execute(
        "DELETE FROM events WHERE seq > ? AND seq <= ? AND created_at < ?"
        " AND seq < (SELECT max(seq) FROM events)"
        # Kept: events of a task that is live, or closed at or after the cutoff.
        " AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = events.task_id AND ("
        " t.status != 'completed' AND t.status != 'failed' AND t.status != 'canceled'"
        " OR t.closed_at IS NULL OR t.closed_at >= ?))",
        (after, end, cutoff_ms, cutoff_ms),
    )
    return Window(cur.rowcount, max(end, after), done)


def prune_run_logs(tx: Tx, cutoff_ms: int, after: int = 0, walk: int = WINDOW) -> Window:
    """Delete the log lines written before ``cutoff_ms`` of ended runs of
    tasks closed before it among the ``walk`` lines after id ``after``."""
    last = tx.one(
        "SELECT id, created_at FROM run_logs WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
        (after, walk - 1),
    )
    if last is None:
        end, done = int(tx.scalar("SELECT coalesce(max(id), 0) FROM run_logs")), True
    else:
        end, done = int(last["id"]), last["created_at"] >= cutoff_ms
    cur = tx.execute(
        "DELETE FROM run_logs WHERE id > ? AND id <= ? AND created_at < ?"
        " AND EXISTS (SELECT 1 FROM runs r JOIN tasks t ON t.id = r.task_id"
        " WHERE r.id = run_logs.run_id AND r.ended_at IS NOT NULL"
        " AND (t.status = 'completed' OR t.status = 'failed' OR t.status = 'canceled')"
        " AND t.closed_at < ?)",
        (after, end, cutoff_ms, cutoff_ms),
    )
    return Window(cur.rowcount, max(end, after), done)
