"""``subscriptions.cancel``: end a stream this connection opened."""

from __future__ import annotations

from agh import protocol as p
from aghd.rpc import Context, method


@method("subscriptions.cancel", p.SubscriptionCancelParams)
async def cancel(ctx: Context, params: p.SubscriptionCancelParams) -> p.EmptyResult:
    ctx.streams.cancel(ctx.conn, params.subscription)
    return p.EmptyResult()
