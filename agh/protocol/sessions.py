"""``session.hello``, ``sessions.list`` and ``server.info``: params and results."""

from __future__ import annotations

from agh.protocol.base import Limit, Params, Shape
from agh.protocol.enums import PROTOCOL_VERSION, SessionState
from agh.protocol.shapes import Origin, ServerInfo, Session


class HelloParams(Params, kw_only=True):
    agent_name: str | None = None
    session_id: str | None = None
    channel: str | None = None
    name: str | None = None
    workspace: str | None = None
    origin: Origin | None = None


class SessionsListParams(Params, kw_only=True):
    state: SessionState | None = None
    limit: Limit = 100
    cursor: str | None = None


class HelloResult(Shape, kw_only=True):
    session: Session
    server: ServerInfo


class SessionsListResult(Shape, kw_only=True):
    sessions: list[Session]
    next_cursor: str | None = None


class ServerInfoResult(Shape, kw_only=True):
    version: str
    protocol: int = PROTOCOL_VERSION
    pid: int
    socket: str
    database: str
    started_at: str
    synchronous: str
