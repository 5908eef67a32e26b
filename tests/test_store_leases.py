"""Leases (``aghd.store.leases``) on a real SQLite file without the daemon,
on a clock the test moves: heartbeats, the fence on every call after the
claim, complete/fail/release and their replays, retries with backoff, and
the reaper's expiry. The socket-level view is in tests/test_leases.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agh.errors import Conflict, Forbidden, LeaseLost
from aghd.store import leases
from aghd.store.db import DAEMON
from aghd.store.models import Backoff
from tests.helpers.store import HUMAN, agent, claim, create, run, task, token

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from tests.helpers.store import StoreFile

BACKOFF = Backoff(1000, 3000)


def claimed(store: StoreFile, who: str = "a", lease_ms: int = 10_000) -> str:
    c = claim(store, who, lease_ms=lease_ms)
    assert c is not None
    return str(c.run["id"])


def events(store: StoreFile, run_id: str) -> list[str]:
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT event_type FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        )
    ]


def fail(store: StoreFile, run_id: str, who: str = "a", *, retry: bool = True) -> sqlite3.Row:
    return store(
        leases.fail_run, agent(who), run_id, token(who), "boom", retry=retry, backoff=BACKOFF
    )


def test_a_heartbeat_starts_the_run_and_extends_by_the_lease_it_was_given(
    store: StoreFile,
) -> None:
    create(store, "t")
    r = claimed(store, lease_ms=4000)
    store.advance(3000)
    beat = store(leases.heartbeat, agent("a"), r, token("a"), None)
    assert beat["status"] == "running" and beat["started_at"] == store.now
    assert beat["lease_until"] == store.now + 4000  # the claim's length again
    store.advance(1000)
    beat = store(leases.heartbeat, agent("a"), r, token("a"), 20_000)
    assert beat["lease_until"] == store.now + 20_000
    store.advance(1000)
    beat = store(leases.heartbeat, agent("a"), r, token("a"), None)
    assert beat["lease_until"] == store.now + 20_000  # the latest length
    assert events(store, r).count("run.running") == 1


def test_a_wrong_token_is_forbidden_and_writes_nothing(store: StoreFile) -> None:
    create(store, "t")
    r = claimed(store)
    before = run(store, r)
    calls: list[Callable[[], object]] = [
        lambda: store(leases.heartbeat, agent("x"), r, token("x"), None),
        lambda: store(leases.complete_run, agent("x"), r, token("x"), {"stolen": True}),
        lambda: fail(store, r, "x"),
        lambda: store(leases.release_run, agent("x"), r, token("x"), None),
    ]
    for call in calls:
        with pytest.raises(Forbidden):
            call()
    assert tuple(run(store, r)) == tuple(before)


def test_a_lease_past_its_end_is_lost_before_the_reaper_runs(store: StoreFile) -> None:
    create(store, "t")
    r = claimed(store, lease_ms=5000)
    store.advance(5000)
    with pytest.raises(LeaseLost) as lost:
        store(leases.complete_run, agent("a"), r, token("a"), None)
    assert lost.value.details["reason"] == "expired"
    assert run(store, r)["status"] == "claimed"  # the reaper's to handle


def test_completing_twice_with_the_same_token_is_one_completion(store: StoreFile) -> None:
    t = create(store, "t")
    r = claimed(store)
    first = store(leases.complete_run, agent("a"), r, token("a"), {"n": 1})
    again = store(leases.complete_run, agent("a"), r, token("a"), {"n": 2})
    assert tuple(again) == tuple(first)
    assert run(store, r)["result"] == '{"n":1}'
    assert events(store, r).count("run.completed") == 1
    assert task(store, t)["status"] == "completed"
    # Other finishes after it are refused, the run stays completed.
    with pytest.raises(LeaseLost):
        fail(store, r)
    with pytest.raises(LeaseLost):
        store(leases.heartbeat, agent("a"), r, token("a"), None)


def test_a_stale_token_cannot_touch_the_next_claim(store: StoreFile) -> None:
    create(store, "t", max_attempts=3)
    r = claimed(store, "old", lease_ms=1000)
    store.advance(1000)
    assert store(leases.expire_leases, DAEMON) == 1
    assert claimed(store, "new") == r
    calls: list[Callable[[], object]] = [
        lambda: store(leases.complete_run, agent("old"), r, token("old"), None),
        lambda: store(leases.heartbeat, agent("old"), r, token("old"), None),
        lambda: fail(store, r, "old"),
    ]
    for call in calls:
        with pytest.raises(LeaseLost) as lost:
            call()
        assert lost.value.details["reason"] == "expired"
    assert run(store, r)["claim_token_hash"] == token("new")


def test_failing_retries_after_a_doubling_capped_backoff_then_fails_the_task(
    store: StoreFile,
) -> None:
    t = create(store, "t", max_attempts=4)
    delays = []
    for who in ("a1", "a2", "a3"):
        r = claimed(store, who)
        requeued = fail(store, r, who)
        assert requeued["status"] == "queued" and requeued["error"] == "boom"
        delays.append(requeued["available_at"] - store.now)
        assert task(store, t)["status"] == "ready"
        assert claim(store, "early") is None  # still backing off
        store.advance(delays[-1])
    assert delays == [1000, 2000, 3000]  # base, doubled, capped
    r = claimed(store, "a4")
    final = fail(store, r, "a4")  # the last attempt: retry cannot requeue
    assert (final["status"], final["attempt"]) == ("failed", 4)
    assert task(store, t)["status"] == "failed"
    assert events(store, r).count("run.retry_scheduled") == 3


def test_fail_without_retry_is_final_at_once(store: StoreFile) -> None:
    t = create(store, "t", max_attempts=5)
    r = claimed(store)
    assert fail(store, r, retry=False)["status"] == "failed"
    assert task(store, t)["status"] == "failed"


def test_a_release_gives_the_run_back_without_spending_an_attempt(store: StoreFile) -> None:
    create(store, "t", max_attempts=1)
    r = claimed(store, "a")
    queued_at = run(store, r)["queued_at"]
    store.advance(500)
    released = store(leases.release_run, agent("a"), r, token("a"), "not mine")
    assert (released["status"], released["attempt"]) == ("queued", 0)
    assert released["queued_at"] == queued_at  # its place in line
    again = claim(store, "b")
    assert again is not None and again.run["attempt"] == 1
    with pytest.raises(LeaseLost) as lost:
        store(leases.heartbeat, agent("a"), r, token("a"), None)
    assert lost.value.details["reason"] == "released"


def test_the_reaper_requeues_while_attempts_remain_then_fails_as_a_forced_stop(
    store: StoreFile,
) -> None:
    t = create(store, "t", max_attempts=2)
    r = claimed(store, "a", lease_ms=2000)
    assert store(leases.next_deadline, store.now) == store.now + 2000
    store.advance(1999)
    assert store(leases.expire_leases, DAEMON) == 0
    store.advance(1)
    assert store(leases.expire_leases, DAEMON) == 1
    after = run(store, r)
    assert (after["status"], after["error"], after["lease_until"]) == (
        "queued",
        "lease expired",
        None,
    )
    assert store(leases.next_deadline, store.now) is None
    claimed(store, "b", lease_ms=2000)
    store.advance(2000)
    assert store(leases.expire_leases, DAEMON) == 1
    assert run(store, r)["status"] == "failed"
    done = task(store, t)
    assert (done["status"], done["closed_reason"], done["runs_forced"]) == (
        "failed",
        "lease expired",
        1,
    )
    assert events(store, r).count("run.lease_expired") == 2


def test_an_operator_finish_ends_the_agents_claim_with_its_own_reason(store: StoreFile) -> None:
    create(store, "t")
    r = claimed(store)
    store(leases.complete_run, HUMAN, r, None, {"by": "operator"})
    with pytest.raises(LeaseLost) as lost:
        store(leases.complete_run, agent("a"), r, token("a"), None)
    assert lost.value.details["reason"] == "completed_by_operator"
    with pytest.raises(Conflict):
        store(leases.complete_run, HUMAN, r, None, None)
