"""A finish and the next claim in one transaction (``aghd.store.cycle``),
on a real SQLite file without the daemon. Through the socket, and under 16
agents: tests/test_cycle.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agh.errors import Forbidden
from aghd.store import cycle, leases
from aghd.store.models import ClaimFilters, NextClaim
from tests.helpers.store import agent, claim, create, hello, run, run_of, token

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from aghd.store.db import Tx
    from tests.helpers.store import StoreFile


def wanting(who: str, max_claims: int = 0) -> NextClaim:
    return NextClaim(ClaimFilters(), 60_000, token(who), max_claims)


def complete(who: str, run_id: str) -> Callable[[Tx], sqlite3.Row]:
    def finish(tx: Tx) -> sqlite3.Row:
        return leases.complete_run(tx, agent(who), run_id, token(who), None)

    return finish


def test_the_next_claim_is_for_the_finished_claims_session(store: StoreFile) -> None:
    hello(store, "ses_worker")
    create(store, "a")
    create(store, "b")
    got = claim(store, "w1", session_id="ses_worker")
    assert got is not None
    r = got.run["id"]
    # The caller finishing is a plain agent; the run was claimed for a session.
    row, nxt = store(
        cycle.finish_and_claim, complete("w1", r), agent("w1"), r, token("w1"), wanting("w2")
    )
    assert row["status"] == "completed"
    assert nxt is not None and nxt.run["session_id"] == "ses_worker"
    assert nxt.run["claimed_by_kind"] == "agent_session"
    assert nxt.run["claimed_by_ref"] == "ses_worker"
    assert store.value("SELECT next_claim_id FROM claims WHERE run_id = ?", r) == nxt.claim_id


def test_a_failing_finish_undoes_the_claim_with_it(store: StoreFile) -> None:
    create(store, "a")
    create(store, "b")
    got = claim(store, "w1")
    assert got is not None
    with pytest.raises(Forbidden):
        store(
            cycle.finish_and_claim,
            complete("intruder", got.run["id"]),
            agent("intruder"),
            got.run["id"],
            token("intruder"),
            wanting("w2"),
        )
    assert store.value("SELECT count(*) FROM runs WHERE status = 'claimed'") == 1
    assert store.value("SELECT count(*) FROM claims") == 1


def test_a_retry_reissues_the_same_next_claim_while_it_lives(store: StoreFile) -> None:
    for t in "abc":
        create(store, t)
    got = claim(store, "w1")
    assert got is not None
    r = got.run["id"]
    _, first = store(
        cycle.finish_and_claim, complete("w1", r), agent("w1"), r, token("w1"), wanting("n1")
    )
    assert first is not None
    # The same finish again (its reply lost), with a new token for next.
    _, again = store(
        cycle.finish_and_claim, complete("w1", r), agent("w1"), r, token("w1"), wanting("n2")
    )
    assert again is not None and again.run["id"] == first.run["id"]
    assert again.claim_id == first.claim_id
    assert run(store, again.run["id"])["claim_token_hash"] == token("n2")
    assert store.value("SELECT count(*) FROM runs WHERE status = 'claimed'") == 1
    # Once that next claim has ended, a retry claims afresh.
    store(leases.complete_run, agent("n2"), again.run["id"], token("n2"), None)
    fresh = store(cycle.claim_after, agent("w1"), r, token("w1"), wanting("n3"))
    assert fresh is not None and fresh.run["id"] not in (r, again.run["id"])


def test_a_release_never_gets_the_same_run_back(store: StoreFile) -> None:
    t = create(store, "only")
    got = claim(store, "w1")
    assert got is not None
    r = got.run["id"]

    def release(tx: Tx) -> sqlite3.Row:
        return leases.release_run(tx, agent("w1"), r, token("w1"), None)

    row, nxt = store(
        cycle.finish_and_claim, release, agent("w1"), r, token("w1"), wanting("w2"), released=True
    )
    assert row["status"] == "queued" and nxt is None
    assert run(store, run_of(store, t))["status"] == "queued"
    # Not excluded for anyone else.
    assert claim(store, "other") is not None


def test_a_session_still_at_its_limit_gets_no_next_claim_but_the_finish_stands(
    store: StoreFile,
) -> None:
    hello(store, "ses_busy")
    for t in "abc":
        create(store, t)
    first = claim(store, "w1", session_id="ses_busy")
    second = claim(store, "w2", session_id="ses_busy")
    assert first is not None and second is not None
    r = first.run["id"]
    row, nxt = store(
        cycle.finish_and_claim, complete("w1", r), agent("w1"), r, token("w1"), wanting("w3", 1)
    )
    assert row["status"] == "completed"
    assert nxt is None  # still holds the second run, and the limit is 1
    assert store.value("SELECT count(*) FROM runs WHERE status = 'queued'") == 1
