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
import anyio.lowlevel

import aghd.handlers  # noqa: F401  (registers every method)
from agh import __version__
from aghd import files, reload, retention, systemd
from aghd.committer import Committer
from aghd.config import Layers
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
from aghd.streams import Hub

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator

    from agh.settings import Config
    from aghd.rpc import ConnectionState

log = logging.getLogger("aghd")


class Daemon:
    """The composition root: builds the committer, scheduler, stream hub,
    session registry and server, and the ``Services`` handlers get. Tests
    reach its parts (``streams``, ``request_stop``); handlers never do."""

    def __init__(self, layers: Layers, *, integrity_check: bool) -> None:
        config = layers.config
        self.config = config
        self.layers = layers
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
            sessions=self.sessions,
            streams=self.streams,
            work=self.work,
            layers=layers,
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


def _listening_at(socket_path: str) -> bool:
    """Whether a process listens on a Unix socket bound at ``socket_path``
    (systemd's aghd.socket, say), from /proc/net/unix; False where unknown.
    Connecting to find out would start the service behind an activated socket."""
    wanted = os.path.abspath(socket_path)
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        # "Num RefCount Protocol Flags Type St Inode Path"; flag 0x10000 is
        # __SO_ACCEPTCON (listening). The path may contain spaces.
        fields = line.split(None, 7)
        if len(fields) == 8 and int(fields[3], 16) & 0x10000 and fields[7] == wanted:
            return True
    return False


async def _bind(socket_path: str) -> anyio.abc.SocketListener:
    # Start-up, before anything is served: a blocking stat harms no one.
    if os.path.lexists(socket_path):  # noqa: ASYNC240
        # We hold the lock in a directory only we can write, so no live
        # daemon owns this: a crashed one left it -- unless something that
        # takes no lock listens there: systemd's aghd.socket while
        # aghd.service is down. Removing that would cut systemd off.
        if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            raise StartupError(
                f"{socket_path} exists and is not a socket; remove it or choose --socket",
                {"socket": socket_path},
            )
        if _listening_at(socket_path):
            raise StartupError(
                f"something already listens on {socket_path} (systemd's aghd.socket?) "
                "without running aghd; start aghd through it (`systemctl --user start "
                "aghd.service`, or just connect), or stop it first (`systemctl --user "
                "stop aghd.socket`), or choose another --socket",
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


def _inherited_path(sock: socket.socket, configured: str) -> str:
    """The path systemd bound ``sock`` to; ``configured`` (for the lock and
    the logs) when it has none (an abstract socket)."""
    name = sock.getsockname()
    if isinstance(name, str) and name.startswith("/"):
        if name != configured:
            log.info("socket activation: serving %s (not %s)", name, configured)
        return name
    log.warning("socket activation: the socket has no path; locking %s", configured + ".lock")
    return configured


def _open(layers: Layers) -> Daemon:
    """Open the database (refusing a damaged one before migrating it) and
    the daemon around it. The check reads every page, so it is skipped when
    the file is exactly as the last clean stop left it (aghd/files.py)."""
    config = layers.config
    check = config.integrity_check
    if files.left_clean(config.db_path) and check:
        log.info("database unchanged since aghd last stopped cleanly: start-up check skipped")
        check = False
    try:
        return Daemon(layers, integrity_check=check)
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
            if daemon.stopping.is_set():
                continue  # draining: a reload now would tell systemd READY=1 again
            reload.reload(daemon.layers, "SIGHUP")
            continue
        log.info("received %s: shutting down", signal.Signals(signum).name)
        daemon.request_stop()


async def serve(
    config: Config,
    *,
    layers: Layers | None = None,
    handle_signals: bool = True,
    task_status: anyio.abc.TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until ``request_stop()`` or SIGTERM; then drain and exit.

    ``layers``: where ``config`` came from, with the configuration file to
    watch and reload (``aghd`` passes them; in-process tests need not).

    Raises AlreadyRunning when another daemon holds the socket or database.
    """
    if layers is None:
        layers = Layers(config=config)
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
        # Socket activation (aghd.socket): systemd bound the socket and owns
        # its file; its path names our lock, as the path we bind would.
        inherited = systemd.inherited_listener()
        if inherited is not None:
            path = _inherited_path(inherited, config.socket_path)
            layers.hold("socket_path", path, "systemd socket")
        try:
            locks = acquire_locks(config)
        except BaseException:
            if inherited is not None:
                inherited.close()
            raise
        daemon: Daemon | None = None
        bound = False  # only a socket we bound is ours to remove, never systemd's
        drained = False  # every queued write committed, the loops ended
        try:
            systemd.status(f"opening the database {config.db_path}")
            daemon = _open(layers)
            recovered = daemon.committer.write_sync(_recover)
            if recovered:
                log.info("recovered %d run(s) whose lease ran out while aghd was down", recovered)
            if inherited is not None:
                listener = await anyio.abc.SocketListener.from_socket(inherited)
            else:
                listener = await _bind(config.socket_path)
                bound = True
            async with anyio.create_task_group() as outer:
                outer.start_soon(daemon.committer.run)
                async with anyio.create_task_group() as inner:
                    inner.start_soon(daemon.scheduler.run)
                    inner.start_soon(retention.run, daemon.committer, config)
                    inner.start_soon(reload.watch, daemon.layers, daemon.stopping)
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
                    # One checkpoint lets server.serve (queued before us) run
                    # to create_unix_server, which starts accepting before it
                    # first yields: READY=1 means a connect is answered now.
                    await anyio.lowlevel.checkpoint()
                    systemd.ready(f"serving {config.socket_path}")
                    task_status.started(daemon)
                    await daemon.stop_requested.wait()
                    systemd.stopping()
                    systemd.status("draining: finishing the requests in flight")
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
            if inherited is not None:
                inherited.close()  # our copy only (a no-op once the server closed it)
            for fd in locks:  # the database's last, after SQLite closed it
                os.close(fd)
            log.info("aghd stopped")
