"""``session.hello``, ``sessions.list``, ``server.info``, ``server.backup``
and ``server.config``: params and results."""

from __future__ import annotations

from typing import Any

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


class ConfigSetting(Shape, kw_only=True):
    name: str
    # The effective value (a number, string, boolean or list of uids).
    value: Any
    # Where it came from: "default", "file PATH:LINE", "flag --lease-ms",
    # "flag --set NAME", "env AGH_DB" or "systemd socket".
    source: str
    # A change applies only when aghd starts again.
    restart: bool
    # A value the file sets that waits for that restart.
    pending: Any = None


class ServerConfigResult(Shape, kw_only=True):
    # The configuration file aghd reads (and watches), null when none;
    # whether it exists.
    file: str | None
    file_exists: bool
    settings: list[ConfigSetting]
