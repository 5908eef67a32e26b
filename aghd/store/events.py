"""Reading the event log (writing happens through ``Tx.emit``)."""

from __future__ import annotations

import sqlite3

from aghd.store.db import Tx


def task_events(
    tx: Tx, task_id: str, after_sequence: int = 0, limit: int = 100
) -> list[sqlite3.Row]:
    """A task's events in sequence order (index ``events_task``)."""
    return tx.all(
        "SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (task_id, after_sequence, limit),
    )


def recent_task_events(tx: Tx, task_id: str, limit: int) -> list[sqlite3.Row]:
    """The newest ``limit`` events of a task, returned oldest first."""
    rows = tx.all(
        "SELECT * FROM events WHERE task_id = ? ORDER BY seq DESC LIMIT ?", (task_id, limit)
    )
    rows.reverse()
    return rows


def last_sequence(tx: Tx) -> int:
    return int(tx.scalar("SELECT coalesce(max(seq), 0) FROM events"))
