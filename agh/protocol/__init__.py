"""Wire types: every JSON-RPC params and result shape, and nothing else,
one module per method family (mirroring ``aghd/handlers/``) on top of
``enums`` (plain values, no msgspec), ``base`` and ``shapes`` (the shared
resources); ``methods`` names each method's params and result.

Field names and enum values are those of the AGH Tasks API reference
(shared/seeds/003); PROTOCOL.md is the contract. The package imports only
msgspec so both the light client and the daemon can use it. Params structs
forbid unknown fields (typos fail loudly with the field path); result structs
always encode every field, ``null`` when unset. New fields get defaults.
Every name is reachable from here, ``from agh import protocol as p;
p.Task``, and imported on first use: ``agh.protocol.enums`` alone (what the
CLI needs for ``--help``) costs no msgspec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where names are looked up, in order (lowest layer first).
FAMILIES = (
    "enums",
    "base",
    "shapes",
    "sessions",
    "tasks",
    "workflows",
    "runs",
    "agent",
    "coordination",
    "streams",
    "observe",
    "envelope",
)


def __getattr__(name: str) -> Any:
    for family in FAMILIES:
        module = importlib.import_module(f"agh.protocol.{family}")
        if name in vars(module) and not name.startswith("_"):
            value = vars(module)[name]
            globals()[name] = value  # found once, then a plain attribute
            return value
    raise AttributeError(f"module 'agh.protocol' has no attribute {name!r}")


if TYPE_CHECKING:
    from agh.protocol.agent import (
        AgentCompleteParams as AgentCompleteParams,
    )
    from agh.protocol.agent import (
        AgentFailParams as AgentFailParams,
    )
    from agh.protocol.agent import (
        AgentReleaseParams as AgentReleaseParams,
    )
    from agh.protocol.agent import (
        ClaimNextParams as ClaimNextParams,
    )
    from agh.protocol.agent import (
        ClaimNextResult as ClaimNextResult,
    )
    from agh.protocol.agent import (
        FinishResult as FinishResult,
    )
    from agh.protocol.agent import (
        HeartbeatParams as HeartbeatParams,
    )
    from agh.protocol.agent import (
        LeaseResult as LeaseResult,
    )
    from agh.protocol.agent import (
        NextClaimParams as NextClaimParams,
    )
    from agh.protocol.base import (
        INT64_MAX as INT64_MAX,
    )
    from agh.protocol.base import (
        EmptyParams as EmptyParams,
    )
    from agh.protocol.base import (
        EmptyResult as EmptyResult,
    )
    from agh.protocol.base import (
        IdParams as IdParams,
    )
    from agh.protocol.base import (
        Int64 as Int64,
    )
    from agh.protocol.base import (
        LeaseMs as LeaseMs,
    )
    from agh.protocol.base import (
        Limit as Limit,
    )
    from agh.protocol.base import (
        MaxAttempts as MaxAttempts,
    )
    from agh.protocol.base import (
        NonEmpty as NonEmpty,
    )
    from agh.protocol.base import (
        Params as Params,
    )
    from agh.protocol.base import (
        SeqNo as SeqNo,
    )
    from agh.protocol.base import (
        Shape as Shape,
    )
    from agh.protocol.base import (
        Title as Title,
    )
    from agh.protocol.base import (
        WaitMs as WaitMs,
    )
    from agh.protocol.coordination import (
        AgentLogParams as AgentLogParams,
    )
    from agh.protocol.coordination import (
        AgentLogResult as AgentLogResult,
    )
    from agh.protocol.coordination import (
        AgentMessagesParams as AgentMessagesParams,
    )
    from agh.protocol.coordination import (
        AgentSendParams as AgentSendParams,
    )
    from agh.protocol.coordination import (
        LogLine as LogLine,
    )
    from agh.protocol.coordination import (
        Message as Message,
    )
    from agh.protocol.coordination import (
        MessageResult as MessageResult,
    )
    from agh.protocol.coordination import (
        MessagesResult as MessagesResult,
    )
    from agh.protocol.coordination import (
        RunLog as RunLog,
    )
    from agh.protocol.coordination import (
        RunsLogsParams as RunsLogsParams,
    )
    from agh.protocol.coordination import (
        RunsLogsResult as RunsLogsResult,
    )
    from agh.protocol.coordination import (
        TasksSendParams as TasksSendParams,
    )
    from agh.protocol.enums import (
        ACTIVE_RUN_STATUSES as ACTIVE_RUN_STATUSES,
    )
    from agh.protocol.enums import (
        PRIORITY_RANK as PRIORITY_RANK,
    )
    from agh.protocol.enums import (
        PROTOCOL_VERSION as PROTOCOL_VERSION,
    )
    from agh.protocol.enums import (
        ApprovalPolicy as ApprovalPolicy,
    )
    from agh.protocol.enums import (
        ApprovalState as ApprovalState,
    )
    from agh.protocol.enums import (
        ConditionOp as ConditionOp,
    )
    from agh.protocol.enums import (
        DependencyKind as DependencyKind,
    )
    from agh.protocol.enums import (
        HealthStatus as HealthStatus,
    )
    from agh.protocol.enums import (
        InboxLane as InboxLane,
    )
    from agh.protocol.enums import (
        LogLevel as LogLevel,
    )
    from agh.protocol.enums import (
        MessageDirection as MessageDirection,
    )
    from agh.protocol.enums import (
        MessageKind as MessageKind,
    )
    from agh.protocol.enums import (
        OriginKind as OriginKind,
    )
    from agh.protocol.enums import (
        OwnerKind as OwnerKind,
    )
    from agh.protocol.enums import (
        Priority as Priority,
    )
    from agh.protocol.enums import (
        RunStatus as RunStatus,
    )
    from agh.protocol.enums import (
        Scope as Scope,
    )
    from agh.protocol.enums import (
        SessionState as SessionState,
    )
    from agh.protocol.enums import (
        StepAction as StepAction,
    )
    from agh.protocol.enums import (
        TaskKind as TaskKind,
    )
    from agh.protocol.enums import (
        TaskStatus as TaskStatus,
    )
    from agh.protocol.envelope import (
        Reply as Reply,
    )
    from agh.protocol.envelope import (
        Request as Request,
    )
    from agh.protocol.envelope import (
        RequestId as RequestId,
    )
    from agh.protocol.envelope import (
        Response as Response,
    )
    from agh.protocol.envelope import (
        any_decoder as any_decoder,
    )
    from agh.protocol.envelope import (
        encoder as encoder,
    )
    from agh.protocol.envelope import (
        reply_decoder as reply_decoder,
    )
    from agh.protocol.envelope import (
        request_decoder as request_decoder,
    )
    from agh.protocol.observe import (
        ActiveRunItem as ActiveRunItem,
    )
    from agh.protocol.observe import (
        ActiveRuns as ActiveRuns,
    )
    from agh.protocol.observe import (
        BlockedCard as BlockedCard,
    )
    from agh.protocol.observe import (
        Dashboard as Dashboard,
    )
    from agh.protocol.observe import (
        DashboardCards as DashboardCards,
    )
    from agh.protocol.observe import (
        DashboardHealth as DashboardHealth,
    )
    from agh.protocol.observe import (
        DashboardParams as DashboardParams,
    )
    from agh.protocol.observe import (
        DashboardQueue as DashboardQueue,
    )
    from agh.protocol.observe import (
        DashboardResult as DashboardResult,
    )
    from agh.protocol.observe import (
        DashboardTotals as DashboardTotals,
    )
    from agh.protocol.observe import (
        FailedCard as FailedCard,
    )
    from agh.protocol.observe import (
        Freshness as Freshness,
    )
    from agh.protocol.observe import (
        Inbox as Inbox,
    )
    from agh.protocol.observe import (
        InboxGroup as InboxGroup,
    )
    from agh.protocol.observe import (
        InboxItem as InboxItem,
    )
    from agh.protocol.observe import (
        InboxParams as InboxParams,
    )
    from agh.protocol.observe import (
        InboxResult as InboxResult,
    )
    from agh.protocol.observe import (
        InProgressCard as InProgressCard,
    )
    from agh.protocol.observe import (
        LatencyCard as LatencyCard,
    )
    from agh.protocol.observe import (
        LatencyStat as LatencyStat,
    )
    from agh.protocol.observe import (
        QueueDepth as QueueDepth,
    )
    from agh.protocol.observe import (
        StatusShare as StatusShare,
    )
    from agh.protocol.observe import (
        Triage as Triage,
    )
    from agh.protocol.observe import (
        TriageResult as TriageResult,
    )
    from agh.protocol.runs import (
        RunClaimResult as RunClaimResult,
    )
    from agh.protocol.runs import (
        RunDetailResult as RunDetailResult,
    )
    from agh.protocol.runs import (
        RunResult as RunResult,
    )
    from agh.protocol.runs import (
        RunsAttachSessionParams as RunsAttachSessionParams,
    )
    from agh.protocol.runs import (
        RunsCancelParams as RunsCancelParams,
    )
    from agh.protocol.runs import (
        RunsClaimParams as RunsClaimParams,
    )
    from agh.protocol.runs import (
        RunsCompleteParams as RunsCompleteParams,
    )
    from agh.protocol.runs import (
        RunsFailParams as RunsFailParams,
    )
    from agh.protocol.runs import (
        RunsStartParams as RunsStartParams,
    )
    from agh.protocol.sessions import (
        ConfigSetting as ConfigSetting,
    )
    from agh.protocol.sessions import (
        HelloParams as HelloParams,
    )
    from agh.protocol.sessions import (
        HelloResult as HelloResult,
    )
    from agh.protocol.sessions import (
        ServerBackupParams as ServerBackupParams,
    )
    from agh.protocol.sessions import (
        ServerBackupResult as ServerBackupResult,
    )
    from agh.protocol.sessions import (
        ServerConfigResult as ServerConfigResult,
    )
    from agh.protocol.sessions import (
        ServerInfoResult as ServerInfoResult,
    )
    from agh.protocol.sessions import (
        SessionsListParams as SessionsListParams,
    )
    from agh.protocol.sessions import (
        SessionsListResult as SessionsListResult,
    )
    from agh.protocol.shapes import (
        Actor as Actor,
    )
    from agh.protocol.shapes import (
        Claim as Claim,
    )
    from agh.protocol.shapes import (
        CoordinationChannel as CoordinationChannel,
    )
    from agh.protocol.shapes import (
        Dependency as Dependency,
    )
    from agh.protocol.shapes import (
        DependencyReference as DependencyReference,
    )
    from agh.protocol.shapes import (
        Lease as Lease,
    )
    from agh.protocol.shapes import (
        Origin as Origin,
    )
    from agh.protocol.shapes import (
        PlanLevel as PlanLevel,
    )
    from agh.protocol.shapes import (
        PlanStep as PlanStep,
    )
    from agh.protocol.shapes import (
        Run as Run,
    )
    from agh.protocol.shapes import (
        RunDetail as RunDetail,
    )
    from agh.protocol.shapes import (
        RunSummaryStats as RunSummaryStats,
    )
    from agh.protocol.shapes import (
        ServerInfo as ServerInfo,
    )
    from agh.protocol.shapes import (
        Session as Session,
    )
    from agh.protocol.shapes import (
        StepCondition as StepCondition,
    )
    from agh.protocol.shapes import (
        Task as Task,
    )
    from agh.protocol.shapes import (
        TaskDetail as TaskDetail,
    )
    from agh.protocol.shapes import (
        TaskEvent as TaskEvent,
    )
    from agh.protocol.shapes import (
        TaskListItem as TaskListItem,
    )
    from agh.protocol.shapes import (
        TaskSummary as TaskSummary,
    )
    from agh.protocol.shapes import (
        TaskTree as TaskTree,
    )
    from agh.protocol.shapes import (
        TreeNode as TreeNode,
    )
    from agh.protocol.shapes import (
        Workflow as Workflow,
    )
    from agh.protocol.shapes import (
        WorkflowPlan as WorkflowPlan,
    )
    from agh.protocol.streams import (
        EventsSubscribeParams as EventsSubscribeParams,
    )
    from agh.protocol.streams import (
        StreamEvent as StreamEvent,
    )
    from agh.protocol.streams import (
        SubscribeResult as SubscribeResult,
    )
    from agh.protocol.streams import (
        SubscriptionCancelParams as SubscriptionCancelParams,
    )
    from agh.protocol.streams import (
        TaskStreamParams as TaskStreamParams,
    )
    from agh.protocol.streams import (
        TimelineItem as TimelineItem,
    )
    from agh.protocol.streams import (
        TimelineParams as TimelineParams,
    )
    from agh.protocol.streams import (
        TimelineResult as TimelineResult,
    )
    from agh.protocol.tasks import (
        DependencyAddParams as DependencyAddParams,
    )
    from agh.protocol.tasks import (
        DependencyRemoveParams as DependencyRemoveParams,
    )
    from agh.protocol.tasks import (
        RunsListResult as RunsListResult,
    )
    from agh.protocol.tasks import (
        TaskDetailResult as TaskDetailResult,
    )
    from agh.protocol.tasks import (
        TaskResult as TaskResult,
    )
    from agh.protocol.tasks import (
        TaskRunResult as TaskRunResult,
    )
    from agh.protocol.tasks import (
        TasksApproveParams as TasksApproveParams,
    )
    from agh.protocol.tasks import (
        TasksCancelParams as TasksCancelParams,
    )
    from agh.protocol.tasks import (
        TasksChildrenCreateParams as TasksChildrenCreateParams,
    )
    from agh.protocol.tasks import (
        TasksCreateParams as TasksCreateParams,
    )
    from agh.protocol.tasks import (
        TasksListParams as TasksListParams,
    )
    from agh.protocol.tasks import (
        TasksListResult as TasksListResult,
    )
    from agh.protocol.tasks import (
        TasksRejectParams as TasksRejectParams,
    )
    from agh.protocol.tasks import (
        TasksRunsListParams as TasksRunsListParams,
    )
    from agh.protocol.tasks import (
        TasksStartParams as TasksStartParams,
    )
    from agh.protocol.tasks import (
        TasksUpdateParams as TasksUpdateParams,
    )
    from agh.protocol.tasks import (
        TaskTreeResult as TaskTreeResult,
    )
    from agh.protocol.workflows import (
        ComposeResult as ComposeResult,
    )
    from agh.protocol.workflows import (
        WorkflowsComposeParams as WorkflowsComposeParams,
    )
