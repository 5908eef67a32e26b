"""Observability reads: the figures of ``observe.dashboard``, the lanes of
``observe.inbox``, and each actor's inbox triage (``tasks.triage.*``).

Owns: their SQL and the health rules below. Must not: build wire structs
(aghd/views.py and the observe handler do), emit events (triage is one
person's view of a task, not a change to it: an event would bump the
task's activity and make it unread for everyone else), or read more than
the newest rows of the events table.

Speed (docs/PERFORMANCE.md: under 50 ms with 1M tasks and 2M events):
no figure reads a table from end to end. Unfiltered, ready and in-progress
tasks are counted from their ranges of ``tasks_status``; every other task
status, the ended runs by status and the forced stops from
``status_counts`` (kept by triggers, migration 8); queued runs from the
claim indexes; active runs from ``runs_lease``; latencies from the tail of
the claims table (appended in time order); the latest activity is the
newest event. Any
filter is answered from ``tasks_facets``, which holds every filtered
column, each task's tallies of its ended runs and forced stops, and its
id, so a filter's task counts, run totals and queue depth are sums over
index entries (one range per status, narrowed to the workspace when one
is named) and no task row is read. In-progress tasks are not in that index
(claims and completions stay cheap): they are reached through their active
runs, as are the runs' latencies (one task lookup per run).

The inbox (under 50 ms with 1M tasks and 43k triage rows of one actor):
unfiltered, a lane's size is a range count of ``tasks_inbox`` (the shared
lanes) or ``tasks_inbox_open`` (an owner's waiting work; its tasks in
progress, a few, come from ``tasks_status``), what the actor's
triage hides or shows read comes from ``inbox_triaged`` (kept by the
triggers of migration 9), and the items are the lane's index walked newest
first until the limit. A filter (scope, workspace, query, unread only)
reads every matching task once instead: the same answer, which
tests/test_inbox_counts.py holds the kept one to.

The health rules are pure functions in ``aghd/health.py``; the rules, the
figures and the inbox lanes are documented in agh-protocol(7) (METHODS,
observe.dashboard and observe.inbox), and nowhere else.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from agh.protocol import PRIORITY_RANK, HealthStatus, RunStatus, TaskStatus
from aghd.health import (
    Thresholds,
    freshness_health,
    in_progress_health,
    queue_health,
    run_health,
    worst,
)
from aghd.store.rows import find_task
from aghd.store.workspaces import find_workspace

if TYPE_CHECKING:
    import sqlite3

    from aghd.store.db import Tx

# In the protocol's order (the dashboard's status_breakdown follows it).
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
LANES = ("my_work", "approvals", "failed_runs", "blocked", "archived")
# A filtered queue with at most this many queued runs on a channel finds its
# oldest through each run; a larger one walks the queue in order instead.
_FEW_QUEUED = 500
# How far back the newest events are searched for a filter's latest activity.
_EVENTS_WALKED = 2_000


# -- the dashboard ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """Task filters shared by the dashboard's figures (all: no filter)."""

    scope: str | None = None
    workspace: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    network_channel: str | None = None
    origin_kind: str | None = None


@dataclass(slots=True)
class Latency:
    samples: int = 0
    total_ms: float = 0
    maximum_ms: int = 0

    @property
    def average_ms(self) -> int:
        return round(self.total_ms / self.samples) if self.samples else 0


@dataclass(slots=True)
class ActiveRun:
    """An active run (``runs.*``) with its task's columns (``t_``) and what
    the rules make of it."""

    row: sqlite3.Row
    last_activity_at: int
    stuck: bool
    orphaned: bool
    health: str


@dataclass(slots=True)
class ChannelDepth:
    network_channel: str | None
    count: int
    oldest_queued_at: int | None


