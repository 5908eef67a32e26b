"""Time-driven work: the lease reaper and waking claimers when delayed runs
come due.

Sleeps until the earliest known deadline (an index lookup, not a scan), so
it acts within milliseconds of a lease running out; a commit that creates an
earlier deadline pokes it awake. ``max_sleep`` is only a safety net.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from agh.errors import AghError
from aghd.store import leases
from aghd.store.db import DAEMON, now_ms

if TYPE_CHECKING:
    from aghd.services import Store

log = logging.getLogger("aghd.scheduler")

_RETRY_S = 1.0


class WorkSignal:
    """Wakes every long-polling claimer when a run may have become claimable."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def current(self) -> anyio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, anyio.Event()
        event.set()


class Scheduler:
    def __init__(self, store: Store, work: WorkSignal, max_sleep_s: float) -> None:
        self._store = store
        self._work = work
        self._max_sleep_ms = int(max_sleep_s * 1000)
        self._poke = anyio.Event()
        # When the current sleep ends; None while awake (between reading the
        # next deadline and going to sleep, any new deadline must re-read).
        self._planned: int | None = None
        # Delayed runs due up to this time have been announced to claimers.
        # Asking for runs due *after it* (not after "now") means a run whose
        # due time passed between two looks is still found, and announced.
        self._announced = now_ms()
        self.expired_total = 0

    def consider(self, deadline_ms: int) -> None:
        """A commit created ``deadline_ms``; wake up if it is earlier than planned."""
        if self._planned is None or deadline_ms < self._planned:
            self._poke.set()

    async def run(self) -> None:
        """Loop forever; a failed read or write (database locked by another
        program, disk full) is logged and retried, never fatal."""
        while True:
            try:
                await self._step()
            except AghError as exc:
                log.error("scheduler: %s; retrying in %.0f s", exc.message, _RETRY_S)
                await anyio.sleep(_RETRY_S)
            except Exception:
                # A bug here must not end the daemon (this runs in its task
                # group): log it and keep reaping.
                log.exception("scheduler step failed; retrying in %.0f s", _RETRY_S)
                await anyio.sleep(_RETRY_S)

    async def _step(self) -> None:
        while True:
            self._poke = anyio.Event()
            deadline = await self._store.read(leases.next_deadline, self._announced)
            now = now_ms()
            if deadline is not None and deadline <= now:
                await self._tick(now)
                continue
            wake_at = now + self._max_sleep_ms
            if deadline is not None:
                wake_at = min(wake_at, deadline)
            self._planned = wake_at
            with anyio.move_on_after((wake_at - now) / 1000):
                await self._poke.wait()
            self._planned = None

    async def _tick(self, now: int) -> None:
        self.expired_total += await self._store.write(leases.expire_leases, DAEMON)
        # Requeued runs, and delayed runs that came due, are claimable now.
        self._announced = now
        self._work.notify()
