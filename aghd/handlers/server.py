"""``server.info``: which aghd answers, since when, on which files."""

from __future__ import annotations

from agh import protocol as p
from aghd.rpc import Context, method
from aghd.timefmt import ts


@method("server.info", p.EmptyParams)
async def server_info(ctx: Context, params: p.EmptyParams) -> p.ServerInfoResult:
    me, config = ctx.services.identity, ctx.config
    return p.ServerInfoResult(
        version=me.version,
        pid=me.pid,
        socket=config.socket_path,
        database=config.db_path,
        started_at=ts(me.started_at) or "",
        synchronous=config.synchronous,
    )