@dataclass(slots=True)
class DashboardFigures:
    now: int
    thresholds: Thresholds
    # Every task and run status is a key, zero when none.
    tasks: dict[str, int]
    runs: dict[str, int]
    # Blocked tasks whose approval is pending (the rest wait for dependencies).
    awaiting_approval: int = 0
    forced_stops: int = 0
    # Latest activity first, at most the requested number.
    active_items: list[ActiveRun] = field(default_factory=list)
    stuck_runs: int = 0
    orphan_runs: int = 0
    # Active runs that are stuck or orphaned (or both).
    troubled_runs: int = 0
    depth: list[ChannelDepth] = field(default_factory=list)
    claim_latency: Latency = field(default_factory=Latency)
    start_latency: Latency = field(default_factory=Latency)
    latest_activity_at: int | None = None

    @property
    def active_runs(self) -> int:
        return self.runs["claimed"] + self.runs["starting"] + self.runs["running"]

    @property
    def oldest_queued_at(self) -> int | None:
        queued = [d.oldest_queued_at for d in self.depth if d.oldest_queued_at is not None]
        return min(queued, default=None)

    def age(self, at: int | None) -> int | None:
        return None if at is None else max(0, self.now - at)

    @property
    def queue_status(self) -> HealthStatus:
        return queue_health(self.age(self.oldest_queued_at), self.thresholds.backlog_threshold_ms)

    @property
    def has_live_work(self) -> bool:
        return self.runs["queued"] + self.active_runs > 0

    @property
    def stale(self) -> bool:
        age = self.age(self.latest_activity_at)
        return self.has_live_work and age is not None and age > self.thresholds.stale_after_ms

    @property
    def in_progress_status(self) -> HealthStatus:
        return in_progress_health(self.active_runs, self.troubled_runs)

    @property
    def status(self) -> HealthStatus:
        return worst(self.queue_status, self.in_progress_status, freshness_health(self.stale))


@dataclass(frozen=True, slots=True)
class _Where:
    """The task filter as SQL on alias ``t`` over the columns of
    ``tasks_facets`` (so no task row is read), or no filter at all."""

    sql: str = ""
    args: tuple[Any, ...] = ()
    # The filter names a workspace that does not exist.
    matches_nothing: bool = False

    @property
    def filtered(self) -> bool:
        return bool(self.sql)

    @property
    def run_filter(self) -> str:
        """Keep the runs ``r`` of matching tasks: a lookup per run, because
        a join makes SQLite build a Bloom filter over every matching task
        first, which costs more than the few runs it filters."""
        if not self.sql:
            return ""
        return f" AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.task_id AND {self.sql})"

    def tasks_in(self, task_status: str) -> tuple[str, str]:
        """FROM and WHERE clauses for the matching tasks ``t`` in
        ``task_status`` (not in_progress: those are not in the index): a
        range of ``tasks_facets`` (narrowed to the workspace when one is
        named), the rest of the filter read from the index entries."""
        return (
            "tasks t INDEXED BY tasks_facets",
            # The index's own predicate, restated so SQLite may use it.
            f"t.status = '{task_status}' AND t.status != 'in_progress' AND {self.sql}",
        )

    def queued_runs(self) -> tuple[str, str]:
        """FROM and WHERE clauses for the queued runs ``r`` of the matching
        tasks ``t``: a task has its queued run exactly while it is ready
        (the store changes both in one transaction)."""
        tables, matching = self.tasks_in("ready")
        return (
            f"{tables} CROSS JOIN runs r INDEXED BY runs_one_open_per_task"
            " ON r.task_id = t.id AND r.ended_at IS NULL",
            matching,
        )


def _where(tx: Tx, filters: Filters) -> _Where:
    terms: list[str] = []
    args: list[Any] = []
    if filters.workspace is not None:
        ws = find_workspace(tx, filters.workspace)
        if ws is None:
            return _Where(matches_nothing=True)
        terms.append("t.workspace_id = ?")
        args.append(ws["id"])
    for column, value in (
        ("scope", filters.scope),
        ("owner_kind", filters.owner_kind),
        ("owner_ref", filters.owner_ref),
        ("network_channel", filters.network_channel),
        ("origin_kind", filters.origin_kind),
    ):
        if value is not None:
            # "+": never an index key. Given statistics, SQLite would
            # otherwise skip-scan tasks_facets on these columns, which costs
            # several times reading the status's (and workspace's) range.
            terms.append(f"+t.{column} = ?")
            args.append(value)
    return _Where(" AND ".join(terms), tuple(args))


def dashboard(
    tx: Tx, filters: Filters, thresholds: Thresholds, items_limit: int = 100
) -> DashboardFigures:
    """Every figure of ``observe.dashboard`` for the tasks matching ``filters``,
    read in one transaction (one consistent snapshot). Raises nothing: an
    unknown workspace matches no task."""
    where = _where(tx, filters)
    figures = DashboardFigures(
        now=tx.now,
        thresholds=thresholds,
        tasks=dict.fromkeys(TASK_STATUSES, 0),
        runs=dict.fromkeys(RUN_STATUSES, 0),
    )
    if where.matches_nothing:
        return figures
    if where.filtered:
        _facet_counts(tx, where, figures)
        _filtered_queue(tx, where, figures)
    else:
        counts = _status_counts(tx)
        _task_counts(tx, figures, counts)
        _queue(tx, figures)
        for status in ("completed", "failed", "canceled"):
            figures.runs[status] = counts.get(("run", status), 0)
        figures.forced_stops = counts.get(("forced", ""), 0)
    _active_runs(tx, where, figures, items_limit)
    figures.latest_activity_at = _latest_activity(tx, where)
    _latency(tx, where, figures)
    return figures


