"""The retention loop: deletes the old history of closed tasks, as the
configuration says.

``event_retention_days`` and ``log_retention_days`` (0: keep forever, the
default) are read from the live ``Config`` at every pass, never cached:
a configuration reload takes effect at the next pass. A pass runs
``START_DELAY_S`` after start (clear of start-up and of agents
reconnecting), then every ``INTERVAL_S``. It deletes through the
committer's write path one window at a time (``aghd.store.retention``:
at most a few hundred rows per transaction, each in a group commit with
whatever else is being written), pausing between windows, so writers never
wait behind it for more than one short transaction. Which rows may go is
the store's rule; this module only decides when. Must not: write SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from agh.errors import AghError
from aghd.store import retention as retention_store
from aghd.store.db import now_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from aghd.config import Config
    from aghd.services import Store
    from aghd.store.db import Tx

log = logging.getLogger("aghd.retention")

# The first pass, this long after start; then one pass per interval.
START_DELAY_S = 30.0
INTERVAL_S = 3600.0
# Between two windows of one pass: lets other writes have the writer.
PAUSE_S = 0.005
DAY_MS = 86_400_000


@dataclass(slots=True)
class Pruned:
    """What one pass deleted."""

    events: int = 0
    logs: int = 0


async def prune(store: Store, config: Config) -> Pruned:
    """One pass: delete what the current settings let go. Raises what the
    store's writes raise (``Busy`` while the daemon shuts down, say)."""
    pruned = Pruned()
    now = now_ms()
    # Read each setting once per pass, at its use: a reload between the two
    # tables applies to the second at once.
    event_days = config.event_retention_days
    if event_days > 0:
        pruned.events = await _walk(store, retention_store.prune_events, now - event_days * DAY_MS)
    log_days = config.log_retention_days
    if log_days > 0:
        pruned.logs = await _walk(store, retention_store.prune_run_logs, now - log_days * DAY_MS)
    if pruned.events or pruned.logs:
        log.info(
            "retention: deleted %d events (older than %d days) and %d run log lines"
            " (older than %d days) of closed tasks",
            pruned.events,
            event_days,
            pruned.logs,
            log_days,
        )
    return pruned


async def _walk(
    store: Store, fn: Callable[[Tx, int, int], retention_store.Window], cutoff_ms: int
) -> int:
    deleted, after = 0, 0
    while True:
        window = await store.write(fn, cutoff_ms, after)
        deleted += window.deleted
        if window.done:
            return deleted
        after = window.cursor
        await anyio.sleep(PAUSE_S)


async def run(store: Store, config: Config) -> None:
    """Prune forever (inside the daemon's task group). A failed pass is
    logged and tried again at the next interval, never fatal."""
    await anyio.sleep(START_DELAY_S)
    while True:
        if config.event_retention_days > 0 or config.log_retention_days > 0:
            try:
                await prune(store, config)
            except AghError as exc:
                log.warning(
                    "retention pass failed: %s; next try in %.0f s", exc.message, INTERVAL_S
                )
            except Exception:
                # A bug here must not end the daemon: this runs in its task group.
                log.exception("retention pass failed; next try in %.0f s", INTERVAL_S)
        await anyio.sleep(INTERVAL_S)
