"""Each JSON-RPC method's params and result: the one table of the protocol.

aghd registers a handler for every name here, ``agh.client.Client`` has a
method calling each, and agh-protocol(7) documents each:
``tests/test_methods.py`` checks all three against this table, so a method
is added here first. Params and results are the classes of the family
modules beside this one.
"""

from __future__ import annotations

from typing import NamedTuple

from agh.protocol import (
    agent,
    base,
    coordination,
    observe,
    runs,
    sessions,
    streams,
    tasks,
    workflows,
)


class Method(NamedTuple):
    params: type
    result: type


METHODS: dict[str, Method] = {
    "agent.claim_next": Method(agent.ClaimNextParams, agent.ClaimNextResult),
    "agent.complete": Method(agent.AgentCompleteParams, agent.FinishResult),
    "agent.fail": Method(agent.AgentFailParams, agent.FinishResult),
    "agent.heartbeat": Method(agent.HeartbeatParams, agent.LeaseResult),
    "agent.log": Method(coordination.AgentLogParams, coordination.AgentLogResult),
    "agent.messages": Method(coordination.AgentMessagesParams, coordination.MessagesResult),
    "agent.release": Method(agent.AgentReleaseParams, agent.FinishResult),
    "agent.send": Method(coordination.AgentSendParams, coordination.MessageResult),
    "events.subscribe": Method(streams.EventsSubscribeParams, streams.SubscribeResult),
    "observe.dashboard": Method(observe.DashboardParams, observe.DashboardResult),
    "observe.inbox": Method(observe.InboxParams, observe.InboxResult),
    "runs.attach_session": Method(runs.RunsAttachSessionParams, runs.RunResult),
    "runs.cancel": Method(runs.RunsCancelParams, runs.RunResult),
    "runs.claim": Method(runs.RunsClaimParams, runs.RunClaimResult),
    "runs.complete": Method(runs.RunsCompleteParams, runs.RunResult),
    "runs.fail": Method(runs.RunsFailParams, runs.RunResult),
    "runs.get": Method(base.IdParams, runs.RunDetailResult),
    "runs.logs": Method(coordination.RunsLogsParams, coordination.RunsLogsResult),
    "runs.start": Method(runs.RunsStartParams, runs.RunResult),
    "server.backup": Method(sessions.ServerBackupParams, sessions.ServerBackupResult),
    "server.config": Method(base.EmptyParams, sessions.ServerConfigResult),
    "server.info": Method(base.EmptyParams, sessions.ServerInfoResult),
    "session.hello": Method(sessions.HelloParams, sessions.HelloResult),
    "sessions.list": Method(sessions.SessionsListParams, sessions.SessionsListResult),
    "subscriptions.cancel": Method(streams.SubscriptionCancelParams, base.EmptyResult),
    "tasks.approve": Method(tasks.TasksApproveParams, tasks.TaskRunResult),
    "tasks.cancel": Method(tasks.TasksCancelParams, tasks.TaskResult),
    "tasks.children.create": Method(tasks.TasksChildrenCreateParams, tasks.TaskRunResult),
    "tasks.create": Method(tasks.TasksCreateParams, tasks.TaskRunResult),
    "tasks.delete": Method(base.IdParams, base.EmptyResult),
    "tasks.dependencies.add": Method(tasks.DependencyAddParams, tasks.TaskDetailResult),
    "tasks.dependencies.remove": Method(tasks.DependencyRemoveParams, tasks.TaskDetailResult),
    "tasks.get": Method(base.IdParams, tasks.TaskDetailResult),
    "tasks.list": Method(tasks.TasksListParams, tasks.TasksListResult),
    "tasks.publish": Method(base.IdParams, tasks.TaskRunResult),
    "tasks.reject": Method(tasks.TasksRejectParams, tasks.TaskResult),
    "tasks.runs.enqueue": Method(tasks.TasksStartParams, tasks.TaskRunResult),
    "tasks.runs.list": Method(tasks.TasksRunsListParams, tasks.RunsListResult),
    "tasks.send": Method(coordination.TasksSendParams, coordination.MessageResult),
    "tasks.start": Method(tasks.TasksStartParams, tasks.TaskRunResult),
    "tasks.stream": Method(streams.TaskStreamParams, streams.SubscribeResult),
    "tasks.timeline": Method(streams.TimelineParams, streams.TimelineResult),
    "tasks.tree": Method(base.IdParams, tasks.TaskTreeResult),
    "tasks.triage.archive": Method(base.IdParams, observe.TriageResult),
    "tasks.triage.dismiss": Method(base.IdParams, observe.TriageResult),
    "tasks.triage.read": Method(base.IdParams, observe.TriageResult),
    "tasks.triage.unarchive": Method(base.IdParams, observe.TriageResult),
    "tasks.update": Method(tasks.TasksUpdateParams, tasks.TaskResult),
    "workflows.compose": Method(workflows.WorkflowsComposeParams, workflows.ComposeResult),
}
