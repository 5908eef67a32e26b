"""One round trip per cycle (PROTOCOL §6): after a finish (complete, fail
or release), the next claim for the same session, in the finish's own
transaction.

Owns: who the next claim is for (the finished claim's session, else the
caller), keeping the run just released out of it, and the link from the
finished claim to the next one (``claims.next_claim_id``), through which a
retried finish (its reply was lost) hands out the same next claim again
under a fresh token instead of claiming a second run. Must not: decide a
finish (``leases``) or which run comes next (``claims``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agh.errors import Conflict
from aghd.store.claims import claim_next_run, reissue

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from aghd.store.db import Caller, Tx
    from aghd.store.models import Claimed, NextClaim


def finish_and_claim(
    tx: Tx,
    finish: Callable[[Tx], sqlite3.Row],
    caller: Caller,
    run_id: str,
    token_hash: str,
    next_claim: NextClaim,
    *,
    released: bool = False,
) -> tuple[sqlite3.Row, Claimed | None]:
    """``finish(tx)`` (a fenced complete, fail or release of ``run_id``),
    then ``claim_after`` in the same transaction. A finish that raises
    claims nothing: the transaction is undone with it."""
    row = finish(tx)
    return row, claim_after(tx, caller, run_id, token_hash, next_claim, released=released)


def claim_after(
    tx: Tx,
    caller: Caller,
    run_id: str,
    token_hash: str,
    next_claim: NextClaim,
    *,
    released: bool = False,
) -> Claimed | None:
    """The next claim after ``run_id``'s claim (held by ``token_hash``) was
    finished, in this transaction or an earlier one (a long poll tries again
    in later ones); None when nothing matching is claimable now.

    ``released``: the finish gave the run back, so it is never the next one.
    A session still at its claim limit after the finish gets None too: the
    finish stands, and a plain ``agent.claim_next`` says why.
    """
    held = tx.one(
        "SELECT id, session_id, next_claim_id FROM claims"
        " WHERE run_id = ? AND token_hash = ? ORDER BY id DESC LIMIT 1",
        (run_id, token_hash),
    )
    assert held is not None, "claim_after follows a finish fenced by this token"
    if held["next_claim_id"] is not None:
        again = tx.one(
            "SELECT run_id FROM claims WHERE id = ? AND ended_at IS NULL",
            (held["next_claim_id"],),
        )
        if again is not None:
            return reissue(tx, held["next_claim_id"], again["run_id"], next_claim.token_hash)
    session_id = held["session_id"]
    try:
        claimed = claim_next_run(
            tx,
            caller if session_id is None else caller.for_session(session_id),
            session_id=session_id,
            filters=next_claim.filters,
            lease_ms=next_claim.lease_ms,
            token_hash=next_claim.token_hash,
            idempotency_key=None,
            max_claims_per_session=next_claim.max_claims_per_session,
            exclude_run_id=run_id if released else None,
        )
    except Conflict:  # at its limit: refused before anything was written
        return None
    if claimed is not None:
        tx.execute(
            "UPDATE claims SET next_claim_id = ? WHERE id = ?", (claimed.claim_id, held["id"])
        )
    return claimed
