"""The resources the methods return (the reference's objects): actors,
tasks, runs, leases, sessions, trees, workflow plans. Field names and enum
values are those of the AGH Tasks API reference (shared/seeds/003)."""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from agh.protocol.base import Shape
from agh.protocol.enums import (
    PROTOCOL_VERSION,
    ApprovalPolicy,
    ApprovalState,
    ConditionOp,
    DependencyKind,
    OriginKind,
    OwnerKind,
    Priority,
    RunStatus,
    Scope,
    SessionState,
    StepAction,
    TaskKind,
    TaskStatus,
)


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
