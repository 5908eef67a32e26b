"""Reading the event log (writing happens through ``Tx.emit``)."""

from __future__ import annotations

import sqlite3

from aghd.store.db import Tx


def recent_task_events(tx: Tx, task_id: str, limit: int) -> list[sqlite3.Row]:
    """The newest ``limit`` events of a task, returned oldest first."""
    rows = tx.all(
        "SELECT * FROM events WHERE task_id = ? ORDER BY seq DESC LIMIT ?", (task_id, limit)
    )
    rows.reverse()
    return rows
