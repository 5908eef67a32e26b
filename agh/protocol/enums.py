"""The protocol's enumerations and constants, as plain ``typing`` values:
no msgspec, so the CLI can import them to build ``--help`` cheaply
(``agh.cli.options``) and both sides share one spelling of each value."""

from __future__ import annotations

from typing import Literal, get_args

PROTOCOL_VERSION = 1
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
LogLevel = Literal["debug", "info", "warn", "error"]
MessageDirection = Literal["to_agent", "from_agent"]
HealthStatus = Literal["ok", "warning", "critical"]
InboxLane = Literal["my_work", "approvals", "failed_runs", "blocked", "archived"]

# The values as tuples, for choices and membership tests (the CLI's options).
PRIORITIES: tuple[str, ...] = get_args(Priority)
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)  # least to most severe
INBOX_LANES: tuple[str, ...] = get_args(InboxLane)
SESSION_STATES: tuple[str, ...] = get_args(SessionState)
CLOSED_STATUSES = ("completed", "failed", "canceled")  # of a task, and of a run