def _status_counts(tx: Tx) -> dict[tuple[str, str], int]:
    """What the triggers of migration 8 keep in ``status_counts``."""
    return {
        (tally, status): n
        for tally, status, n in tx.all("SELECT tally, status, n FROM status_counts")
    }


def _task_counts(tx: Tx, figures: DashboardFigures, counts: dict[tuple[str, str], int]) -> None:
    """Ready and in-progress tasks (the ones a claim moves) by a range count
    each, the rest from their kept counts."""
    for status in TASK_STATUSES:
        if status in ("ready", "in_progress"):
            figures.tasks[status] = tx.scalar(
                "SELECT count(*) FROM tasks INDEXED BY tasks_status WHERE status = ?", (status,)
            )
        else:
            figures.tasks[status] = counts.get(("task", status), 0)
    figures.awaiting_approval = tx.scalar(
        "SELECT count(*) FROM tasks INDEXED BY tasks_awaiting_approval"
        " WHERE approval_state = 'pending' AND status = 'blocked'"
    )


def _facet_counts(tx: Tx, where: _Where, figures: DashboardFigures) -> None:
    """Filtered: task counts, awaiting approval, and the ended runs of the
    matching tasks from their tallies — one range of ``tasks_facets`` per
    status, no row read."""
    runs = figures.runs
    for status in TASK_STATUSES:
        if status == "in_progress":
            continue  # counted with their active runs (_active_runs)
        tables, matching = where.tasks_in(status)
        row = tx.one(
            "SELECT count(*), total(t.approval_state = 'pending'), total(t.runs_completed),"
            f" total(t.runs_failed), total(t.runs_canceled), total(t.runs_forced) FROM {tables}"
            f" WHERE {matching}",
            where.args,
        )
        assert row is not None
        count, pending, completed, failed, canceled, forced = (int(n) for n in row)
        figures.tasks[status] = count
        if status == "blocked":
            figures.awaiting_approval = pending
        runs["completed"] += completed
        runs["failed"] += failed
        runs["canceled"] += canceled
        figures.forced_stops += forced


def _latest_activity(tx: Tx, where: _Where) -> int | None:
    """Every change writes an event, so the newest event (of the matching
    tasks) is the latest activity. Matching tasks that none of the newest
    ``_EVENTS_WALKED`` events touched are quiet: their rows answer."""
    if not where.filtered:
        latest: int | None = tx.scalar(
            "SELECT created_at FROM events WHERE seq = (SELECT max(seq) FROM events)"
        )
        return latest
    newest = tx.scalar("SELECT max(seq) FROM events") or 0
    latest = tx.scalar(
        "SELECT e.created_at FROM events e WHERE e.seq > ? AND EXISTS (SELECT 1 FROM tasks t"
        f" WHERE t.id = e.task_id AND {where.sql}) ORDER BY e.seq DESC LIMIT 1",
        (newest - _EVENTS_WALKED, *where.args),
    )
    if latest is None:
        latest = tx.scalar(
            f"SELECT max(t.last_activity_at) FROM tasks t WHERE {where.sql}", where.args
        )
    return latest


def _queue(tx: Tx, figures: DashboardFigures) -> None:
    """Queued runs per network channel, with the oldest ``queued_at`` of each.
    Both claim indexes are covering for this, so no run row is read."""
    total = tx.scalar("SELECT count(*) FROM runs INDEXED BY runs_claim WHERE status = 'queued'")
    channels = [
        ChannelDepth(c, n, oldest)
        for c, n, oldest in tx.all(
            "SELECT network_channel, count(*), min(queued_at) FROM runs"
            " INDEXED BY runs_claim_channel"
            " WHERE status = 'queued' AND network_channel IS NOT NULL"
            " GROUP BY network_channel ORDER BY network_channel"
        )
    ]
    unchanneled = total - sum(d.count for d in channels)
    if unchanneled:
        channels.insert(0, ChannelDepth(None, unchanneled, _oldest_queued(tx, None, _Where())))
    figures.depth = channels
    figures.runs["queued"] = total


