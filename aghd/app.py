"""The daemon: builds the committer, scheduler, stream hub, session
registry, the services handlers get and the server that dispatches to
them, and runs the lifecycle — lock, recover, bind, serve, drain on
SIGTERM, clean up.

``serve(config)`` is the whole daemon; tests run it in-process with
``await task_group.start(serve, config)`` and stop it with
``daemon.request_stop()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sqlite3
import stat
from typing import TYPE_CHECKING

import anyio
import anyio.abc

import aghd.handlers  # noqa: F401  (registers every method)
from agh import __version__
from aghd import files, retention
from aghd.committer import Committer
from aghd.files import StartupError
from aghd.rpc import Dispatcher
from aghd.scheduler import Scheduler, WorkSignal
from aghd.server import Server
from aghd.services import Identity, Services, SessionRegistry
from aghd.store import leases
from aghd.store import sessions as sessions_store
from aghd.store.db import (
    DAEMON,
    Committed,
    DatabaseDamaged,
    Tx,
    now_ms,
    recovery_steps,
    storage_error,
)
from aghd.store.models import Backoff
from aghd.streams import Hub

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aghd.config import Config
    from aghd.rpc import ConnectionState

log = logging.getLogger("aghd")


class Daemon:
    """The composition root: builds the committer, scheduler, stream hub,
    session registry and server, and the ``Services`` handlers get. Tests
    reach its parts (``streams``, ``request_stop``); handlers never do."""

    def __init__(self, config: Config, *, integrity_check: bool) -> None:
        self.config = config
        self.stopping = anyio.Event()
        self.stop_requested = anyio.Event()
        self.work = WorkSignal()
        self.committer = Committer(
            config.db_path,
            config.synchronous,
            on_commit=self._on_commit,
            readers=config.read_connections,
            busy_timeout_ms=config.busy_timeout_ms,
            integrity_check=integrity_check,
        )
        self.scheduler = Scheduler(self.committer, self.work, config.reaper_max_sleep_s)
        self.streams = Hub(
            self.committer, config.stream_keepalive_s, config.stream_max_backlog_bytes
        )
        self.sessions = SessionRegistry(self.committer, self.stopping)
        self.services = Services(
            store=self.committer,
            config=config,
            sessions=self.sessions,
            streams=self.streams,
            work=self.work,
            backoff=Backoff(config.retry_backoff_base_ms, config.retry_backoff_cap_ms),
            identity=Identity(__version__, os.getpid(), now_ms()),
            stopping=self.stopping,
        )
        self.server = Server(
            config,
            Dispatcher(self.services),
            self._connection_gone,
            config.max_connections or _connection_budget(),
        )

    def _on_commit(self, effects: Committed) -> None:
        if effects.events:
            self.streams.committed()
        if effects.work:
            self.work.notify()
        if effects.deadline is not None:
            self.scheduler.consider(effects.deadline)

    async def _connection_gone(self, conn: ConnectionState) -> None:
        self.streams.connection_gone(conn)
        await self.sessions.connection_gone(conn)

    def request_stop(self) -> None:
        self.stop_requested.set()


# -- lifecycle -----------------------------------------------------------------


# Descriptors kept for the database connections, the listener, locks and the
# event loop; the rest of the limit is for client connections.
_RESERVED_FDS = 64
_MAX_AUTO_CONNECTIONS = 4096


def _connection_budget() -> int:
    """Raise the soft descriptor limit to the hard one (as daemons do) and
    return how many client connections fit in it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(8, min(_MAX_AUTO_CONNECTIONS, soft - _RESERVED_FDS))


def acquire_locks(config: Config) -> list[int]:
    """Check the socket directory, then lock the socket and the database
    before touching either; return the descriptors to close at the very end
    (the database's last: see aghd/files.py)."""
    fds: list[int] = []
    try:
        files.private_socket_dir(config.socket_path)
        lock_path = config.socket_path + ".lock"
        fds.append(files.open_private(lock_path, "socket lock"))
        files.lock(fds[-1], config.socket_path, "socket")
        files.write_pid(fds[-1])
        fds.append(files.open_private(config.db_path, "database"))
        files.lock(fds[-1], config.db_path, "database")
        files.tighten_side_files(config.db_path)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


