"""Agent sessions: who is connected, under which name, channel and workspace.

Owns: the ``sessions`` rows (hello, state, lookups). Must not: import a
store module above ``db``: claims and leases build on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agh.errors import NotFound

if TYPE_CHECKING:
    import sqlite3

    from aghd.store.db import Tx


def hello(
    tx: Tx,
    session_id: str,
    *,
    agent_name: str | None,
    channel: str | None,
    name: str | None,
    workspace_id: str | None,
    origin_kind: str,
    origin_ref: str | None,
) -> sqlite3.Row:
    """Create or refresh a session and mark it connected.

    Fields left out on a refresh keep their stored values.
    """
    row = tx.one(
        "INSERT INTO sessions (session_id, agent_name, channel, name, state, workspace_id,"
        " origin_kind, origin_ref, created_at, updated_at)"
        " VALUES (?,?,?,?, 'connected', ?,?,?,?,?)"
        " ON CONFLICT (session_id) DO UPDATE SET"
        "  agent_name = coalesce(excluded.agent_name, agent_name),"
        "  channel = coalesce(excluded.channel, channel),"
        "  name = coalesce(excluded.name, name),"
        "  workspace_id = coalesce(excluded.workspace_id, workspace_id),"
        "  origin_kind = excluded.origin_kind, origin_ref = excluded.origin_ref,"
        "  state = 'connected', updated_at = excluded.updated_at"
        " RETURNING *",
        (
            session_id,
            agent_name,
            channel,
            name,
            workspace_id,
            origin_kind,
            origin_ref,
            tx.now,
            tx.now,
        ),
    )
    assert row is not None
    return row


def set_state(tx: Tx, session_id: str, state: str) -> None:
    tx.execute(
        "UPDATE sessions SET state = ?, updated_at = ? WHERE session_id = ? AND state != ?",
        (state, tx.now, session_id, state),
    )


def disconnect_all(tx: Tx) -> int:
    """At start-up no connection is open, so no session is connected."""
    return tx.execute(
        "UPDATE sessions SET state = 'disconnected', updated_at = ? WHERE state = 'connected'",
        (tx.now,),
    ).rowcount


def find_session(tx: Tx, session_id: str | None) -> sqlite3.Row | None:
    if session_id is None:
        return None
    return tx.one("SELECT * FROM sessions WHERE session_id = ?", (session_id,))


def get_session(tx: Tx, session_id: str) -> sqlite3.Row:
    """The session; raises NotFound."""
    row = tx.one("SELECT * FROM sessions WHERE session_id = ?", (session_id,))
    if row is None:
        raise NotFound(
            f"session {session_id} not found",
            {"session_id": session_id, "hint": "create it with session.hello"},
        )
    return row


def list_sessions(tx: Tx, state: str | None, limit: int, cursor: str | None) -> list[sqlite3.Row]:
    sql = "SELECT * FROM sessions WHERE 1"
    args: list[Any] = []
    if state is not None:
        sql += " AND state = ?"
        args.append(state)
    if cursor is not None:
        sql += " AND session_id > ?"
        args.append(cursor)
    sql += " ORDER BY session_id LIMIT ?"
    args.append(limit + 1)
    return tx.all(sql, args)