def _filtered_queue(tx: Tx, where: _Where, figures: DashboardFigures) -> None:
    """Filtered queue depth: a matching task is ready exactly while it has
    its queued run, on the task's channel, so the depth per channel is a
    count of ``tasks_facets`` entries; only the oldest of each channel
    needs the runs."""
    tables, matching = where.tasks_in("ready")
    depth = tx.all(
        f"SELECT t.network_channel, count(*) FROM {tables} WHERE {matching}"
        " GROUP BY t.network_channel ORDER BY t.network_channel IS NOT NULL, t.network_channel",
        where.args,
    )
    figures.depth = [ChannelDepth(c, n, _oldest_queued(tx, c, where, n)) for c, n in depth]
    figures.runs["queued"] = sum(n for _c, n in depth)


def _oldest_queued(tx: Tx, channel: str | None, where: _Where, matching: int = 0) -> int | None:
    """The oldest ``queued_at`` among the queued runs on ``channel`` (None:
    without one) of the tasks matching ``where``.

    Few matching runs (``matching``): each one's run is looked up. Else the
    queue is walked oldest first within each priority rank until a run of
    a matching task turns up; the first match is near the front unless the
    filter holds a small share of the queue."""
    if where.filtered and matching <= _FEW_QUEUED:
        tables, ready = where.queued_runs()
        oldest: int | None = tx.scalar(
            f"SELECT min(r.queued_at) FROM {tables} WHERE {ready} AND t.network_channel IS ?",
            (*where.args, channel),
        )
        return oldest
    index, on_channel = (
        ("runs_claim", "r.network_channel IS NULL")
        if channel is None
        else ("runs_claim_channel", "r.network_channel = ?")
    )
    firsts = [
        tx.scalar(
            f"SELECT r.queued_at FROM runs r INDEXED BY {index} WHERE r.status = 'queued'"
            f" AND r.priority_rank = ? AND {on_channel}{where.run_filter}"
            " ORDER BY r.queued_at LIMIT 1",
            (rank, *(() if channel is None else (channel,)), *where.args),
        )
        for rank in sorted(set(PRIORITY_RANK.values()))
    ]
    return min((q for q in firsts if q is not None), default=None)


def _active_runs(tx: Tx, where: _Where, figures: DashboardFigures, items_limit: int) -> None:
    """Claimed, starting and running runs (those holding a lease): counted
    and judged in one pass over narrow tuples; only the items shown are
    read in full. Filtered, their tasks are the matching in-progress tasks
    (a task is in progress exactly while it has its active run), counted
    here with their tallies of earlier runs."""
    cursor = tx.execute(
        "SELECT r.rowid, r.status, max(coalesce(r.heartbeat_at, 0), coalesce(r.claimed_at, 0),"
        " coalesce(r.started_at, 0)), s.state = 'disconnected', t.runs_completed,"
        " t.runs_failed, t.runs_canceled, t.runs_forced"
        " FROM runs r INDEXED BY runs_lease CROSS JOIN tasks t ON t.id = r.task_id"
        " LEFT JOIN sessions s ON s.session_id = r.session_id"
        f" WHERE r.lease_until IS NOT NULL AND {where.sql or '1'}",
        where.args,
    )
    cursor.row_factory = None  # plain tuples: this loop may see thousands of runs
    stuck_before = figures.now - figures.thresholds.stuck_after_ms
    judged: list[tuple[int, int, bool, bool]] = []
    runs = figures.runs
    tallies = [0, 0, 0, 0]
    for rowid, status, last, disconnected, *earlier in cursor:
        runs[status] += 1
        tallies = [a + b for a, b in zip(tallies, earlier, strict=True)]
        stuck, orphaned = last < stuck_before, bool(disconnected)
        figures.stuck_runs += stuck
        figures.orphan_runs += orphaned
        figures.troubled_runs += stuck or orphaned
        judged.append((last, rowid, stuck, orphaned))
    if where.filtered:
        figures.tasks["in_progress"] = len(judged)
        runs["completed"] += tallies[0]
        runs["failed"] += tallies[1]
        runs["canceled"] += tallies[2]
        figures.forced_stops += tallies[3]
    judged.sort(reverse=True)
    for last, rowid, stuck, orphaned in judged[:items_limit]:
        row = tx.one(
            "SELECT r.*, t.identifier AS t_identifier, t.title AS t_title,"
            " t.status AS t_status, t.priority AS t_priority, t.scope AS t_scope,"
            " t.workspace_id AS t_workspace_id, t.owner_kind AS t_owner_kind,"
            " t.owner_ref AS t_owner_ref"
            " FROM runs r CROSS JOIN tasks t ON t.id = r.task_id WHERE r.rowid = ?",
            (rowid,),
        )
        assert row is not None
        figures.active_items.append(
            ActiveRun(row, last, stuck, orphaned, run_health(stuck, orphaned))
        )


