"""``events.subscribe``: every task's events, live (delivery: aghd.streams)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agh import protocol as p
from aghd.rpc import Context, method
from aghd.store import events as events_store
from aghd.store.rows import find_task

if TYPE_CHECKING:
    from aghd.store.db import Tx


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

    filters, after = await ctx.store.read(resolve)
    sub = ctx.streams.subscribe(ctx.conn, filters, after, ctx.after_reply)
    return p.SubscribeResult(subscription=sub.id, after_sequence=after)
