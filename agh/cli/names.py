"""Names people read instead of ids: the agent name behind a session id.

A run's ``claimed_by`` is ``{"kind": "agent_session", "ref": <session
id>}``; people know their agents by the name they gave in
``session.hello``. One ``sessions.list`` call maps them, made only when a
listing has sessions to name. Owns: that lookup. Must not: print.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from agh import protocol as p
    from agh.client import Client


def agent_names(client: Client, session_ids: Iterable[str | None]) -> dict[str, str]:
    """Session id → agent name (or session name) for the given sessions."""
    wanted = {s for s in session_ids if s}
    names: dict[str, str] = {}
    cursor: str | None = None
    while wanted - names.keys():
        page = client.sessions_list(limit=1000, cursor=cursor)
        for s in page.sessions:
            if s.session_id in wanted and (s.agent_name or s.name):
                names[s.session_id] = str(s.agent_name or s.name)
        cursor = page.next_cursor
        if cursor is None:
            break
    return names


def connected_names(client: Client) -> dict[str, str | None]:
    """Agent names of every connected session (those likely at work)."""
    names: dict[str, str | None] = {}
    cursor = None
    while True:
        page = client.sessions_list(state="connected", limit=100, cursor=cursor)
        for s in page.sessions:
            names[s.session_id] = s.agent_name or s.name
        cursor = page.next_cursor
        if cursor is None:
            return names


def session_of(run: p.Run | None) -> str | None:
    """The session id that claimed ``run``, if a session did."""
    if run is None:
        return None
    if run.session_id:
        return run.session_id
    claimer = run.claimed_by
    if claimer is not None and claimer.kind == "agent_session":
        return claimer.ref
    return None


def run_agent(run: p.Run | None, names: Mapping[str, str | None]) -> str | None:
    """Who works (or worked) on ``run``: its session's agent name, else a
    short session id; a claimer that is no session as ``kind:ref``;
    ``None`` when nobody claimed it."""
    if run is None:
        return None
    sid = session_of(run)
    if sid is not None:
        return names.get(sid) or sid[:12]
    actor = run.claimed_by
    if actor is None:
        return None
    return f"{actor.kind}:{actor.ref}" if actor.ref else actor.kind
