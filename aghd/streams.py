"""Live event streams (PROTOCOL §7): subscriptions and their delivery.

Every subscription is a cursor into the event log, pumped by its own task:
read the committed events after the cursor (one read transaction), send
them, advance, and sleep until the next commit. Replay and live delivery
are the same loop, so the hand-over has no gap and no duplicate by
construction, and a notification can only follow a commit (the reader sees
nothing else). The daemon holds no per-subscriber queue: what a slow reader
has not taken sits in its socket's write buffer, and once that passes a
limit the subscription is dropped with a final ``overflow`` notification —
the subscriber resubscribes from its last sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from agh import protocol as p
from agh.errors import AghError, InternalError, NotFound
from aghd import views
from aghd.committer import read_gate
from aghd.store import events as events_store
from aghd.store.db import Tx, new_id

if TYPE_CHECKING:
    from collections.abc import Callable

    from aghd.rpc import ConnectionState
    from aghd.services import Store

log = logging.getLogger("aghd.streams")

_BATCH = 256
# Notifications subject to the backlog limit; "overflow" and "error" are
# final and always go out.
_DROPPABLE = ("timeline", "keepalive")


@dataclass(eq=False, slots=True)
class Subscription:
    id: str
    conn: ConnectionState
    filters: events_store.StreamFilter
    cursor: int
    wake: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    # Set once the reply carrying the subscription id is written.
    replied: anyio.Event = field(default_factory=anyio.Event)


def _read_batch(
    tx: Tx, filters: events_store.StreamFilter, after: int
) -> tuple[list[events_store.TimelineEntry], int, events_store.StreamFilter]:
    batch = events_store.stream_batch(tx, filters, after, _BATCH)
    return events_store.timeline_entries(tx, batch.events), batch.cursor, batch.filters


class Hub:
    """The daemon's subscriptions; ``run`` hosts their pump tasks."""

    def __init__(self, store: Store, keepalive_s: float, max_backlog: int) -> None:
        self._read = store.read
        self.keepalive_s = keepalive_s
        self.max_backlog = max_backlog
        self.subs: dict[str, Subscription] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await anyio.sleep_forever()

    def committed(self) -> None:
        """New events are durable: wake every pump (each reads what it wants)."""
        for sub in self.subs.values():
            sub.wake.set()

    def subscribe(
        self,
        conn: ConnectionState,
        filters: events_store.StreamFilter,
        after: int,
        after_reply: list[Callable[[], None]],
    ) -> Subscription:
        """Start streaming to ``conn`` once the reply naming the subscription
        is written (``after_reply``: the calling request's Context's)."""
        if self._tg is None:  # pragma: no cover - run() starts with the server
            raise RuntimeError("stream hub is not running")
        sub = Subscription(new_id("sub"), conn, filters, after)
        after_reply.append(sub.replied.set)
        self.subs[sub.id] = sub
        conn.subscriptions.add(sub.id)
        self._tg.start_soon(self._pump, sub)
        return sub

    def cancel(self, conn: ConnectionState, sub_id: str) -> None:
        sub = self.subs.get(sub_id)
        if sub is None or sub.conn is not conn:
            raise NotFound(
                f"subscription {sub_id} not found on this connection",
                {
                    "subscription": sub_id,
                    "hint": "subscriptions belong to the connection that made them",
                },
            )
        self._end(sub)

    def connection_gone(self, conn: ConnectionState) -> None:
        for sub in [s for s in self.subs.values() if s.conn is conn]:
            self._end(sub)

    def _end(self, sub: Subscription) -> None:
        self._forget(sub)
        sub.scope.cancel()

    def _forget(self, sub: Subscription) -> None:
        self.subs.pop(sub.id, None)
        sub.conn.subscriptions.discard(sub.id)

    # -- delivery ------------------------------------------------------------------

    def _send(self, sub: Subscription, event: p.StreamEvent) -> bool:
        """Write one notification; False once the subscriber is gone or
        dropped for falling too far behind."""
        conn = sub.conn
        if conn.closed.is_set() or conn.write is None or conn.backlog is None:
            return False
        if event.type in _DROPPABLE and conn.backlog() > self.max_backlog:
            log.info("subscription %s overflowed at sequence %d; dropped", sub.id, sub.cursor)
            self._send(
                sub, p.StreamEvent(subscription=sub.id, type="overflow", sequence=sub.cursor)
            )
            return False
        conn.write(
            p.encoder.encode({"jsonrpc": "2.0", "method": "stream.event", "params": event}) + b"\n"
        )
        return True

    async def _pump(self, sub: Subscription) -> None:
        # This task inherited the subscribing request's context: its reads
        # are paced by the overflow rule, not by that request's read gate.
        read_gate.set(None)
        with sub.scope:
            try:
                await sub.replied.wait()
                await self._deliver(sub)
            except Exception as exc:
                # Whatever goes wrong inside one subscription (an unreadable
                # page of the events table, a value SQLite cannot bind, a bug)
                # ends that subscription, with a last notification saying why,
                # and never the daemon: this task runs in the daemon's group.
                err = exc if isinstance(exc, AghError) else InternalError.from_exception(exc)
                log.error("subscription %s ended at sequence %d: %s", sub.id, sub.cursor, err)
                final = p.StreamEvent(
                    subscription=sub.id, type="error", sequence=sub.cursor, error=err.to_wire()
                )
                self._send(sub, final)
            finally:
                self._forget(sub)

    async def _deliver(self, sub: Subscription) -> None:
        read = self._read
        last_sent = anyio.current_time()
        while True:
            # A fresh event before reading: a commit during the read wakes
            # the wait below at once.
            sub.wake = anyio.Event()
            entries, cursor, sub.filters = await read(_read_batch, sub.filters, sub.cursor)
            for entry in entries:
                item = views.timeline_item(entry)
                logs = None if entry.logs is None else [views.run_log(r) for r in entry.logs]
                notification = p.StreamEvent(
                    subscription=sub.id,
                    type="timeline",
                    sequence=item.sequence,
                    timeline=item,
                    logs=logs,
                )
                if not self._send(sub, notification):
                    return
                sub.cursor = item.sequence
                last_sent = anyio.current_time()
            sub.cursor = max(sub.cursor, cursor)
            if len(entries) == _BATCH:
                continue  # more to replay; the read above let other tasks run
            # Keepalives go to this subscriber after keepalive_s without a
            # notification, however busy the rest of the daemon is.
            quiet_for = anyio.current_time() - last_sent
            with anyio.move_on_after(max(0.0, self.keepalive_s - quiet_for)):
                await sub.wake.wait()
            if anyio.current_time() - last_sent >= self.keepalive_s:
                keepalive = p.StreamEvent(
                    subscription=sub.id, type="keepalive", sequence=sub.cursor
                )
                if not self._send(sub, keepalive):
                    return
                last_sent = anyio.current_time()
