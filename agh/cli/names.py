"""Names people read instead of ids: the agent name behind a session id.

A run's ``claimed_by`` is ``{"kind": "agent_session", "ref": <session
id>}``; people know their agents by the name they gave in
``session.hello``. One ``sessions.list`` call maps them, made only when a
listing has sessions to name. Owns: that lookup. Must not: print.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


def run_agent(run: p.Run | None, names: dict[str, str]) -> str:
    """Who holds a run: its agent's name, else the actor, else ``-``."""
    if run is None:
        return "-"
    if run.session_id and run.session_id in names:
        return names[run.session_id]
    actor = run.claimed_by
    if actor is None:
        return "-"
    if actor.ref and actor.ref in names:
        return names[actor.ref]
    return f"{actor.kind}:{actor.ref}" if actor.ref else actor.kind
