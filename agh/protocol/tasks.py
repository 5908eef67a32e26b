"""``tasks.*`` (create, get, list, update, delete, start, publish, runs,
children, approve, reject, cancel, dependencies, tree): params and results."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET, UnsetType

from agh.protocol.base import Limit, MaxAttempts, NonEmpty, Params, Shape, Title
from agh.protocol.enums import (
    ApprovalPolicy,
    ApprovalState,
    DependencyKind,
    OwnerKind,
    Priority,
    RunStatus,
    Scope,
    TaskStatus,
)
from agh.protocol.shapes import Actor, Origin, Run, Task, TaskDetail, TaskListItem, TaskTree


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


class RunsListResult(Shape, kw_only=True):
    runs: list[Run]
    next_cursor: str | None = None
