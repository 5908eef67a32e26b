"""Group commit: many concurrent requests, one durable SQLite commit.

Owns the writer connection and the thread it runs on. Handlers call
``await committer.write(fn, *args)``; jobs that arrive while a commit is in
flight wait for the next batch, which runs them all inside one
``BEGIN IMMEDIATE`` … ``COMMIT``. A job's reply is released only after that
COMMIT returned (with ``synchronous=FULL`` that is after fsync), so no reply
ever announces a write that a crash could lose. A job that raises is undone
alone; its batch-mates still commit (see ``_run_batch``).

Reads use a second connection on their own thread (WAL lets them run while
a commit is in flight) and see every write that has been acknowledged.

This is the store's transaction owner (STYLE #2's ``transaction()``): it
issues only BEGIN / SAVEPOINT / ROLLBACK / COMMIT, because one transaction
spans many store calls. Must not: contain any other SQL (store functions
do), or know about JSON-RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import sqlite3
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

import anyio
import anyio.to_thread

from agh.errors import AghError, Busy, InternalError, InvalidParams
from aghd.store.db import (
    Committed,
    Tx,
    now_ms,
    open_connection,
    storage_error,
)

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("aghd.committer")

T = TypeVar("T")
P = ParamSpec("P")


class ReadGate(Protocol):
    """Whether the caller can take a read's result now (its connection is
    sending what it has), and how to wait until it can."""

    def is_open(self) -> bool: ...

    async def wait_open(self) -> None: ...


# Set by the server in each request's task. A read does not *start* while its
# connection has unsent replies above the write buffer's high-water mark:
# however many reads a client pipelines without reading the answers, at most
# one result per read connection is produced ahead of what it takes, so its
# memory in the daemon stays bounded.
read_gate: contextvars.ContextVar[ReadGate | None] = contextvars.ContextVar(
    "read_gate", default=None
)


class _Job:
    __slots__ = ("args", "done", "error", "fn", "kwargs", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.done: asyncio.Future[None] | None = None


class Committer:
    """The single writer. Start it with ``run()`` inside a task group."""

    def __init__(
        self,
        path: str,
        synchronous: str = "FULL",
        on_commit: Callable[[Committed], None] | None = None,
        max_batch: int = 256,
        readers: int = 2,
        busy_timeout_ms: int = 5000,
        integrity_check: bool = False,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        # The start-up check (integrity_check) reads every page: once, on the
        # writer, before its migrations.
        self.writer: sqlite3.Connection = open_connection(
            path, synchronous, busy_timeout_ms, check=integrity_check
        )
        # Reads run side by side on their own connections (WAL snapshots), so
        # a long one (a dashboard of a big hub) does not hold up the short
        # ones and the stream pumps behind it.
        self.readers = [open_connection(path, synchronous, busy_timeout_ms) for _ in range(readers)]
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        for conn in self.readers:
            self._idle_readers.put(conn)
        self.on_commit = on_commit
        self.max_batch = max_batch
        self._pending: list[_Job] = []
        # Plain asyncio primitives on the per-request path: anyio's Event costs
        # several microseconds per use, which added up to a third of the
        # daemon's CPU at 16 agents (see docs/PERFORMANCE.md).
        self._wake = asyncio.Event()
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_limiter = anyio.CapacityLimiter(readers)
        # Threads for the reads the limiter above admitted (never more).
        self._thread_limiter = anyio.CapacityLimiter(readers)
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        self.jobs = 0
        self.reruns = 0  # batches re-run with savepoints after a job failed mid-write

    # -- public API -------------------------------------------------------

    async def write(
        self, fn: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(tx, *args, **kwargs)`` in the next group commit; return
        after COMMIT.

        Raises whatever ``fn`` raised (its work rolled back), ``Busy`` while
        shutting down or when the database cannot take the write now (locked
        by another program, disk full), ``InternalError`` for a damaged
        database or a bug.
        """
        if self._closing:
            raise Busy("aghd is shutting down; retry against the restarted daemon")
        job = _Job(fn, args, kwargs)
        loop = self._loop
        if loop is None:  # once: get_running_loop() is a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        job.done = done = loop.create_future()
        self._pending.append(job)
        self._wake.set()
        await done
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    async def read(
        self, fn: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(tx, *args, **kwargs)`` on a read connection (no write
        allowed), once the calling request's ``read_gate`` is open."""
        gate = read_gate.get()
        while True:
            if gate is not None and not gate.is_open():
                await gate.wait_open()
            async with self._read_limiter:
                # Checked again with a read connection in hand: many requests
                # may have queued for one while the gate was open.
                if gate is None or gate.is_open():
                    return await anyio.to_thread.run_sync(
                        self._run_read, fn, args, kwargs, limiter=self._thread_limiter
                    )

    def write_sync(
        self, fn: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run one job in its own transaction on the calling thread.

        For start-up and shutdown, before/after the batch loop runs.
        """
        job = _Job(fn, args, kwargs)
        effects = self._run_batch([job])
        if job.error is not None:
            raise job.error
        if self.on_commit is not None:
            self.on_commit(effects)
        return job.result  # type: ignore[no-any-return]

    async def run(self) -> None:
        """The batch loop; returns once ``close()`` was called and the queue drained."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                # Shielded: once a batch is handed to the thread its replies
                # must be released, even while the daemon is being cancelled.
                with anyio.CancelScope(shield=True):
                    effects = await anyio.to_thread.run_sync(
                        self._run_batch, batch, limiter=self._write_limiter
                    )
                    self.batches += 1
                    self.jobs += len(batch)
                    for job in batch:
                        if job.done is not None and not job.done.done():
                            job.done.set_result(None)
                    if self.on_commit is not None:
                        try:
                            self.on_commit(effects)
                        except Exception:  # a broken listener must not stop commits
                            log.exception("on_commit hook failed")
            if self._closing:
                return

    def close(self) -> None:
        """Refuse new writes; ``run()`` returns after the queued ones commit."""
        self._closing = True
        self._wake.set()

    def shutdown(self) -> bool:
        """Checkpoint and close every connection (after ``run()`` returned);
        whether the checkpoint went through."""
        try:
            busy = int(self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        except sqlite3.Error:
            log.warning("WAL checkpoint at shutdown failed", exc_info=True)
            busy = 1
        for conn in self.readers:
            conn.close()
        self.writer.close()
        return busy == 0

    # -- on the writer thread ----------------------------------------------

    def _run_batch(self, batch: list[_Job]) -> Committed:
        """BEGIN, run every job, COMMIT; a failing job is rolled back alone.

        First without savepoints (they cost ~17% of store throughput). A job
        that raises before writing anything just gets its error. One that
        raises after writing forces a rollback of the whole uncommitted
        transaction — nothing of it was ever visible — and the batch runs
        again with a savepoint per job, so only that job's work is undone.
        """
        try:
            try:
                effects = self._execute(batch, isolate=False)
            except _JobFailed:
                effects = self._execute(batch, isolate=True)
        except sqlite3.Error as exc:
            # A SAVEPOINT, ROLLBACK or RELEASE itself failed (an I/O error, a
            # damaged page): nothing of this batch is committed, every job
            # gets the error, and the loop goes on with the next batch.
            if self.writer.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.writer.execute("ROLLBACK")
            return self._fail_all(batch, exc)
        # None: BEGIN or COMMIT failed and every job carries that error.
        return Committed() if effects is None else effects

    def _execute(self, batch: list[_Job], *, isolate: bool) -> Committed | None:
        conn = self.writer
        effects = Committed()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, exc)
            return None
        for job in batch:
            tx = Tx(conn, now_ms())
            if isolate:
                conn.execute("SAVEPOINT job")
            changes = conn.total_changes
            try:
                job.result = job.fn(tx, *job.args, **job.kwargs)
            except BaseException as exc:
                if not isolate and conn.total_changes == changes and conn.in_transaction:
                    # Failed before writing anything (a wrong token, a state
                    # conflict): nothing to undo, the batch goes on.
                    job.error = self._error(exc)
                    continue
                # A statement-level I/O error may already have rolled the whole
                # transaction back: roll back only what is still open.
                if not isolate:
                    self.reruns += 1
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise _JobFailed from None
                if not conn.in_transaction:
                    self._fail_all(batch, exc)
                    return None
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                job.error = self._error(exc)
                continue
            if isolate:
                conn.execute("RELEASE job")
            effects.merge(tx.effects)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._fail_all(batch, exc)
            return None
        return effects

    def _fail_all(self, batch: list[_Job], exc: BaseException) -> Committed:
        err = self._error(exc)  # logged once for the batch
        for job in batch:
            if job.error is None:
                job.result = None
                job.error = type(err)(err.message, dict(err.details))
        return Committed()

    def _run_read(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        # The limiter admits at most len(self.readers) reads: one is idle.
        conn = self._idle_readers.get_nowait()
        try:
            conn.execute("BEGIN")
            return fn(Tx(conn, now_ms()), *args, **kwargs)
        except AghError:
            raise
        except Exception as exc:
            raise self._error(exc, writing=False) from exc
        finally:
            # A read writes nothing: ending it can only release its snapshot.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._idle_readers.put(conn)

    def _error(self, exc: BaseException, *, writing: bool = True) -> AghError:
        """The wire error for what a job (or BEGIN/COMMIT) raised."""
        if isinstance(exc, AghError):
            return exc
        if isinstance(exc, sqlite3.Error):
            err = storage_error(exc, self.path, writing=writing)
            log.error("database error: %s", err.message)
            return err
        if isinstance(exc, OverflowError):
            # A value too big for SQLite that the params' bounds let through.
            return InvalidParams(
                f"a number in the request is out of range: {exc}",
                {"hint": "integers must lie between -2^63 and 2^63-1"},
            )
        log.error("store job failed", exc_info=exc)
        return InternalError.from_exception(exc)


class _JobFailed(Exception):
    """A job raised in a batch run without savepoints: re-run with them."""
