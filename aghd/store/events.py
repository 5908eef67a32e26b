"""Reading the event log (writing happens through ``Tx.emit``).

Owns: the reads of ``events`` a timeline or a stream needs, with the log
lines of a ``run.log`` event. Must not: write, or import a store module
above ``workspaces``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from aghd.store.db import Tx, from_json
from aghd.store.workspaces import find_workspace

if TYPE_CHECKING:
    import sqlite3


def recent_task_events(tx: Tx, task_id: str, limit: int) -> list[sqlite3.Row]:
    """The newest ``limit`` events of a task, returned oldest first."""
    rows = tx.all(
        "SELECT * FROM events WHERE task_id = ? ORDER BY seq DESC LIMIT ?", (task_id, limit)
    )
    rows.reverse()
    return rows


def task_timeline(tx: Tx, task_id: str, after: int, limit: int) -> list[sqlite3.Row]:
    """A task's events after sequence ``after``, oldest first (index events_task)."""
    return tx.all(
        "SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (task_id, after, limit),
    )


def last_sequence(tx: Tx) -> int:
    return int(tx.scalar("SELECT coalesce(max(seq), 0) FROM events"))


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What a subscription wants; None matches everything."""

    task_id: str | None = None
    workspace_id: str | None = None
    network_channel: str | None = None
    # A workspace named before it existed (a subscriber watching a project
    # that has no task yet): looked up again at each read until it exists,
    # then replaced by its workspace_id. Until then nothing matches.
    workspace_ref: str | None = None


@dataclass(slots=True)
class StreamBatch:
    events: list[sqlite3.Row]
    # Where the next read starts: the last event returned, or — when the
    # batch was not full — the end of the log as this snapshot saw it, so
    # events the filter skipped are never scanned again.
    cursor: int
    # The filter for the next read (its workspace resolved once it exists).
    filters: StreamFilter


def stream_batch(tx: Tx, filters: StreamFilter, after: int, limit: int) -> StreamBatch:
    """Committed events after ``after`` matching ``filters``, in sequence order.

    One read transaction (one snapshot): the high-water mark and the rows
    agree, so advancing to it can never skip an event committed later.
    """
    end = last_sequence(tx)
    if filters.workspace_ref is not None:
        # Same snapshot: a workspace created with its first task is seen
        # together with that task's events.
        ws = find_workspace(tx, filters.workspace_ref)
        if ws is None:
            return StreamBatch([], end, filters)
        filters = replace(filters, workspace_id=ws["id"], workspace_ref=None)
    if filters.task_id is not None:
        rows = tx.all(
            "SELECT * FROM events WHERE task_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (filters.task_id, after, end, limit),
        )
    elif filters.workspace_id is None and filters.network_channel is None:
        rows = tx.all(
            "SELECT * FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, end, limit),
        )
    else:
        where = ["e.seq > ?", "e.seq <= ?"]
        args: list[object] = [after, end]
        if filters.workspace_id is not None:
            where.append("t.workspace_id = ?")
            args.append(filters.workspace_id)
        if filters.network_channel is not None:
            where.append("t.network_channel = ?")
            args.append(filters.network_channel)
        args.append(limit)
        rows = tx.all(
            "SELECT e.* FROM events e JOIN tasks t ON t.id = e.task_id WHERE "
            + " AND ".join(where)
            + " ORDER BY e.seq LIMIT ?",
            args,
        )
    cursor = rows[-1]["seq"] if len(rows) == limit else end
    return StreamBatch(rows, cursor, filters)


@dataclass(slots=True)
class TimelineEntry:
    event: sqlite3.Row
    task: sqlite3.Row | None
    run: sqlite3.Row | None
    # The lines of a run.log event, while retention keeps them.
    logs: list[sqlite3.Row] | None = None


def timeline_entries(tx: Tx, rows: list[sqlite3.Row]) -> list[TimelineEntry]:
    """Each event with its task and run as they are now (looked up once per
    batch) and, for ``run.log`` events, their log lines."""
    tasks: dict[str, sqlite3.Row | None] = {}
    runs: dict[str, sqlite3.Row | None] = {}
    out = []
    for row in rows:
        task_id, run_id = row["task_id"], row["run_id"]
        if task_id is not None and task_id not in tasks:
            tasks[task_id] = tx.one("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if run_id is not None and run_id not in runs:
            runs[run_id] = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        logs = None
        if row["event_type"] == "run.log" and row["payload"] is not None:
            span = from_json(row["payload"])
            logs = tx.all(
                "SELECT * FROM run_logs WHERE run_id = ? AND id BETWEEN ? AND ? ORDER BY id",
                (run_id, span["first_id"], span["last_id"]),
            )
        out.append(
            TimelineEntry(
                row,
                None if task_id is None else tasks[task_id],
                None if run_id is None else runs[run_id],
                logs,
            )
        )
    return out
