"""The dashboard's health rules, as pure functions of the figures.

``observe.dashboard`` judges each part of the hub ``ok``, ``warning`` or
``critical`` by these rules; agh-protocol(7) (observe.dashboard) states
them for users, and ``tests/test_health.py`` checks each. Owns: the
verdicts and their thresholds. Must not: read the database
(``aghd.store.observe`` computes the figures it is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# The defaults of the daemon settings the rules read.
from agh.settings import (
    BACKLOG_THRESHOLD_MS,
    LATENCY_WINDOW_MS,
    STALE_AFTER_MS,
    STUCK_AFTER_MS,
)

if TYPE_CHECKING:
    from agh.protocol.enums import HealthStatus

_SEVERITY: dict[HealthStatus, int] = {"ok": 0, "warning": 1, "critical": 2}
# A queue backlog is critical past this many times the warning threshold.
BACKLOG_CRITICAL_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The daemon settings the rules read (milliseconds)."""

    stuck_after_ms: int = STUCK_AFTER_MS
    backlog_threshold_ms: int = BACKLOG_THRESHOLD_MS
    stale_after_ms: int = STALE_AFTER_MS
    latency_window_ms: int = LATENCY_WINDOW_MS


def worst(*statuses: HealthStatus) -> HealthStatus:
    """The most severe of ``statuses`` (``ok`` for none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default="ok")


def run_health(stuck: bool, orphaned: bool) -> HealthStatus:
    """An active run: stuck (no sign of life from its agent) or orphaned
    (its session disconnected) is a warning; both, nobody works on it."""
    if stuck and orphaned:
        return "critical"
    return "warning" if stuck or orphaned else "ok"


def queue_health(oldest_age_ms: int | None, threshold_ms: int) -> HealthStatus:
    """The queue, by how long its oldest run has waited."""
    if oldest_age_ms is None or oldest_age_ms <= threshold_ms:
        return "ok"
    return "critical" if oldest_age_ms > BACKLOG_CRITICAL_FACTOR * threshold_ms else "warning"


def in_progress_health(active: int, troubled: int) -> HealthStatus:
    """The active runs: some stuck or orphaned is a warning, all of them critical."""
    if troubled == 0:
        return "ok"
    return "critical" if troubled >= active else "warning"


def blocked_health(awaiting_approval: int) -> HealthStatus:
    """A task awaiting approval waits on a person: a warning."""
    return "warning" if awaiting_approval else "ok"


def failed_health(failed_tasks: int) -> HealthStatus:
    return "warning" if failed_tasks else "ok"


def freshness_health(stale: bool) -> HealthStatus:
    """Live work but nothing happened for stale_after_ms: a warning."""
    return "warning" if stale else "ok"
