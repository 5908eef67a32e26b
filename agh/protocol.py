"""Wire types: every JSON-RPC params and result shape, and nothing else.

Field names and enum values are those of the AGH Tasks API reference
(shared/seeds/003); PROTOCOL.md is the contract. This module imports only
msgspec so both the light client and the daemon can use it. Params structs
forbid unknown fields (typos fail loudly with the field path); result structs
always encode every field, ``null`` when unset. New fields get defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

PROTOCOL_VERSION = 1

# -- enums ------------------------------------------------------------------

OwnerKind = Literal["human", "agent_session", "automation", "extension", "network_peer", "pool"]
OriginKind = Literal[
    "cli", "web", "uds", "http", "automation", "extension", "network", "agent_session", "daemon"
]
Scope = Literal["global", "workspace"]
Priority = Literal["low", "medium", "high", "urgent"]
TaskStatus = Literal[
    "draft", "pending", "blocked", "ready", "in_progress", "completed", "failed", "canceled"
]
RunStatus = Literal["queued", "claimed", "starting", "running", "completed", "failed", "canceled"]
ApprovalPolicy = Literal["none", "manual"]
ApprovalState = Literal["not_required", "pending", "approved", "rejected"]
DependencyKind = Literal["blocks"]
TaskKind = Literal["task", "workflow", "group"]
StepAction = Literal["agent", "tool_execution", "sub_task", "branch"]
ConditionOp = Literal["equals", "not_equals", "exists"]
MessageKind = Literal["input", "status", "question"]
SessionState = Literal["connected", "disconnected"]

PRIORITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
ACTIVE_RUN_STATUSES = ("claimed", "starting", "running")

# Bounded values used by several params. Every integer a client sends has an
# upper bound: SQLite stores 64-bit integers, so anything larger must fail
# decoding (-32602 naming the field), not deep in the store (a test walks
# every params struct to keep this true).
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Meta(ge=-(2**63), le=INT64_MAX)]
Limit = Annotated[int, Meta(ge=1, le=1000)]
LeaseMs = Annotated[int, Meta(ge=1000, le=86_400_000)]
WaitMs = Annotated[int, Meta(ge=0, le=60_000)]
NonEmpty = Annotated[str, Meta(min_length=1, max_length=4096)]
Title = Annotated[str, Meta(min_length=1, max_length=1000)]
MaxAttempts = Annotated[int, Meta(ge=1, le=1000)]


class Params(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of every params struct: strict, keyword-only."""


class Shape(Struct, kw_only=True):
    """Base of every result shape: all fields always present."""


# -- common shapes ----------------------------------------------------------


class Actor(Struct, forbid_unknown_fields=True):
    kind: OwnerKind
    ref: str | None = None


class Origin(Struct, forbid_unknown_fields=True):
    kind: OriginKind
    ref: str | None = None


class CoordinationChannel(Shape, kw_only=True):
    allowed_message_kinds: list[str]
    channel: str
    display_name: str
    id: str
    last_activity_at: str | None = None
    purpose: str
    run_id: str | None = None
    task_id: str
    workflow_id: str | None = None
    workspace_id: str | None = None


class Run(Shape, kw_only=True):
    """A task run. The reference's ``active_run`` summary is a subset of this."""

    attempt: int
    claim_token_hash: str | None = None
    claimed_at: str | None = None
    claimed_by: Actor | None = None
    coordination_channel: CoordinationChannel | None = None
    coordination_channel_id: str | None = None
    ended_at: str | None = None
    error: str | None = None
    heartbeat_at: str | None = None
    id: str
    idempotency_key: str | None = None
    lease_until: str | None = None
    metadata: Any = None
    network_channel: str | None = None
    origin: Origin | None = None
    queued_at: str | None = None
    result: Any = None
    session_id: str | None = None
    started_at: str | None = None
    status: RunStatus
    task_id: str
    # agh additions
    max_attempts: int = 1
    input: Any = None
    available_at: str | None = None


