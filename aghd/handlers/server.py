"""``server.info``: which aghd answers, since when, on which files."""

from __future__ import annotations

from agh import protocol as p
from aghd.rpc import Context, method
from aghd.timefmt import ts


@method("server.info", p.EmptyParams)
async def server_info(ctx: Context, params: p.EmptyParams) -> p.ServerInfoResult:
    d = ctx.daemon
    return p.ServerInfoResult(
        version=d.version,
        pid=d.pid,
        socket=d.config.socket_path,
        database=d.config.db_path,
        started_at=ts(d.started_at) or "",
        synchronous=d.config.synchronous,
    )