def _latency(tx: Tx, where: _Where, figures: DashboardFigures) -> None:
    """Claim and start latencies of the runs claimed in the window, from the
    claims table: it is appended in time order, so the window is its tail
    (found by bisecting on id; a clock stepped back blurs the edge only).
    A claim counts while it is its run's current one."""
    first = _first_claim_since(tx, figures.now - figures.thresholds.latency_window_ms)
    if first is None:
        return
    claim = "r.claimed_at >= r.available_at"
    start = "r.started_at >= r.claimed_at"
    row = tx.one(
        f"SELECT count(*) FILTER (WHERE {claim}),"
        f" total(r.claimed_at - r.available_at) FILTER (WHERE {claim}),"
        f" max(r.claimed_at - r.available_at) FILTER (WHERE {claim}),"
        f" count(*) FILTER (WHERE {start}),"
        f" total(r.started_at - r.claimed_at) FILTER (WHERE {start}),"
        f" max(r.started_at - r.claimed_at) FILTER (WHERE {start})"
        " FROM claims c CROSS JOIN runs r ON r.id = c.run_id"
        " WHERE c.id >= ? AND r.attempt = c.attempt AND r.claimed_at = c.claimed_at"
        f" AND r.status != 'queued'{where.run_filter}",
        (first, *where.args),
    )
    assert row is not None
    figures.claim_latency = Latency(row[0], row[1], row[2] or 0)
    figures.start_latency = Latency(row[3], row[4], row[5] or 0)


def _first_claim_since(tx: Tx, since: int) -> int | None:
    """The id of the first claim made at or after ``since``, or None."""
    # Two statements: SQLite answers a lone min() or max() from the b-tree's
    # edge, but scans the table for both in one.
    low, high = tx.scalar("SELECT min(id) FROM claims"), tx.scalar("SELECT max(id) FROM claims")
    if high is None or tx.scalar("SELECT claimed_at FROM claims WHERE id = ?", (high,)) < since:
        return None
    probe = "SELECT claimed_at FROM claims WHERE id >= ? ORDER BY id LIMIT 1"
    while low < high:
        middle = (low + high) // 2
        if tx.scalar(probe, (middle,)) >= since:
            high = middle
        else:
            low = middle + 1
    return int(low)


# -- the inbox ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxQuery:
    actor_kind: str
    actor_ref: str | None
    scope: str | None = None
    workspace: str | None = None
    query: str | None = None
    unread_only: bool = False
    limit: int = 100
    # The one lane whose items are wanted (None: every lane but archived).
    lane: str | None = None

    def shown(self) -> list[str]:
        """The lanes whose items the answer carries (every lane is counted)."""
        return [self.lane] if self.lane else [lane for lane in LANES if lane != "archived"]


@dataclass(slots=True)
class InboxEntry:
    """A task row (``tasks.*``) with the actor's triage (``tr_`` columns,
    NULL without a row), its ``lane`` and ``unread``, and the task's open
    run or else its latest run."""

    task: sqlite3.Row
    run: sqlite3.Row | None


@dataclass(slots=True)
class Lane:
    count: int = 0
    unread: int = 0
    entries: list[InboxEntry] = field(default_factory=list)


# The lane of a live (not archived) task, in the order of agh-protocol(7),
# or NULL. The filtered inbox finds them in one sequential pass over the
# tasks: the lanes together hold tens of thousands of a large hub's tasks,
# and reading those through indexes one row at a time costs several times
# a scan.
_LANE = """CASE
 WHEN t.draft = 1 THEN NULL
 WHEN t.approval_state = 'pending' THEN 'approvals'
 WHEN t.status = 'failed' THEN 'failed_runs'
 WHEN t.status = 'blocked' THEN 'blocked'
 WHEN t.status NOT IN ('pending', 'ready', 'in_progress') THEN NULL
 WHEN t.awaiting_input = 1 THEN 'blocked'
 WHEN t.owner_kind = :kind AND t.owner_ref IS :owner_ref THEN 'my_work'
END"""