class Lease(Shape, kw_only=True):
    claim_token_hash: str | None = None
    claimed_by: Actor | None = None
    coordination_channel: CoordinationChannel | None = None
    coordination_channel_id: str | None = None
    heartbeat_at: str | None = None
    lease_until: str | None = None
    run_id: str
    session_id: str | None = None
    status: RunStatus
    task_id: str
    # agh addition: lets an agent see the attempt it is on without another call
    attempt: int = 0


class TaskSummary(Shape, kw_only=True):
    id: str
    identifier: str
    owner: Actor | None = None
    priority: Priority
    scope: Scope
    status: TaskStatus
    title: str
    workspace_id: str | None = None


class Task(Shape, kw_only=True):
    approval_policy: ApprovalPolicy
    approval_state: ApprovalState
    closed_at: str | None = None
    created_at: str
    created_by: Actor | None = None
    description: str | None = None
    draft: bool
    id: str
    identifier: str
    max_attempts: int
    metadata: Any = None
    network_channel: str | None = None
    origin: Origin | None = None
    owner: Actor | None = None
    parent_task_id: str | None = None
    priority: Priority
    scope: Scope
    status: TaskStatus
    title: str
    updated_at: str
    workspace_id: str | None = None
    # agh additions: why a blocked task is blocked (PROTOCOL.md §6), why a
    # closed task closed ("condition not met" for a skipped workflow step),
    # and the workflow a task belongs to (kind "workflow" is a workflow's
    # root, "group" an inline branch; neither has runs of its own).
    blocking_reason: str | None = None
    closed_reason: str | None = None
    kind: TaskKind = "task"
    workflow_id: str | None = None
    step_id: str | None = None
    approved_by: Actor | None = None
    approved_at: str | None = None


class Dependency(Shape, kw_only=True):
    created_at: str
    depends_on_task_id: str
    kind: DependencyKind = "blocks"
    task_id: str


class DependencyReference(Shape, kw_only=True):
    created_at: str
    depends_on: TaskSummary | None = None
    depends_on_task_id: str
    kind: DependencyKind = "blocks"
    task_id: str


class TaskListItem(Shape, kw_only=True):
    """The enriched task of ``tasks.list`` and of the detail's ``summary``."""

    active_run: Run | None = None
    approval_policy: ApprovalPolicy
    approval_state: ApprovalState
    child_count: int = 0
    closed_at: str | None = None
    created_at: str
    created_by: Actor | None = None
    dependencies: list[DependencyReference] = []
    dependency_count: int = 0
    draft: bool
    id: str
    identifier: str
    last_activity_at: str | None = None
    max_attempts: int
    network_channel: str | None = None
    origin: Origin | None = None
    owner: Actor | None = None
    parent_task_id: str | None = None
    priority: Priority
    scope: Scope
    status: TaskStatus
    title: str
    updated_at: str
    workspace_id: str | None = None
    blocking_reason: str | None = None
    closed_reason: str | None = None
    kind: TaskKind = "task"
    workflow_id: str | None = None
    step_id: str | None = None


class TaskEvent(Shape, kw_only=True):
    actor: Actor | None = None
    event_type: str
    id: str
    origin: Origin | None = None
    payload: Any = None
    run_id: str | None = None
    task_id: str | None = None
    timestamp: str
    sequence: int = 0


class TaskDetail(Shape, kw_only=True):
    children: list[TaskListItem] = []
    dependencies: list[Dependency] = []
    dependency_references: list[DependencyReference] = []
    events: list[TaskEvent] = []
    runs: list[Run] = []
    summary: TaskListItem
    task: Task


class Session(Shape, kw_only=True):
    agent_name: str | None = None
    channel: str | None = None
    created_at: str
    name: str | None = None
    session_id: str
    state: SessionState
    updated_at: str
    workspace_id: str | None = None


