"""What a handler may use, typed: the store's read and write, the session
registry, the configuration, the stream hub, the work signal, the retry
backoff and who this daemon is.

The daemon (``aghd.app``) builds one ``Services`` at start-up; every call's
``Context`` carries it. Handlers see nothing else of the daemon: not the
committer's lifecycle, not the server, not the scheduler. ``Store`` is a
protocol so that the store could live behind another boundary (its own
process) without a handler changing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from agh.errors import AghError
from aghd.store import sessions as sessions_store
from aghd.store.models import Backoff

if TYPE_CHECKING:
    from collections.abc import Callable

    import anyio

    from aghd.config import Config, Layers
    from aghd.rpc import ConnectionState
    from aghd.scheduler import WorkSignal
    from aghd.store.db import Caller, Tx
    from aghd.streams import Hub

log = logging.getLogger("aghd")

T = TypeVar("T")
P = ParamSpec("P")


class Store(Protocol):
    """Run a store function in a transaction: ``write`` in the next group
    commit (returning once it is durable), ``read`` on a read snapshot.
    mypy checks ``fn``'s arguments against ``args`` and ``kwargs``."""

    async def write(
        self, fn: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...

    async def read(
        self, fn: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Which aghd answers (``server.info``, ``session.hello``)."""

    version: str
    pid: int
    started_at: int  # ms since the epoch


class SessionRegistry:
    """Which open connections are bound to which agent session.

    A session is ``connected`` while at least one connection is bound to it
    (``session.hello``); when its last one closes it becomes
    ``disconnected`` in the store.
    """

    def __init__(self, store: Store, stopping: anyio.Event) -> None:
        self._store = store
        self._stopping = stopping
        # session_id -> number of open connections bound to it
        self._connections: dict[str, int] = {}

    @staticmethod
    def claimant(conn: ConnectionState, session_id: str | None) -> tuple[Caller, str | None]:
        """Who a claim is for: an explicit session, else the hello session."""
        if session_id is not None:
            return conn.caller.for_session(session_id), session_id
        return conn.caller, conn.caller.session_id

    async def bind(self, conn: ConnectionState, session_id: str) -> None:
        previous = conn.session_id
        if previous == session_id:
            return
        conn.session_id = session_id
        self._connections[session_id] = self._connections.get(session_id, 0) + 1
        if previous is not None:
            await self._unbind(previous)

    async def connection_gone(self, conn: ConnectionState) -> None:
        if conn.session_id is not None:
            await self._unbind(conn.session_id)
            conn.session_id = None

    async def _unbind(self, session_id: str) -> None:
        left = self._connections.get(session_id, 1) - 1
        if left > 0:
            self._connections[session_id] = left
            return
        self._connections.pop(session_id, None)
        if self._stopping.is_set():
            return  # recovery at next start marks every session disconnected
        try:
            await self._store.write(sessions_store.set_state, session_id, "disconnected")
        except AghError:
            log.warning("could not mark session %s disconnected", session_id, exc_info=True)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler reaches through ``ctx``."""

    store: Store
    sessions: SessionRegistry
    streams: Hub
    work: WorkSignal
    # The configuration: its live settings (``config``), their sources and
    # the file (server.config).
    layers: Layers
    identity: Identity
    # Set when the daemon begins to drain: long polls end, writes are refused.
    stopping: anyio.Event

    @property
    def config(self) -> Config:
        """The live settings: a reload changes them in place."""
        return self.layers.config

    @property
    def backoff(self) -> Backoff:
        """The retry delays, as the configuration says now (it reloads)."""
        return Backoff(self.config.retry_backoff_base_ms, self.config.retry_backoff_cap_ms)
