"""``session.hello``, ``sessions.list``, ``server.info`` and ``server.backup``:
params and results."""

from __future__ import annotations

from agh.protocol.base import Limit, NonEmpty, Params, Shape
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


class ServerBackupParams(Params, kw_only=True):
    # Absolute, as aghd sees it (the agh CLI resolves a relative one).
    path: NonEmpty
    # Replace an existing file at path (else: conflict).
    force: bool = False


class ServerBackupResult(Shape, kw_only=True):
    path: str
    bytes: int
    schema_version: int
    # The database copied, and when its snapshot was taken.
    database: str
    taken_at: str
    duration_ms: int