class RunSummaryStats(Shape, kw_only=True):
    cost_currency: str | None = None
    input_tokens: int = 0
    last_activity_at: str | None = None
    last_event_type: str | None = None
    output_tokens: int = 0
    tool_call_count: int = 0
    total_cost: float = 0
    total_tokens: int = 0
    turn_count: int = 0


class RunDetail(Shape, kw_only=True):
    run: Run
    session: Session | None = None
    summary: RunSummaryStats
    task: TaskSummary


class Claim(Shape, kw_only=True):
    coordination_channel: CoordinationChannel | None = None
    lease: Lease
    run: Run
    task: TaskSummary
    claim_token: str


class TreeNode(Shape, kw_only=True):
    active_run: Run | None = None
    child_count: int = 0
    depth: int
    last_activity_at: str | None = None
    parent_task_id: str | None = None
    task: TaskSummary
    # agh addition: the tree CLI shows why a node is blocked or closed.
    blocking_reason: str | None = None
    closed_reason: str | None = None


class TaskTree(Shape, kw_only=True):
    descendants: list[TreeNode]
    root: TreeNode


class StepCondition(Shape, kw_only=True):
    """``field`` is ``steps.<step id>.output.<path>``; ``value`` is what
    ``equals`` / ``not_equals`` compare with, or the boolean of ``exists``."""

    field: str
    op: ConditionOp
    value: Any = None


class PlanStep(Shape, kw_only=True):
    id: str
    title: str
    description: str | None = None
    action: StepAction
    tool: str | None = None
    inputs: dict[str, Any] = {}
    # Step ids this step waits for, after expanding branches to their steps.
    depends_on: list[str] = []
    # Every condition must hold (a branch's condition applies to its steps).
    conditions: list[StepCondition] = []
    # The branch step this step is inline in, else null.
    parent: str | None = None
    # Topological level (0 = no dependencies); null for a branch step.
    level: int | None = None
    priority: Priority | None = None
    network_channel: str | None = None
    approval: ApprovalPolicy = "none"
    max_attempts: int | None = None
    metadata: Any = None
    # sub_task: the task (id or identifier) this step copies its definition from.
    task_ref: str | None = None
    line: int = 0


class PlanLevel(Shape, kw_only=True):
    level: int
    steps: list[str]
    # True when more than one step runs at this level (they run in parallel).
    parallel: bool


class WorkflowPlan(Shape, kw_only=True):
    name: str
    description: str | None = None
    levels: list[PlanLevel]
    steps: list[PlanStep]


class Workflow(Shape, kw_only=True):
    id: str
    name: str
    description: str | None = None
    root_task_id: str
    version: int
    vars: dict[str, Any] = {}
    created_at: str
    updated_at: str


class ServerInfo(Shape, kw_only=True):
    version: str
    protocol: int = PROTOCOL_VERSION


# -- params -----------------------------------------------------------------


class HelloParams(Params, kw_only=True):
    agent_name: str | None = None
    session_id: str | None = None
    channel: str | None = None
    name: str | None = None
    workspace: str | None = None
    origin: Origin | None = None


class EmptyParams(Params, kw_only=True):
    pass


class SessionsListParams(Params, kw_only=True):
    state: SessionState | None = None
    limit: Limit = 100
    cursor: str | None = None


class IdParams(Params, kw_only=True):
    id: NonEmpty


class TasksCreateParams(Params, kw_only=True):
    title: Title
    description: str | None = None
    scope: Scope | None = None
    workspace: str | None = None
    owner: Actor | None = None
    origin: Origin | None = None
    priority: Priority = "medium"
    network_channel: NonEmpty | None = None
    max_attempts: MaxAttempts | None = None
    metadata: Any = None
    draft: bool = False
    approval_policy: ApprovalPolicy = "none"
    parent_task_id: str | None = None
    depends_on: list[str] = []
    # agh: `start` requests a run right away; `input` is handed to that run.
    start: bool = False
    input: Any = None
    # A repeated create with the same key returns the first task (and run).
    idempotency_key: NonEmpty | None = None


