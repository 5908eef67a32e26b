"""The event log read and followed: ``tasks.timeline``, ``tasks.stream``,
``events.subscribe``, ``subscriptions.cancel`` and the ``stream.event``
notification (PROTOCOL §5)."""

from __future__ import annotations

from typing import Any, Literal

from agh.protocol.base import Limit, NonEmpty, Params, SeqNo, Shape
from agh.protocol.coordination import RunLog
from agh.protocol.shapes import Actor, Origin, Run, TaskSummary


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
