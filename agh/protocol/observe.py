"""``observe.dashboard``, ``observe.inbox`` and ``tasks.triage.*``
(PROTOCOL §5): params and results."""

from __future__ import annotations

from agh.protocol.base import Limit, Params, Shape
from agh.protocol.enums import (
    ApprovalPolicy,
    ApprovalState,
    HealthStatus,
    InboxLane,
    OriginKind,
    OwnerKind,
    Priority,
    RunStatus,
    Scope,
    TaskStatus,
)
from agh.protocol.shapes import Actor, Run, TaskSummary


class DashboardParams(Params, kw_only=True):
    scope: Scope | None = None
    workspace: str | None = None
    owner_kind: OwnerKind | None = None
    owner_ref: str | None = None
    network_channel: str | None = None
    origin_kind: OriginKind | None = None


class ActiveRunItem(Shape, kw_only=True):
    """A claimed, starting or running run. ``age_ms``: since its claim;
    ``last_activity_at``: its agent's latest claim, start or heartbeat."""

    age_ms: int
    attempt: int
    error: str | None = None
    health_status: HealthStatus
    last_activity_at: str | None = None
    max_attempts: int
    network_channel: str | None = None
    run_id: str
    run_status: RunStatus
    scope: Scope
    session_id: str | None = None
    stuck: bool
    task_id: str
    task_identifier: str
    task_owner: Actor | None = None
    task_priority: Priority
    task_status: TaskStatus
    task_title: str
    workspace_id: str | None = None
    # agh addition: its session is disconnected (nobody heartbeats it).
    orphaned: bool = False


class ActiveRuns(Shape, kw_only=True):
    """Open runs per status; ``total`` is their sum (queued included).
    ``items``: the claimed, starting and running ones, latest activity
    first, at most 100."""

    claimed: int
    items: list[ActiveRunItem]
    queued: int
    running: int
    starting: int
    total: int


class BlockedCard(Shape, kw_only=True):
    awaiting_approval: int
    awaiting_dependencies: int
    health_status: HealthStatus
    tasks: int


class FailedCard(Shape, kw_only=True):
    """``forced_stops``: failed runs whose last claim was ended by lease
    expiry or by an operator (runs.fail), not by the agent."""

    failed_runs: int
    forced_stops: int
    health_status: HealthStatus
    tasks: int


class InProgressCard(Shape, kw_only=True):
    active_runs: int
    claimed_runs: int
    health_status: HealthStatus
    queued_runs: int
    running_runs: int
    starting_runs: int
    tasks: int


class LatencyStat(Shape, kw_only=True):
    average_ms: int
    maximum_ms: int
    samples: int


class LatencyCard(Shape, kw_only=True):
    """Over runs claimed in the last ``window_ms``."""

    claim_latency_ms: LatencyStat
    start_latency_ms: LatencyStat
    # agh addition
    window_ms: int = 0


class DashboardCards(Shape, kw_only=True):
    blocked: BlockedCard
    failed: FailedCard
    in_progress: InProgressCard
    latency: LatencyCard


class Freshness(Shape, kw_only=True):
    age_ms: int | None = None
    has_live_work: bool
    latest_activity_at: str | None = None
    observed_at: str
    stale: bool
    stale_after_ms: int
    status: HealthStatus


class DashboardHealth(Shape, kw_only=True):
    active_orphan_runs: int
    queue_backlog: bool
    status: HealthStatus
    stuck_runs: int


class QueueDepth(Shape, kw_only=True):
    count: int
    network_channel: str | None = None
    oldest_queue_age_ms: int | None = None
    oldest_queued_at: str | None = None


class DashboardQueue(Shape, kw_only=True):
    backlog_status: HealthStatus
    backlog_threshold_ms: int
    backlog_warning: bool
    depth: list[QueueDepth]
    oldest_queue_age_ms: int | None = None
    oldest_queued_at: str | None = None
    total: int


class StatusShare(Shape, kw_only=True):
    """``share_percent`` has one decimal; the shares of a breakdown add up
    to exactly 100.0 (largest-remainder rounding) when there is a task."""

    count: int
    share_percent: float
    status: TaskStatus


class DashboardTotals(Shape, kw_only=True):
    active_runs: int
    awaiting_approval_tasks: int
    blocked_tasks: int
    canceled_runs: int
    canceled_tasks: int
    claimed_runs: int
    completed_runs: int
    completed_tasks: int
    dependency_blocked_tasks: int
    draft_tasks: int
    failed_runs: int
    failed_tasks: int
    in_progress_tasks: int
    pending_tasks: int
    queued_runs: int
    ready_tasks: int
    running_runs: int
    runs_total: int
    starting_runs: int
    tasks_total: int


class Dashboard(Shape, kw_only=True):
    active_runs: ActiveRuns
    cards: DashboardCards
    freshness: Freshness
    health: DashboardHealth
    queue: DashboardQueue
    status_breakdown: list[StatusShare]
    totals: DashboardTotals


class DashboardResult(Shape, kw_only=True):
    dashboard: Dashboard


class InboxParams(Params, kw_only=True):
    """``owner_kind`` / ``owner_ref`` name whose inbox it is (default: the
    caller); ``unread: true`` keeps only unread items; ``limit`` is per group."""

    scope: Scope | None = None
    workspace: str | None = None
    owner_kind: OwnerKind | None = None
    owner_ref: str | None = None
    lane: InboxLane | None = None
    unread: bool = False
    query: str | None = None
    limit: Limit = 100


class Triage(Shape, kw_only=True):
    actor: Actor
    archived: bool = False
    dismissed: bool = False
    last_seen_activity_at: str | None = None
    read: bool = False
    task_id: str
    updated_at: str | None = None


class InboxItem(Shape, kw_only=True):
    approval_policy: ApprovalPolicy
    approval_state: ApprovalState
    blocking_reason: str | None = None
    lane: InboxLane
    latest_activity_at: str | None = None
    run: Run | None = None
    task: TaskSummary
    triage: Triage


class InboxGroup(Shape, kw_only=True):
    count: int
    items: list[InboxItem]
    lane: InboxLane
    unread_count: int


class Inbox(Shape, kw_only=True):
    """``total`` / ``unread_total``: over every lane but archived, even
    when ``lane`` picks one group."""

    archived_total: int
    groups: list[InboxGroup]
    total: int
    unread_total: int


class InboxResult(Shape, kw_only=True):
    inbox: Inbox


class TriageResult(Shape, kw_only=True):
    triage: Triage
