"""Store rows → wire structs. Pure functions; no SQL, no I/O.

Times are stored as integer ms and leave here as RFC 3339 UTC with
milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agh import protocol as p
from aghd.store.db import event_id, from_json
from aghd.timefmt import ts

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from aghd.store.events import TimelineEntry

_MESSAGE_KINDS = ["input", "status", "question"]


def actor(kind: str | None, ref: str | None) -> p.Actor | None:
    return None if kind is None else p.Actor(kind, ref)  # type: ignore[arg-type]


def origin(kind: str | None, ref: str | None) -> p.Origin | None:
    return None if kind is None else p.Origin(kind, ref)  # type: ignore[arg-type]


def coordination_channel(run: sqlite3.Row) -> p.CoordinationChannel:
    """Every run has one coordination channel, named after the run."""
    return p.CoordinationChannel(
        allowed_message_kinds=_MESSAGE_KINDS,
        channel=f"run/{run['id']}",
        display_name=f"run {run['id']} attempt {run['attempt']}",
        id="chn_" + run["id"][4:],
        last_activity_at=ts(run["heartbeat_at"]),
        purpose="input and questions between the task's owner and the agent holding the run",
        run_id=run["id"],
        task_id=run["task_id"],
        workflow_id=run["workflow_id"],
        workspace_id=run["workspace_id"],
    )


def run(row: sqlite3.Row, *, channel: p.CoordinationChannel | None = None) -> p.Run:
    channel = channel or coordination_channel(row)
    return p.Run(
        attempt=row["attempt"],
        claim_token_hash=row["claim_token_hash"],
        claimed_at=ts(row["claimed_at"]),
        claimed_by=actor(row["claimed_by_kind"], row["claimed_by_ref"]),
        coordination_channel=channel,
        coordination_channel_id=channel.id,
        ended_at=ts(row["ended_at"]),
        error=row["error"],
        heartbeat_at=ts(row["heartbeat_at"]),
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        lease_until=ts(row["lease_until"]),
        metadata=from_json(row["metadata"]),
        network_channel=row["network_channel"],
        origin=origin(row["origin_kind"], row["origin_ref"]),
        queued_at=ts(row["queued_at"]),
        result=from_json(row["result"]),
        session_id=row["session_id"],
        started_at=ts(row["started_at"]),
        status=row["status"],
        task_id=row["task_id"],
        max_attempts=row["max_attempts"],
        input=from_json(row["input"]),
        available_at=ts(row["available_at"]) if row["status"] == "queued" else None,
    )


def lease(row: sqlite3.Row, *, channel: p.CoordinationChannel | None = None) -> p.Lease:
    channel = channel or coordination_channel(row)
    return p.Lease(
        claim_token_hash=row["claim_token_hash"],
        claimed_by=actor(row["claimed_by_kind"], row["claimed_by_ref"]),
        coordination_channel=channel,
        coordination_channel_id=channel.id,
        heartbeat_at=ts(row["heartbeat_at"]),
        lease_until=ts(row["lease_until"]),
        run_id=row["id"],
        session_id=row["session_id"],
        status=row["status"],
        task_id=row["task_id"],
        attempt=row["attempt"],
    )


def claimed(row: sqlite3.Row) -> tuple[p.Run, p.Lease]:
    """The run and lease of a claim reply, sharing one coordination channel."""
    channel = coordination_channel(row)
    return run(row, channel=channel), lease(row, channel=channel)


def task_summary(row: sqlite3.Row) -> p.TaskSummary:
    return p.TaskSummary(
        id=row["id"],
        identifier=row["identifier"],
        owner=actor(row["owner_kind"], row["owner_ref"]),
        priority=row["priority"],
        scope=row["scope"],
        status=row["status"],
        title=row["title"],
        workspace_id=row["workspace_id"],
    )


def task(row: sqlite3.Row) -> p.Task:
    return p.Task(
        approval_policy=row["approval_policy"],
        approval_state=row["approval_state"],
        closed_at=ts(row["closed_at"]),
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
        created_by=actor(row["created_by_kind"], row["created_by_ref"]),
        description=row["description"],
        draft=bool(row["draft"]),
        id=row["id"],
        identifier=row["identifier"],
        max_attempts=row["max_attempts"],
        metadata=from_json(row["metadata"]),
        network_channel=row["network_channel"],
        origin=origin(row["origin_kind"], row["origin_ref"]),
        owner=actor(row["owner_kind"], row["owner_ref"]),
        parent_task_id=row["parent_task_id"],
        priority=row["priority"],
        scope=row["scope"],
        status=row["status"],
        title=row["title"],
        updated_at=ts(row["updated_at"]),  # type: ignore[arg-type]
        workspace_id=row["workspace_id"],
        blocking_reason=row["blocking_reason"],
        closed_reason=row["closed_reason"],
        kind=row["kind"],
        workflow_id=row["workflow_id"],
        step_id=row["step_id"],
        approved_by=actor(row["approved_by_kind"], row["approved_by_ref"]),
        approved_at=ts(row["approved_at"]),
    )


def dependency(row: sqlite3.Row) -> p.Dependency:
    return p.Dependency(
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
        depends_on_task_id=row["depends_on_task_id"],
        kind=row["kind"],
        task_id=row["task_id"],
    )


def dependency_reference(row: sqlite3.Row) -> p.DependencyReference:
    """A dependency with a summary of the task depended on (``dep_`` columns)."""
    return p.DependencyReference(
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
        depends_on=p.TaskSummary(
            id=row["depends_on_task_id"],
            identifier=row["dep_identifier"],
            owner=actor(row["dep_owner_kind"], row["dep_owner_ref"]),
            priority=row["dep_priority"],
            scope=row["dep_scope"],
            status=row["dep_status"],
            title=row["dep_title"],
            workspace_id=row["dep_workspace_id"],
        ),
        depends_on_task_id=row["depends_on_task_id"],
        kind=row["kind"],
        task_id=row["task_id"],
    )


def workflow(row: sqlite3.Row) -> p.Workflow:
    return p.Workflow(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        root_task_id=row["root_task_id"],
        version=row["version"],
        vars=from_json(row["vars"]) or {},
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
        updated_at=ts(row["updated_at"]),  # type: ignore[arg-type]
    )


def tree_node(
    row: sqlite3.Row, depth: int, active_run: sqlite3.Row | None, child_count: int
) -> p.TreeNode:
    return p.TreeNode(
        active_run=None if active_run is None else run(active_run),
        child_count=child_count,
        depth=depth,
        last_activity_at=ts(row["last_activity_at"]),
        parent_task_id=row["parent_task_id"],
        task=task_summary(row),
        blocking_reason=row["blocking_reason"],
        closed_reason=row["closed_reason"],
    )


def task_list_item(
    row: sqlite3.Row,
    *,
    active_run: sqlite3.Row | None,
    child_count: int,
    dependencies: list[sqlite3.Row],
) -> p.TaskListItem:
    deps = [dependency_reference(d) for d in dependencies]
    return p.TaskListItem(
        active_run=None if active_run is None else run(active_run),
        approval_policy=row["approval_policy"],
        approval_state=row["approval_state"],
        child_count=child_count,
        closed_at=ts(row["closed_at"]),
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
        created_by=actor(row["created_by_kind"], row["created_by_ref"]),
        dependencies=deps,
        dependency_count=len(deps),
        draft=bool(row["draft"]),
        id=row["id"],
        identifier=row["identifier"],
        last_activity_at=ts(row["last_activity_at"]),
        max_attempts=row["max_attempts"],
        network_channel=row["network_channel"],
        origin=origin(row["origin_kind"], row["origin_ref"]),
        owner=actor(row["owner_kind"], row["owner_ref"]),
        parent_task_id=row["parent_task_id"],
        priority=row["priority"],
        scope=row["scope"],
        status=row["status"],
        title=row["title"],
        updated_at=ts(row["updated_at"]),  # type: ignore[arg-type]
        workspace_id=row["workspace_id"],
        blocking_reason=row["blocking_reason"],
        closed_reason=row["closed_reason"],
        kind=row["kind"],
        workflow_id=row["workflow_id"],
        step_id=row["step_id"],
    )


def event(row: sqlite3.Row) -> p.TaskEvent:
    return p.TaskEvent(
        actor=actor(row["actor_kind"], row["actor_ref"]),
        event_type=row["event_type"],
        id=event_id(row["seq"]),
        origin=origin(row["origin_kind"], row["origin_ref"]),
        payload=from_json(row["payload"]),
        run_id=row["run_id"],
        task_id=row["task_id"],
        timestamp=ts(row["created_at"]),  # type: ignore[arg-type]
        sequence=row["seq"],
    )


def timeline_item(entry: TimelineEntry) -> p.TimelineItem:
    row = entry.event
    return p.TimelineItem(
        actor=actor(row["actor_kind"], row["actor_ref"]),
        event_id=event_id(row["seq"]),
        event_type=row["event_type"],
        origin=origin(row["origin_kind"], row["origin_ref"]),
        payload=from_json(row["payload"]),
        run=None if entry.run is None else run(entry.run),
        sequence=row["seq"],
        task=None if entry.task is None else task_summary(entry.task),
        timestamp=ts(row["created_at"]),  # type: ignore[arg-type]
    )


def run_log(row: sqlite3.Row) -> p.RunLog:
    return p.RunLog(
        id=row["id"],
        run_id=row["run_id"],
        task_id=row["task_id"],
        level=row["level"],
        message=row["message"],
        step=row["step"],
        metadata=from_json(row["metadata"]),
        timestamp=ts(row["created_at"]),  # type: ignore[arg-type]
    )


def message(row: sqlite3.Row) -> p.Message:
    return p.Message(
        id=row["id"],
        task_id=row["task_id"],
        run_id=row["run_id"],
        direction=row["direction"],
        kind=row["kind"],
        message=row["message"],
        actor=actor(row["actor_kind"], row["actor_ref"]),
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
    )


def session(row: sqlite3.Row) -> p.Session:
    return p.Session(
        agent_name=row["agent_name"],
        channel=row["channel"],
        created_at=ts(row["created_at"]),  # type: ignore[arg-type]
        name=row["name"],
        session_id=row["session_id"],
        state=row["state"],
        updated_at=ts(row["updated_at"]),  # type: ignore[arg-type]
        workspace_id=row["workspace_id"],
    )


def page(
    rows: list[Any], limit: int, key: str | Callable[[Any], str]
) -> tuple[list[Any], str | None]:
    """Split ``limit + 1`` rows into the page and the next cursor (the key —
    a column name or a function — of the page's last row)."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], key(last) if callable(key) else last[key]


# -- observability (rows of aghd/store/observe.py) ------------------------------------


def active_run_item(
    row: sqlite3.Row, *, now: int, last_activity_at: int, stuck: bool, orphaned: bool, health: str
) -> p.ActiveRunItem:
    """A run row with its task's columns prefixed ``t_``."""
    return p.ActiveRunItem(
        age_ms=max(0, now - (row["claimed_at"] or now)),
        attempt=row["attempt"],
        error=row["error"],
        health_status=health,  # type: ignore[arg-type]
        last_activity_at=ts(last_activity_at),
        max_attempts=row["max_attempts"],
        network_channel=row["network_channel"],
        run_id=row["id"],
        run_status=row["status"],
        scope=row["t_scope"],
        session_id=row["session_id"],
        stuck=stuck,
        task_id=row["task_id"],
        task_identifier=row["t_identifier"],
        task_owner=actor(row["t_owner_kind"], row["t_owner_ref"]),
        task_priority=row["t_priority"],
        task_status=row["t_status"],
        task_title=row["t_title"],
        workspace_id=row["t_workspace_id"],
        orphaned=orphaned,
    )


def triage(row: sqlite3.Row) -> p.Triage:
    """A ``task_triage`` row; the stored '' of an actor without a ref is null here."""
    return p.Triage(
        actor=p.Actor(row["actor_kind"], row["actor_ref"] or None),
        archived=bool(row["archived"]),
        dismissed=bool(row["dismissed"]),
        last_seen_activity_at=ts(row["last_seen_activity_at"]),
        read=bool(row["read"]),
        task_id=row["task_id"],
        updated_at=ts(row["updated_at"]),
    )


def inbox_item(row: sqlite3.Row, run_row: sqlite3.Row | None, who: p.Actor) -> p.InboxItem:
    """A task row with ``lane``, ``unread`` and the actor's triage (``tr_``
    columns, NULL when the actor never triaged it). ``read`` and
    ``dismissed`` are as of now: newer activity undoes both."""
    unread = bool(row["unread"])
    return p.InboxItem(
        approval_policy=row["approval_policy"],
        approval_state=row["approval_state"],
        blocking_reason=row["blocking_reason"],
        lane=row["lane"],
        latest_activity_at=ts(row["last_activity_at"]),
        run=None if run_row is None else run(run_row),
        task=task_summary(row),
        triage=p.Triage(
            actor=who,
            archived=bool(row["tr_archived"]),
            dismissed=bool(row["tr_dismissed"]) and not unread,
            last_seen_activity_at=ts(row["tr_last_seen"]),
            read=not unread,
            task_id=row["id"],
            updated_at=ts(row["tr_updated_at"]),
        ),
    )
