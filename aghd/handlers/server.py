"""``server.info``: which aghd answers, since when, on which files;
``server.backup``: a consistent copy of its database, taken while it serves;
``server.config``: its settings and where each came from."""

from __future__ import annotations

import logging
import os

import anyio.to_thread

from agh import protocol as p
from agh.errors import InvalidParams
from aghd.rpc import Context, method
from aghd.store.db import backup_database
from aghd.timefmt import ts

log = logging.getLogger("aghd")


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


@method("server.config", p.EmptyParams)
async def server_config(ctx: Context, params: p.EmptyParams) -> p.ServerConfigResult:
    return ctx.services.layers.wire()


@method("server.backup", p.ServerBackupParams)
async def server_backup(ctx: Context, params: p.ServerBackupParams) -> p.ServerBackupResult:
    # aghd's working directory is not the caller's: a relative path would
    # land somewhere the caller did not mean.
    if not os.path.isabs(params.path):
        raise InvalidParams(
            f"backup path {params.path!r} is relative; pass an absolute path"
            " (the agh CLI resolves one against its working directory)",
            {"field": "$.params.path", "hint": "pass an absolute path"},
        )
    config = ctx.config
    # On a thread of its own with its own read connection (not one of the
    # committer's readers, which a long copy would hold up): writers go on
    # committing meanwhile (WAL), and the event loop serves everyone else.
    report = await anyio.to_thread.run_sync(
        lambda: backup_database(
            config.db_path,
            os.path.normpath(params.path),
            replace=params.force,
            busy_timeout_ms=config.busy_timeout_ms,
        )
    )
    log.info(
        "backup of %s written to %s (%d bytes, schema version %d, %d ms)",
        config.db_path,
        report.path,
        report.bytes,
        report.schema_version,
        report.duration_ms,
    )
    return p.ServerBackupResult(
        path=report.path,
        bytes=report.bytes,
        schema_version=report.schema_version,
        database=config.db_path,
        taken_at=ts(report.taken_at) or "",
        duration_ms=report.duration_ms,
    )