async def _bind(socket_path: str) -> anyio.abc.SocketListener:
    # Start-up, before anything is served: a blocking stat harms no one.
    if os.path.lexists(socket_path):  # noqa: ASYNC240
        # We hold the lock in a directory only we can write, so no live
        # daemon owns this: a crashed one left it.
        if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            raise StartupError(
                f"{socket_path} exists and is not a socket; remove it or choose --socket",
                {"socket": socket_path},
            )
        log.info("removing stale socket %s", socket_path)
        os.unlink(socket_path)
    old = os.umask(0o177)  # the socket is born 0600: no window where others can connect
    try:
        return await anyio.create_unix_listener(socket_path, mode=0o600)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {socket_path}: {exc}; choose another --socket "
            "(Unix socket paths must be shorter than 108 bytes)",
            {"socket": socket_path},
        ) from None
    finally:
        os.umask(old)


def _open(config: Config) -> Daemon:
    """Open the database (refusing a damaged one before migrating it) and
    the daemon around it. The check reads every page, so it is skipped when
    the file is exactly as the last clean stop left it (aghd/files.py)."""
    check = config.integrity_check
    if files.left_clean(config.db_path) and check:
        log.info("database unchanged since aghd last stopped cleanly: start-up check skipped")
        check = False
    try:
        return Daemon(config, integrity_check=check)
    except DatabaseDamaged as exc:
        raise StartupError(
            f"the database {config.db_path} is damaged ({exc}); aghd will not serve it: "
            + recovery_steps(config.db_path),
            {"db": config.db_path, "problems": exc.problems},
        ) from None
    except sqlite3.Error as exc:
        raise StartupError(
            f"cannot open {config.db_path}: " + storage_error(exc, config.db_path).message,
            {"db": config.db_path},
        ) from None
    except (RuntimeError, OSError) as exc:
        raise StartupError(
            f"cannot open the database {config.db_path}: {exc}", {"db": config.db_path}
        ) from None


def _recover(tx: Tx) -> int:
    """Start-up: no session is connected; leases that ran out while we were
    down are handled now, exactly as the reaper would have."""
    sessions_store.disconnect_all(tx)
    return leases.expire_leases(tx, DAEMON)


async def _watch_signals(daemon: Daemon, signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: nothing to reload")
            continue
        log.info("received %s: shutting down", signal.Signals(signum).name)
        daemon.request_stop()


async def serve(
    config: Config,
    *,
    handle_signals: bool = True,
    task_status: anyio.abc.TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until ``request_stop()`` or SIGTERM; then drain and exit.

    Raises AlreadyRunning when another daemon holds the socket or database.
    """
    # The signals are taken before anything else: a SIGTERM that comes while
    # the database opens, or between binding the socket and the watcher's
    # first step, waits in the receiver and stops aghd cleanly, instead of
    # killing it by the default action (no clean-stop mark, a socket left).
    receiver = (
        anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        if handle_signals
        else contextlib.nullcontext(None)
    )
    with receiver as signals:
        locks = acquire_locks(config)
        daemon: Daemon | None = None
        bound = False  # only a socket we bound is ours to remove
        drained = False  # every queued write committed, the loops ended
        try:
            daemon = _open(config)
            recovered = daemon.committer.write_sync(_recover)
            if recovered:
                log.info("recovered %d run(s) whose lease ran out while aghd was down", recovered)
            listener = await _bind(config.socket_path)
            bound = True
            async with anyio.create_task_group() as outer:
                outer.start_soon(daemon.committer.run)
                async with anyio.create_task_group() as inner:
                    inner.start_soon(daemon.scheduler.run)
                    inner.start_soon(retention.run, daemon.committer, config)
                    inner.start_soon(daemon.streams.run)
                    inner.start_soon(daemon.server.serve, listener)
                    if signals is not None:
                        inner.start_soon(_watch_signals, daemon, signals)
                    log.info(
                        "aghd %s serving %s (db %s)",
                        __version__,
                        config.socket_path,
                        config.db_path,
                    )
                    task_status.started(daemon)
                    await daemon.stop_requested.wait()
                    # Drain: stop accepting and reading, let in-flight requests
                    # finish (their writes commit and their replies go out).
                    daemon.stopping.set()
                    daemon.server.stop_accepting()
                    with anyio.move_on_after(config.shutdown_grace_s):
                        await daemon.server.wait_idle()
                    inner.cancel_scope.cancel()
                daemon.committer.close()
            drained = True
        finally:
            if daemon is not None and daemon.committer.shutdown() and drained:
                files.mark_clean(config.db_path)
            if bound:
                with contextlib.suppress(OSError):
                    os.unlink(config.socket_path)
            for fd in locks:  # the database's last, after SQLite closed it
                os.close(fd)
            log.info("aghd stopped")
