"""``session.hello`` and ``sessions.list``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agh import protocol as p
from aghd import views
from aghd.rpc import Context, method
from aghd.store import sessions as store
from aghd.store.db import Caller, Tx, new_id, now_ms
from aghd.store.workspaces import resolve_workspace
from aghd.timefmt import ts

if TYPE_CHECKING:
    import sqlite3


@method("session.hello", p.HelloParams)
async def hello(ctx: Context, params: p.HelloParams) -> p.HelloResult:
    """Create or refresh a session and bind this connection to it.

    The actor becomes ``agent_session:<session_id>``, except for the agh CLI
    (origin kind ``cli``): a person at a terminal stays the ``human`` actor so
    what they create is theirs; the session only records the connection.
    """
    origin = params.origin or p.Origin("agent_session")
    session_id = params.session_id or new_id("ses")
    conn = ctx.conn
    if origin.kind == "cli" and params.session_id is None:
        # A one-shot CLI command: nothing worth persisting, or sessions.list
        # would fill up with one row per `agh` invocation.
        conn.caller = Caller("human", conn.user, "cli", origin.ref)
        now = ts(now_ms()) or ""
        session = p.Session(
            agent_name=params.agent_name,
            channel=params.channel,
            created_at=now,
            name=params.name,
            session_id=session_id,
            state="connected",
            updated_at=now,
        )
        return p.HelloResult(
            session=session, server=p.ServerInfo(version=ctx.services.identity.version)
        )

    def do(tx: Tx) -> sqlite3.Row:
        workspace_id = None
        if params.workspace is not None:
            workspace_id = resolve_workspace(tx, params.workspace)["id"]
        return store.hello(
            tx,
            session_id,
            agent_name=params.agent_name,
            channel=params.channel,
            name=params.name,
            workspace_id=workspace_id,
            origin_kind=origin.kind,
            origin_ref=origin.ref,
        )

    row = await ctx.store.write(do)
    if origin.kind == "cli":
        conn.caller = Caller("human", conn.user, "cli", origin.ref)
    else:
        conn.caller = Caller("agent_session", session_id, origin.kind, origin.ref, session_id)
    await ctx.sessions.bind(conn, session_id)
    return p.HelloResult(
        session=views.session(row), server=p.ServerInfo(version=ctx.services.identity.version)
    )


@method("sessions.list", p.SessionsListParams)
async def list_sessions(ctx: Context, params: p.SessionsListParams) -> p.SessionsListResult:
    rows = await ctx.store.read(store.list_sessions, params.state, params.limit, params.cursor)
    rows, cursor = views.page(rows, params.limit, "session_id")
    return p.SessionsListResult(sessions=[views.session(r) for r in rows], next_cursor=cursor)