# Newer activity than the actor last saw (never triaged: everything is new).
_UNREAD = "(t.last_activity_at > coalesce(tr.last_seen_activity_at, -1))"
_TRIAGE_COLUMNS = (
    "tr.read AS tr_read, tr.dismissed AS tr_dismissed, tr.archived AS tr_archived,"
    " tr.last_seen_activity_at AS tr_last_seen, tr.updated_at AS tr_updated_at,"
    f" {_UNREAD} AS unread"
)


def inbox(tx: Tx, q: InboxQuery) -> dict[str, Lane]:
    """Every lane (see the module docstring) for ``q``'s actor: its count and
    unread count, and its newest ``q.limit`` items. Raises nothing: an
    unknown workspace matches no task.

    Unfiltered, from what migration 9 keeps (``_kept_inbox``); a filter
    (scope, workspace, query, unread only) reads the matching tasks."""
    if (
        q.scope is None
        and q.workspace is None
        and not q.query
        and not q.unread_only
        and q.actor_ref != ""  # '' and None share a triage row but not an owner
    ):
        return _kept_inbox(tx, q)
    return _scanned_inbox(tx, q)


def _scanned_inbox(tx: Tx, q: InboxQuery) -> dict[str, Lane]:
    """The inbox from the matching tasks themselves, one sequential pass
    (any filter; and what tests hold ``_kept_inbox`` to)."""
    terms = ["1"]
    args: dict[str, Any] = {
        "kind": q.actor_kind,
        "ref": q.actor_ref or "",
        "owner_ref": q.actor_ref,
    }
    if q.workspace is not None:
        ws = find_workspace(tx, q.workspace)
        terms.append("t.workspace_id = :ws")
        args["ws"] = None if ws is None else ws["id"]
    if q.scope is not None:
        terms.append("t.scope = :scope")
        args["scope"] = q.scope
    if q.query:
        terms.append("(t.identifier = :ident OR t.title LIKE :title ESCAPE '\\')")
        escaped = q.query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args["ident"] = q.query.upper()
        args["title"] = f"%{escaped}%"
    if q.unread_only:
        terms.append(_UNREAD)
    where = " AND ".join(terms)

    # Narrow tuples for every item: lanes hold thousands of items, and
    # counting and picking the newest in Python beats SQL window functions
    # (which sort every row once per window).
    hidden = (
        "coalesce(tr.archived, 0) = 0 AND NOT (coalesce(tr.dismissed, 0) = 1"
        " AND t.last_activity_at <= tr.last_seen_activity_at)"
    )
    live = tx.execute(
        f"SELECT {_LANE} AS lane, t.last_activity_at, t.id, t.rowid, {_UNREAD}"
        " FROM tasks t NOT INDEXED LEFT JOIN task_triage tr"
        "  ON tr.actor_kind = :kind AND tr.actor_ref = :ref AND tr.task_id = t.id"
        f" WHERE lane IS NOT NULL AND {hidden} AND {where}",
        args,
    )
    live.row_factory = None
    archived = tx.execute(
        f"SELECT 'archived', t.last_activity_at, t.id, t.rowid, {_UNREAD}"
        " FROM task_triage tr CROSS JOIN tasks t ON t.id = tr.task_id"
        f" WHERE tr.actor_kind = :kind AND tr.actor_ref = :ref AND tr.archived = 1 AND {where}",
        args,
    )
    archived.row_factory = None
    items: dict[str, list[tuple[int, str, int]]] = {lane: [] for lane in LANES}
    lanes = {lane: Lane() for lane in LANES}
    for cursor in (live, archived):
        for name, last, task_id, rowid, unread in cursor:
            items[name].append((last, task_id, rowid))
            lanes[name].unread += unread
    shown = q.shown()
    for name, lane in lanes.items():
        lane.count = len(items[name])
        if name in shown:
            newest = heapq.nlargest(q.limit, items[name])
            _add_entries(tx, q, name, lane, [rowid for _last, _id, rowid in newest])
    return lanes


