"""Run logs and messages: ``agent.log``, ``runs.logs``, ``tasks.send``,
``agent.send`` and ``agent.messages`` (PROTOCOL §7)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from agh.protocol.base import Int64, Limit, NonEmpty, Params, SeqNo, Shape
from agh.protocol.enums import LogLevel, MessageDirection, MessageKind
from agh.protocol.shapes import Actor


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
