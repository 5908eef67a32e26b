"""``tasks.timeline`` and the stream subscriptions: ``tasks.stream``,
``events.subscribe``, ``subscriptions.cancel`` (delivery: aghd.streams)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agh import protocol as p
from aghd import views
from aghd.rpc import Context, method
from aghd.store import events as events_store
from aghd.store.rows import find_task

if TYPE_CHECKING:
    from aghd.store.db import Tx


@method("tasks.timeline", p.TimelineParams)
async def timeline(ctx: Context, params: p.TimelineParams) -> p.TimelineResult:
    def do(tx: Tx) -> list[events_store.TimelineEntry]:
        task = find_task(tx, params.id)
        rows = events_store.task_timeline(tx, task["id"], params.after_sequence, params.limit)
        return events_store.timeline_entries(tx, rows)

    entries = await ctx.daemon.read(do)
    return p.TimelineResult(timeline=[views.timeline_item(e) for e in entries])


@method("tasks.stream", p.TaskStreamParams)
async def stream_task(ctx: Context, params: p.TaskStreamParams) -> p.SubscribeResult:
    """One task's events; without ``after_sequence`` its whole history first."""
    task = await ctx.daemon.read(find_task, params.id)
    after = params.after_sequence or 0
    sub = ctx.daemon.streams.subscribe(
        ctx.conn, events_store.StreamFilter(task_id=task["id"]), after, ctx.after_reply
    )
    return p.SubscribeResult(subscription=sub.id, after_sequence=after)


@method("events.subscribe", p.EventsSubscribeParams)
async def subscribe(ctx: Context, params: p.EventsSubscribeParams) -> p.SubscribeResult:
    """Every task's events (filterable); without ``after_sequence``, from now on."""

    def resolve(tx: Tx) -> tuple[events_store.StreamFilter, int]:
        task_id = None
        if params.task_id is not None:
            task_id = find_task(tx, params.task_id)["id"]
        after = params.after_sequence
        if after is None:
            after = events_store.last_sequence(tx)
        # The workspace is looked up by the stream (again and again while it
        # does not exist yet: its first task may come later).
        filters = events_store.StreamFilter(
            task_id, network_channel=params.network_channel, workspace_ref=params.workspace
        )
        return filters, after

    filters, after = await ctx.daemon.read(resolve)
    sub = ctx.daemon.streams.subscribe(ctx.conn, filters, after, ctx.after_reply)
    return p.SubscribeResult(subscription=sub.id, after_sequence=after)


@method("subscriptions.cancel", p.SubscriptionCancelParams)
async def cancel(ctx: Context, params: p.SubscriptionCancelParams) -> p.EmptyResult:
    ctx.daemon.streams.cancel(ctx.conn, params.subscription)
    return p.EmptyResult()
