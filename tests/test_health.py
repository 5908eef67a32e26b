"""The dashboard's health rules (``aghd.health``), each verdict at its edges,
as agh-protocol(7) states them."""

from __future__ import annotations

import pytest

from aghd import health


@pytest.mark.parametrize(
    ("stuck", "orphaned", "verdict"),
    [
        (False, False, "ok"),
        (True, False, "warning"),
        (False, True, "warning"),
        (True, True, "critical"),
    ],
)
def test_an_active_run(stuck: bool, orphaned: bool, verdict: str) -> None:
    assert health.run_health(stuck, orphaned) == verdict


@pytest.mark.parametrize(
    ("age_ms", "verdict"),
    [
        (None, "ok"),
        (0, "ok"),
        (300_000, "ok"),
        (300_001, "warning"),
        (1_200_000, "warning"),
        (1_200_001, "critical"),
    ],
)
def test_the_queue_by_its_oldest_run(age_ms: int | None, verdict: str) -> None:
    assert health.queue_health(age_ms, 300_000) == verdict


@pytest.mark.parametrize(
    ("active", "troubled", "verdict"),
    [(0, 0, "ok"), (3, 0, "ok"), (3, 1, "warning"), (3, 3, "critical"), (1, 1, "critical")],
)
def test_the_active_runs(active: int, troubled: int, verdict: str) -> None:
    assert health.in_progress_health(active, troubled) == verdict


def test_people_waiting_and_freshness_are_warnings_at_most() -> None:
    assert health.blocked_health(0) == "ok" and health.blocked_health(2) == "warning"
    assert health.failed_health(0) == "ok" and health.failed_health(1) == "warning"
    assert health.freshness_health(False) == "ok" and health.freshness_health(True) == "warning"


def test_the_overall_health_is_the_worst_part() -> None:
    assert health.worst() == "ok"
    assert health.worst("ok", "warning", "ok") == "warning"
    assert health.worst("warning", "critical", "ok") == "critical"


def test_the_default_thresholds_are_the_documented_ones() -> None:
    t = health.Thresholds()
    assert (t.stuck_after_ms, t.backlog_threshold_ms, t.stale_after_ms) == (
        600_000,
        300_000,
        600_000,
    )
    assert health.BACKLOG_CRITICAL_FACTOR == 4