def _add_entries(tx: Tx, q: InboxQuery, name: str, lane: Lane, rowids: list[int]) -> None:
    """The items of ``lane`` (called ``name``): the tasks at ``rowids``, in
    that order, with the actor's triage and their run (two statements for
    all of them: a statement per item was a third of a big inbox)."""
    if not rowids:
        return
    wanted = json.dumps(rowids)
    rows = {
        row["rowid_"]: row
        for row in tx.all(
            f"SELECT t.*, t.rowid AS rowid_, ? AS lane, {_TRIAGE_COLUMNS} FROM tasks t"
            " LEFT JOIN task_triage tr"
            " ON tr.actor_kind = ? AND tr.actor_ref = ? AND tr.task_id = t.id"
            " WHERE t.rowid IN (SELECT value FROM json_each(?))",
            (name, q.actor_kind, q.actor_ref or "", wanted),
        )
    }
    # Each task's open run, else its latest: the first of its runs in this order.
    runs: dict[str, sqlite3.Row] = {}
    for run in tx.all(
        "SELECT r.* FROM runs r WHERE r.task_id IN"
        " (SELECT t.id FROM tasks t WHERE t.rowid IN (SELECT value FROM json_each(?)))"
        " ORDER BY r.task_id, r.ended_at IS NULL DESC, r.id DESC",
        (wanted,),
    ):
        runs.setdefault(run["task_id"], run)
    for rowid in rowids:
        row = rows[rowid]
        lane.entries.append(InboxEntry(row, runs.get(row["id"])))


# The owner-free lane of a task, exactly as migration 9's tasks_inbox is
# keyed: _LANE, with "open" for a pending, ready or in-progress task that is
# my_work for its owner. The indexes' predicates follow, restated so SQLite
# may use them.
_TASK_LANE = (
    "CASE WHEN draft = 1 THEN NULL WHEN approval_state = 'pending' THEN 'approvals'"
    " WHEN status = 'failed' THEN 'failed_runs' WHEN status = 'blocked' THEN 'blocked'"
    " WHEN status != 'pending' AND status != 'ready' AND status != 'in_progress'"
    " THEN NULL WHEN awaiting_input = 1 THEN 'blocked' ELSE 'open' END"
)
# Shown to the actor of ``tr`` (the scan's ``hidden``, negated the same way).
_SHOWN = (
    "coalesce(tr.archived, 0) = 0 AND NOT (coalesce(tr.dismissed, 0) = 1"
    " AND tasks.last_activity_at <= tr.last_seen_activity_at)"
)
_TRIAGE_OF = (
    " LEFT JOIN task_triage tr ON tr.actor_kind = ? AND tr.actor_ref = ? AND tr.task_id = tasks.id"
)
_NEWEST = " ORDER BY tasks.last_activity_at DESC, tasks.id DESC LIMIT ?"
_IN_SHARED_LANE = (
    "(status = 'failed' OR status = 'blocked' OR approval_state = 'pending' OR awaiting_input = 1)"
)
_SHARED_NEWEST = (
    f"SELECT tasks.rowid FROM tasks INDEXED BY tasks_inbox{_TRIAGE_OF}"
    f" WHERE {_IN_SHARED_LANE} AND {_TASK_LANE} = ? AND {_SHOWN}{_NEWEST}"
)
# An open task is my_work for its owner unless the rule puts it elsewhere
# first. Pending and ready ones are tasks_inbox_open's entries;
# in-progress ones (left out of that index, so a claim only deletes an entry
# and an agent's activity moves none) from their short range of tasks_status.
_MY_WORK = (
    " AND draft != 1 AND approval_state != 'pending' AND awaiting_input != 1"
    " AND owner_kind = ? AND "
)
# tasks_inbox_open's own predicate, so its count is a plain range count.
_WAITING = "(status = 'pending' OR status = 'ready')" + _MY_WORK
_WAITING_OWNED = (_WAITING + "owner_ref = ?", _WAITING + "owner_ref IS NULL")
_RUNNING = "status = 'in_progress'" + _MY_WORK
_RUNNING_OWNED = (_RUNNING + "owner_ref = ?", _RUNNING + "owner_ref IS NULL")