class TasksChildrenCreateParams(TasksCreateParams, kw_only=True):
    """``tasks.create`` fields plus the parent's ``id`` (parent_task_id is set from it)."""

    id: NonEmpty


class TasksApproveParams(Params, kw_only=True):
    id: NonEmpty
    comment: str | None = None


class TasksRejectParams(Params, kw_only=True):
    id: NonEmpty
    reason: str | None = None


class TasksCancelParams(Params, kw_only=True):
    id: NonEmpty
    reason: str | None = None


class DependencyAddParams(Params, kw_only=True):
    id: NonEmpty
    depends_on_task_id: NonEmpty
    kind: DependencyKind = "blocks"


class DependencyRemoveParams(Params, kw_only=True):
    id: NonEmpty
    depends_on_id: NonEmpty


class WorkflowsComposeParams(Params, kw_only=True):
    yaml: Annotated[str, Meta(min_length=1, max_length=1_000_000)]
    vars: dict[str, Any] = {}
    dry_run: bool = False
    # A workflow (wf_… id, or its root task's id or identifier) to give this
    # file as its next version; steps that have run keep their tasks and runs.
    update: NonEmpty | None = None
    # The workspace (path, id or key) of a new workflow's tasks.
    workspace: str | None = None
    # agh: start the workflow right away (same as tasks.start on its root).
    start: bool = False


class TasksListParams(Params, kw_only=True):
    scope: Scope | None = None
    workspace: str | None = None
    status: TaskStatus | None = None
    priority: Priority | None = None
    include_drafts: bool = False
    approval_state: ApprovalState | None = None
    owner_kind: OwnerKind | None = None
    owner_ref: str | None = None
    parent_task_id: str | None = None
    network_channel: str | None = None
    query: str | None = None
    limit: Limit = 100
    cursor: str | None = None


class TasksUpdateParams(Params, kw_only=True):
    """PATCH semantics: a field left out is unchanged; ``null`` clears it."""

    id: NonEmpty
    title: Title | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    priority: Priority | UnsetType = UNSET
    network_channel: NonEmpty | UnsetType | None = UNSET
    max_attempts: MaxAttempts | UnsetType = UNSET
    metadata: Any | UnsetType = UNSET
    owner: Actor | UnsetType = UNSET
    approval_policy: ApprovalPolicy | UnsetType = UNSET


class TasksStartParams(Params, kw_only=True):
    id: NonEmpty
    idempotency_key: NonEmpty | None = None
    input: Any = None


class TasksRunsListParams(Params, kw_only=True):
    id: NonEmpty
    status: RunStatus | None = None
    session_id: str | None = None
    limit: Limit = 100
    cursor: str | None = None


class RunsClaimParams(Params, kw_only=True):
    id: NonEmpty
    idempotency_key: NonEmpty | None = None
    session_id: str | None = None
    lease_ms: LeaseMs | None = None


class RunsStartParams(Params, kw_only=True):
    id: NonEmpty
    idempotency_key: NonEmpty | None = None


class RunsAttachSessionParams(Params, kw_only=True):
    id: NonEmpty
    session_id: NonEmpty


class RunsCompleteParams(Params, kw_only=True):
    id: NonEmpty
    result: Any = None


class RunsFailParams(Params, kw_only=True):
    id: NonEmpty
    error: str | None = None


class RunsCancelParams(Params, kw_only=True):
    id: NonEmpty
    reason: str | None = None


class ClaimNextParams(Params, kw_only=True):
    session_id: str | None = None
    network_channel: str | None = None
    workspace: str | None = None
    scope: Scope | None = None
    owner_kind: OwnerKind | None = None
    owner_ref: str | None = None
    lease_ms: LeaseMs | None = None
    wait_ms: WaitMs = 0
    idempotency_key: NonEmpty | None = None


class HeartbeatParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    lease_ms: LeaseMs | None = None


class AgentCompleteParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    result: Any = None


class AgentFailParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    error: NonEmpty
    retry: bool = True


class AgentReleaseParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    reason: str | None = None


# -- results ----------------------------------------------------------------


class HelloResult(Shape, kw_only=True):
    session: Session
    server: ServerInfo


class SessionsListResult(Shape, kw_only=True):
    sessions: list[Session]
    next_cursor: str | None = None


class ServerInfoResult(Shape, kw_only=True):
    version: str
    protocol: int = PROTOCOL_VERSION
    pid: int
    socket: str
    database: str
    started_at: str
    synchronous: str


class TaskResult(Shape, kw_only=True):
    task: Task


class TaskDetailResult(Shape, kw_only=True):
    task: TaskDetail


class TasksListResult(Shape, kw_only=True):
    tasks: list[TaskListItem]
    next_cursor: str | None = None


class TaskRunResult(Shape, kw_only=True):
    """``tasks.start`` / ``tasks.publish`` / ``tasks.approve``: run is null while blocked."""

    run: Run | None = None
    task: Task


class TaskTreeResult(Shape, kw_only=True):
    tree: TaskTree


class ComposeResult(Shape, kw_only=True):
    """``workflows.compose``: the plan always; workflow and task (its root)
    unless ``dry_run``; run set never (steps get runs when it starts)."""

    plan: WorkflowPlan
    workflow: Workflow | None = None
    task: Task | None = None
    # With ``update`` (a dry run too): full ids of the steps that have run and
    # keep their tasks, status, runs, results, logs and events; of those among
    # them whose definition changed; and of the steps left out of the file,
    # which never ran and whose tasks are deleted.
    kept_steps: list[str] = []
    changed_steps: list[str] = []
    removed_steps: list[str] = []


class RunResult(Shape, kw_only=True):
    run: Run


class RunsListResult(Shape, kw_only=True):
    runs: list[Run]
    next_cursor: str | None = None


class RunDetailResult(Shape, kw_only=True):
    run: RunDetail


class RunClaimResult(Shape, kw_only=True):
    run: Run
    claim_token: str
    lease: Lease


class ClaimNextResult(Shape, kw_only=True):
    claim: Claim | None = None


class LeaseResult(Shape, kw_only=True):
    lease: Lease


class EmptyResult(Shape, kw_only=True):
    pass


# -- timeline, streams, run logs and messages (PROTOCOL §5, §7) ---------------

LogLevel = Literal["debug", "info", "warn", "error"]
SeqNo = Annotated[int, Meta(ge=0, le=INT64_MAX)]


class TimelineItem(Shape, kw_only=True):
    """One event of the log, with the task and run as they are now."""

    actor: Actor | None = None
    event_id: str
    event_type: str
    origin: Origin | None = None
    payload: Any = None
    run: Run | None = None
    sequence: int
    task: TaskSummary | None = None
    timestamp: str


class TimelineParams(Params, kw_only=True):
    id: NonEmpty
    after_sequence: SeqNo = 0
    limit: Limit = 100


class TimelineResult(Shape, kw_only=True):
    timeline: list[TimelineItem]


class TaskStreamParams(Params, kw_only=True):
    id: NonEmpty
    after_sequence: SeqNo | None = None


class EventsSubscribeParams(Params, kw_only=True):
    after_sequence: SeqNo | None = None
    task_id: str | None = None
    workspace: str | None = None
    network_channel: str | None = None


class SubscribeResult(Shape, kw_only=True):
    subscription: str
    # agh addition: where the stream starts (after_sequence, or the current
    # end of the log when none was given).
    after_sequence: int = 0


class SubscriptionCancelParams(Params, kw_only=True):
    subscription: NonEmpty


