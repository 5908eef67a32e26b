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
import logging
import queue
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from agh.errors import AghError, Busy, InternalError
from aghd.store.db import Committed, Tx, now_ms, open_connection

log = logging.getLogger("aghd.committer")

T = TypeVar("T")


class _Job:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
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
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.writer: sqlite3.Connection = open_connection(path, synchronous)
        # Reads run side by side on their own connections (WAL snapshots), so
        # a long one (a dashboard of a big hub) does not hold up the short
        # ones and the stream pumps behind it.
        self.readers = [open_connection(path, synchronous) for _ in range(readers)]
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
        self._closing = False
        self.batches = 0
        self.jobs = 0
        self.reruns = 0  # batches re-run with savepoints after a job failed mid-write

    # -- public API -------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tx, *args)`` in the next group commit; return after COMMIT.

        Raises whatever ``fn`` raised (its work rolled back), ``Busy`` while
        shutting down, ``InternalError`` if the commit itself failed.
        """
        if self._closing:
            raise Busy("aghd is shutting down; retry against the restarted daemon")
        job = _Job(fn, args)
        job.done = done = asyncio.get_running_loop().create_future()
        self._pending.append(job)
        self._wake.set()
        await done
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(tx, *args)`` on the read connection (no write allowed)."""
        return await anyio.to_thread.run_sync(
            self._run_read, fn, args, limiter=self._read_limiter, abandon_on_cancel=False
        )

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one job in its own transaction on the calling thread.

        For start-up and shutdown, before/after the batch loop runs.
        """
        job = _Job(fn, args)
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

    def shutdown(self) -> None:
        """Checkpoint and close both connections (after ``run()`` returned)."""
        try:
            self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.warning("WAL checkpoint at shutdown failed", exc_info=True)
        for conn in self.readers:
            conn.close()
        self.writer.close()

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
            effects = self._execute(batch, isolate=False)
        except _JobFailed:
            effects = self._execute(batch, isolate=True)
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
                job.result = job.fn(tx, *job.args)
            except BaseException as exc:
                if not isolate and conn.total_changes == changes and conn.in_transaction:
                    # Failed before writing anything (a wrong token, a state
                    # conflict): nothing to undo, the batch goes on.
                    job.error = exc if isinstance(exc, AghError) else _internal(exc)
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
                job.error = exc if isinstance(exc, AghError) else _internal(exc)
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
        log.error("commit failed: %s", exc)
        for job in batch:
            if job.error is None:
                job.result = None
                job.error = _write_failed(exc)
        return Committed()

    def _run_read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # The limiter admits at most len(self.readers) reads: one is idle.
        conn = self._idle_readers.get_nowait()
        try:
            conn.execute("BEGIN")
            try:
                return fn(Tx(conn, now_ms()), *args)
            except AghError:
                raise
            except Exception as exc:
                raise _internal(exc) from exc
            finally:
                conn.execute("COMMIT")
        finally:
            self._idle_readers.put(conn)


class _JobFailed(Exception):
    """A job raised in a batch run without savepoints: re-run with them."""


def _internal(exc: BaseException) -> AghError:
    if isinstance(exc, sqlite3.OperationalError):
        # Disk full, I/O error, database locked by another program: not a bug.
        log.error("database error: %s", exc)
        return _write_failed(exc)
    log.error("store job failed", exc_info=exc)
    return InternalError.from_exception(exc)


def _write_failed(exc: BaseException) -> InternalError:
    return InternalError(
        f"the database write failed and was not saved: {exc}; "
        "check disk space and permissions of the database, then retry",
        {"error": str(exc)},
    )