def _kept_inbox(tx: Tx, q: InboxQuery) -> dict[str, Lane]:
    """The unfiltered inbox from migration 9's indexes and kept counts: a
    lane's count is its size less what the actor's triage hides there, its
    unread count that less what the actor has read; the items are a walk of
    the lane, newest first, that stops at the limit."""
    kind, ref = q.actor_kind, q.actor_ref or ""
    which = 0 if q.actor_ref is not None else 1
    waiting, running = _WAITING_OWNED[which], _RUNNING_OWNED[which]
    owner_args = (kind, q.actor_ref) if q.actor_ref is not None else (kind,)
    # The shared lanes' sizes are kept (migration 9); my_work's is counted.
    sizes: dict[str, int] = {
        lane: n for lane, n in tx.all("SELECT status, n FROM status_counts WHERE tally = 'lane'")
    }
    sizes["my_work"] = tx.scalar(
        f"SELECT count(*) FROM tasks INDEXED BY tasks_inbox_open WHERE {waiting}", owner_args
    ) + tx.scalar(f"SELECT count(*) FROM tasks INDEXED BY tasks_status WHERE {running}", owner_args)
    kept = {
        lane: (out, seen)
        for lane, out, seen in tx.all(
            "SELECT lane, out_n, seen_n FROM inbox_triaged WHERE actor_kind = ? AND actor_ref = ?",
            (kind, ref),
        )
    }
    lanes = {lane: Lane() for lane in LANES}
    shown = q.shown()
    for name, lane in lanes.items():
        out, seen = kept.get(name, (0, 0))
        # Archived items are exactly the ones the actor archived ("out").
        lane.count = out if name == "archived" else sizes.get(name, 0) - out
        lane.unread = lane.count - seen
        if name not in shown:
            continue
        if name == "archived":
            rowids = [
                r[0]
                for r in tx.all(
                    "SELECT t.rowid FROM task_triage tr CROSS JOIN tasks t ON t.id = tr.task_id"
                    " WHERE tr.actor_kind = ? AND tr.actor_ref = ? AND tr.archived = 1"
                    " ORDER BY t.last_activity_at DESC, t.id DESC LIMIT ?",
                    (kind, ref, q.limit),
                )
            ]
        elif name == "my_work":
            # The newest waiting ones and every running one (a few), merged.
            newest = [
                *tx.all(
                    "SELECT tasks.last_activity_at, tasks.id, tasks.rowid FROM tasks"
                    f" INDEXED BY tasks_inbox_open{_TRIAGE_OF}"
                    f" WHERE {waiting} AND {_SHOWN}{_NEWEST}",
                    (kind, ref, *owner_args, q.limit),
                ),
                *tx.all(
                    "SELECT tasks.last_activity_at, tasks.id, tasks.rowid FROM tasks"
                    f" INDEXED BY tasks_status{_TRIAGE_OF} WHERE {running} AND {_SHOWN}",
                    (kind, ref, *owner_args),
                ),
            ]
            newest.sort(key=lambda r: (r[0], r[1]), reverse=True)
            rowids = [r[2] for r in newest[: q.limit]]
        else:
            rowids = [r[0] for r in tx.all(_SHARED_NEWEST, (kind, ref, name, q.limit))]
        _add_entries(tx, q, name, lane, rowids)
    return lanes


# -- triage ---------------------------------------------------------------------------------

# What each action sets; all but unarchive also record the activity seen.
# Reading a dismissed item brings it back: it was seen and is wanted.
_TRIAGE_SETS: dict[str, dict[str, int]] = {
    "read": {"read": 1, "dismissed": 0},
    "dismiss": {"read": 1, "dismissed": 1},
    "archive": {"read": 1, "archived": 1},
    "unarchive": {"archived": 0},
}
TRIAGE_ACTIONS = tuple(_TRIAGE_SETS)


def set_triage(
    tx: Tx, actor_kind: str, actor_ref: str | None, ref: str, action: str
) -> sqlite3.Row:
    """Record ``action`` (one of ``TRIAGE_ACTIONS``) on task ``ref`` (id or
    identifier) for one actor and return the triage row; the actor's ref
    None is stored as ''. Raises NotFound for an unknown task."""
    task = find_task(tx, ref)
    sets = dict(_TRIAGE_SETS[action])
    if action != "unarchive":
        sets["last_seen_activity_at"] = task["last_activity_at"]
    values = {"read": 0, "dismissed": 0, "archived": 0, "last_seen_activity_at": None, **sets}
    updates = ", ".join(f"{column} = excluded.{column}" for column in sets)
    row = tx.one(
        "INSERT INTO task_triage (task_id, actor_kind, actor_ref, read, dismissed, archived,"
        " last_seen_activity_at, updated_at) VALUES (?,?,?,?,?,?,?,?)"
        f" ON CONFLICT (actor_kind, actor_ref, task_id) DO UPDATE SET {updates},"
        " updated_at = excluded.updated_at RETURNING *",
        (
            task["id"],
            actor_kind,
            actor_ref or "",
            values["read"],
            values["dismissed"],
            values["archived"],
            values["last_seen_activity_at"],
            tx.now,
        ),
    )
    assert row is not None
    return row