class LogLine(Params, kw_only=True):
    level: LogLevel = "info"
    message: Annotated[str, Meta(max_length=65_536)]
    step: Int64 | None = None
    metadata: Any = None


class AgentLogParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    lines: Annotated[list[LogLine], Meta(min_length=1, max_length=1000)]


class AgentLogResult(Shape, kw_only=True):
    accepted: int
    last_id: int


class RunLog(Shape, kw_only=True):
    id: int
    run_id: str
    task_id: str
    level: LogLevel
    message: str
    step: int | None = None
    metadata: Any = None
    timestamp: str


class RunsLogsParams(Params, kw_only=True):
    """``id``: a run, or a task (its latest run). ``level``: the minimum level."""

    id: NonEmpty
    level: LogLevel | None = None
    step: Int64 | None = None
    after: SeqNo = 0
    limit: Limit = 100


class RunsLogsResult(Shape, kw_only=True):
    logs: list[RunLog]
    run_id: str
    # Pass as ``after`` to continue; equal to the request's when nothing new.
    next_after: int


MessageDirection = Literal["to_agent", "from_agent"]


class Message(Shape, kw_only=True):
    id: int
    task_id: str
    run_id: str | None = None
    direction: MessageDirection
    kind: MessageKind
    message: str
    actor: Actor | None = None
    created_at: str


class TasksSendParams(Params, kw_only=True):
    id: NonEmpty
    message: Annotated[str, Meta(min_length=1, max_length=65_536)]
    kind: Literal["input"] = "input"


class AgentSendParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    message: Annotated[str, Meta(min_length=1, max_length=65_536)]
    kind: Literal["status", "question"] = "status"


class MessageResult(Shape, kw_only=True):
    message: Message
    # tasks.send: whether a run holds the task now (false: queued for its next run).
    delivered: bool = True


class AgentMessagesParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    after: SeqNo = 0
    limit: Limit = 100


class MessagesResult(Shape, kw_only=True):
    messages: list[Message]
    next_after: int


class StreamEvent(Shape, kw_only=True):
    """``stream.event`` notification params. ``type`` is ``timeline``,
    ``keepalive``, ``overflow`` or (agh addition) ``error``: the subscription
    ended because the daemon could not read its events; ``error`` is the
    JSON-RPC error object saying why. ``logs`` carries the lines of a
    ``run.log`` event while they are retained."""

    subscription: str
    type: Literal["timeline", "keepalive", "overflow", "error"]
    sequence: int
    timeline: TimelineItem | None = None
    logs: list[RunLog] | None = None
    error: Any = None


# -- observability: dashboard, inbox, triage (PROTOCOL §5) ---------------------
# Health rules and how each figure is computed: aghd/store/observe.py.

HealthStatus = Literal["ok", "warning", "critical"]
InboxLane = Literal["my_work", "approvals", "failed_runs", "blocked", "archived"]


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


# -- JSON-RPC envelope ------------------------------------------------------

# JSON-RPC ids: strings or numbers (a fractional one is discouraged but legal).
RequestId = int | float | str | None


class Request(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One JSON-RPC 2.0 request; ``id`` UNSET means a notification."""

    jsonrpc: str
    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")
    id: RequestId | UnsetType = UNSET


class Response(Struct):
    """Reply envelope; exactly one of result/error is set (UNSET is never encoded)."""

    jsonrpc: str = "2.0"
    id: RequestId = None
    result: Any = UNSET
    error: Any = UNSET


class Reply(Struct):
    """What a client reads: a response (result/error) or a notification
    (method/params, e.g. stream events); ``result`` stays raw so the caller
    decodes it into the method's result type."""

    jsonrpc: str = "2.0"
    id: RequestId = None
    result: msgspec.Raw | UnsetType = UNSET
    error: Any = UNSET
    method: str | UnsetType = UNSET
    params: Any = UNSET


encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(Request)
any_decoder = msgspec.json.Decoder()
reply_decoder = msgspec.json.Decoder(Reply)
