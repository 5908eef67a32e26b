"""Claiming (``aghd.store.claims``) on a real SQLite file without the
daemon: which run claim-next picks, what filters and session capacity
allow, one live claim per run, and an idempotent claim's replay. The same
rules under 16 concurrent agents over the socket are in
tests/test_concurrency.py and tests/test_idempotency.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agh.errors import Conflict, LeaseLost, NotFound
from aghd.store import claims, leases
from aghd.store.models import Backoff, ClaimFilters
from tests.helpers.store import agent, claim, create, hello, run, run_of, task, token

if TYPE_CHECKING:
    from tests.helpers.store import StoreFile


def claimed_title(store: StoreFile, who: str, filters: ClaimFilters | None = None) -> str | None:
    c = claim(store, who, filters=filters)
    return None if c is None else str(c.task["title"])


def test_claim_next_takes_the_highest_priority_then_the_oldest(store: StoreFile) -> None:
    for title, priority in (
        ("low", "low"),
        ("high, older", "high"),
        ("medium", "medium"),
        ("high, newer", "high"),
        ("urgent", "urgent"),
    ):
        create(store, title, priority=priority)
        store.advance(1)
    order = [claimed_title(store, f"agent{i}") for i in range(6)]
    assert order == ["urgent", "high, older", "high, newer", "medium", "low", None]


def test_the_queue_time_decides_and_the_id_only_breaks_ties(store: StoreFile) -> None:
    store.advance(1000)
    create(store, "queued later")
    store.advance(-500)  # the clock the store is given, not the ids' own
    create(store, "queued earlier, newer id")
    create(store, "same time, newest id")
    store.advance(500)  # all three are due
    order = [claimed_title(store, f"agent{i}") for i in range(3)]
    assert order == ["queued earlier, newer id", "same time, newest id", "queued later"]


def test_a_claim_moves_run_and_task_and_records_who_and_until_when(store: StoreFile) -> None:
    t = create(store, "work")
    c = claim(store, "alice", lease_ms=30_000)
    assert c is not None
    r = run(store, run_of(store, t))
    assert (r["status"], r["attempt"], r["claimed_by_ref"]) == ("claimed", 1, "alice")
    assert r["lease_until"] == store.now + 30_000
    assert r["claim_token_hash"] == token("alice")
    assert task(store, t)["status"] == "in_progress"
    assert store.value("SELECT count(*) FROM claims WHERE run_id = ? AND ended_at IS NULL", r["id"])
    assert store.value("SELECT event_type FROM events ORDER BY seq DESC") == "run.claimed"


def test_a_claimed_run_is_not_claimed_again(store: StoreFile) -> None:
    t = create(store, "only one")
    assert claim(store, "a") is not None
    assert claim(store, "b") is None
    with pytest.raises(Conflict) as refused:
        store(
            claims.claim_run,
            agent("b"),
            run_of(store, t),
            session_id=None,
            lease_ms=1000,
            token_hash=token("b"),
            idempotency_key=None,
            max_claims_per_session=0,
        )
    assert refused.value.details["status"] == "claimed"
    # The refusal wrote nothing: still a's claim, and one claim row.
    assert run(store, run_of(store, t))["claim_token_hash"] == token("a")
    assert store.value("SELECT count(*) FROM claims") == 1


def test_a_retried_run_waits_out_its_backoff_then_keeps_its_place(store: StoreFile) -> None:
    first = create(store, "first", max_attempts=2)
    store.advance(10)
    c = claim(store, "a")
    assert c is not None
    store(
        leases.fail_run,
        agent("a"),
        c.run["id"],
        token("a"),
        "flaky",
        retry=True,
        backoff=Backoff(5000, 60_000),
    )
    create(store, "second")  # queued after the first
    assert claimed_title(store, "b") == "second"  # first is backing off
    store(leases.release_run, agent("b"), run_of(store, task_second(store)), token("b"), None)
    store.advance(4_999)
    assert claimed_title(store, "c") == "second"
    store(leases.release_run, agent("c"), run_of(store, task_second(store)), token("c"), None)
    store.advance(1)
    # Due now, and queued before "second": it goes first again.
    assert claimed_title(store, "d") == "first"
    assert run(store, run_of(store, first))["attempt"] == 2


def task_second(store: StoreFile) -> str:
    return str(store.value("SELECT id FROM tasks WHERE title = 'second'"))


def test_filters_pick_only_matching_runs(store: StoreFile) -> None:
    create(store, "cpu work", network_channel="cpu")
    create(store, "gpu work", network_channel="gpu", scope="team-a")
    assert claimed_title(store, "x", filters=ClaimFilters(network_channel="tpu")) is None
    assert claimed_title(store, "x", filters=ClaimFilters(workspace="/nowhere")) is None
    assert claimed_title(store, "x", filters=ClaimFilters(scope="team-b")) is None
    assert claimed_title(store, "x", filters=ClaimFilters(scope="team-a")) == "gpu work"
    assert claimed_title(store, "y", filters=ClaimFilters(network_channel="cpu")) == "cpu work"


def test_a_session_holds_at_most_its_capacity(store: StoreFile) -> None:
    hello(store, "ses_one")
    for i in range(3):
        create(store, f"t{i}")
    first = claim(store, "a", session_id="ses_one", max_claims=1)
    assert first is not None
    with pytest.raises(Conflict) as refused:
        claim(store, "a2", session_id="ses_one", max_claims=1)
    assert refused.value.details["held_run_ids"] == [first.run["id"]]
    assert "complete, fail or release it" in refused.value.message
    # Another session, and no limit (0), are not held back.
    hello(store, "ses_two")
    assert claim(store, "b", session_id="ses_two", max_claims=1) is not None
    # Finishing the held run frees the slot.
    store(leases.complete_run, agent("a"), first.run["id"], token("a"), None)
    assert claim(store, "a3", session_id="ses_one", max_claims=1) is not None


def test_an_unknown_named_session_is_not_found(store: StoreFile) -> None:
    create(store, "t")
    with pytest.raises(NotFound):
        store(
            claims.claim_next_run,
            agent("a"),
            session_id="ses_missing",
            filters=ClaimFilters(),
            lease_ms=1000,
            token_hash=token("a"),
            idempotency_key=None,
            max_claims_per_session=0,
            require_session=True,
        )
    assert run(store, run_of(store, store.value("SELECT id FROM tasks")))["status"] == "queued"


def test_an_idempotent_claim_retried_returns_the_same_run_under_a_new_token(
    store: StoreFile,
) -> None:
    create(store, "t1")
    create(store, "t2")
    first = claim(store, "try1", key="k")
    assert first is not None
    # The retry (its reply was lost) must not claim a second run.
    again = store(
        claims.claim_next_run,
        agent("try1"),
        session_id=None,
        filters=ClaimFilters(),
        lease_ms=60_000,
        token_hash=token("try2"),
        idempotency_key="k",
        max_claims_per_session=0,
    )
    assert again is not None and again.run["id"] == first.run["id"]
    assert again.run["claim_token_hash"] == token("try2")
    assert store.value("SELECT count(*) FROM runs WHERE status = 'claimed'") == 1
    # The first token was replaced: fenced out, saying why.
    with pytest.raises(LeaseLost) as lost:
        store(leases.heartbeat, agent("try1"), first.run["id"], token("try1"), None)
    assert lost.value.details["reason"] == "replaced"
    # Once that claim ended, the key cannot hand it out again.
    store(leases.complete_run, agent("try1"), first.run["id"], token("try2"), None)
    with pytest.raises(LeaseLost) as ended:
        claim(store, "try1", key="k")
    assert ended.value.details["end_reason"] == "completed"
