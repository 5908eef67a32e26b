"""Claiming: a queued run taken under a lease.

Owns: ``claim_next_run`` (the best claimable run matching filters: the
``agent.claim_next`` hot path) and the query that picks it, ``claim_run``
(one named run), the replay of a claim retried with its idempotency key,
the per-session limit, and the ``claims`` and ``idempotency_keys`` rows a
claim writes; tokens never reach it, only their hashes. Must not: extend,
finish or expire a lease (``leases``), or queue a run (``progress``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, LeaseLost
from aghd.store.models import TASK_SUMMARY_COLUMNS, Claimed
from aghd.store.rows import find_run, get_run
from aghd.store.sessions import get_session
from aghd.store.workspaces import find_workspace
from aghd.timefmt import ts

if TYPE_CHECKING:
    from aghd.store.db import Caller, Tx
    from aghd.store.models import ClaimFilters


def _check_session_capacity(tx: Tx, session_id: str | None, max_claims: int) -> None:
    if session_id is None or max_claims <= 0:
        return
    held = tx.all(
        "SELECT run_id FROM claims WHERE session_id = ? AND ended_at IS NULL LIMIT ?",
        (session_id, max_claims),
    )
    if len(held) >= max_claims:
        run_ids = [r["run_id"] for r in held]
        raise Conflict(
            f"session {session_id} already holds run {run_ids[0]}; complete, fail or release it "
            "before claiming another",
            {"session_id": session_id, "held_run_ids": run_ids},
        )


def _replay_claim(tx: Tx, scope: str, key: str, token_hash: str) -> Claimed | None:
    """Return the claim made earlier with this key, under a fresh token."""
    row = tx.one(
        "SELECT k.run_id, k.claim_id, c.ended_at, c.end_reason FROM idempotency_keys k"
        " JOIN claims c ON c.id = k.claim_id WHERE k.scope = ? AND k.key = ?",
        (scope, key),
    )
    if row is None:
        return None
    if row["ended_at"] is not None:
        raise LeaseLost(
            f"the claim made with idempotency_key {key!r} has ended ({row['end_reason']}); "
            "claim again with a new key",
            {"run_id": row["run_id"], "end_reason": row["end_reason"]},
        )
    return reissue(tx, row["claim_id"], row["run_id"], token_hash)


def reissue(tx: Tx, claim_id: int, run_id: str, token_hash: str) -> Claimed:
    """Hand a live claim out again under a fresh token: the first reply was
    lost, so its token is unknown to the agent. The token it replaces keeps
    meaning "your lease is gone" (``lease_lost``, reason ``replaced``)."""
    tx.execute(
        "INSERT INTO replaced_tokens (claim_id, token_hash, replaced_at)"
        " SELECT id, token_hash, ? FROM claims WHERE id = ?",
        (tx.now, claim_id),
    )
    tx.execute("UPDATE claims SET token_hash = ? WHERE id = ?", (token_hash, claim_id))
    run = tx.one(
        "UPDATE runs SET claim_token_hash = ? WHERE id = ? RETURNING *", (token_hash, run_id)
    )
    assert run is not None
    task = tx.one(f"SELECT {TASK_SUMMARY_COLUMNS} FROM tasks WHERE id = ?", (run["task_id"],))
    assert task is not None
    return Claimed(run, task, claim_id)


def _take(
    tx: Tx,
    caller: Caller,
    run_id: str,
    *,
    session_id: str | None,
    lease_ms: int,
    token_hash: str,
    idempotency_scope: str | None,
    idempotency_key: str | None,
) -> Claimed:
    """Move one queued run to claimed under a new claim row and event."""
    now = tx.now
    lease_until = now + lease_ms
    # ended_at is left out on purpose: a queued run never has one, and
    # naming it would make SQLite rewrite the run's runs_one_open_per_task
    # entry on every claim.
    run = tx.one(
        "UPDATE runs SET status = 'claimed', attempt = attempt + 1, claimed_at = ?,"
        " heartbeat_at = ?, lease_until = ?, claim_token_hash = ?, claimed_by_kind = ?,"
        " claimed_by_ref = ?, session_id = ?, started_at = NULL, error = NULL"
        " WHERE id = ? AND status = 'queued' RETURNING *",
        (
            now,
            now,
            lease_until,
            token_hash,
            caller.actor_kind,
            caller.actor_ref,
            session_id,
            run_id,
        ),
    )
    if run is None:
        current = get_run(tx, run_id)
        raise Conflict(
            f"run {run_id} is {current['status']}, not queued; only a queued run can be claimed",
            {"run_id": run_id, "status": current["status"]},
        )
    claim_id = tx.execute(
        "INSERT INTO claims (run_id, attempt, token_hash, claimed_by_kind, claimed_by_ref,"
        " session_id, claimed_at) VALUES (?,?,?,?,?,?,?)",
        (run_id, run["attempt"], token_hash, caller.actor_kind, caller.actor_ref, session_id, now),
    ).lastrowid
    assert claim_id is not None
    if idempotency_key is not None:
        tx.execute(
            "INSERT INTO idempotency_keys (scope, key, run_id, claim_id, created_at)"
            " VALUES (?,?,?,?,?)",
            (idempotency_scope, idempotency_key, run_id, claim_id, now),
        )
    task = tx.one(
        "UPDATE tasks SET status = 'in_progress', updated_at = ?, last_activity_at = ?"
        f" WHERE id = ? RETURNING {TASK_SUMMARY_COLUMNS}",
        (now, now, run["task_id"]),
    )
    assert task is not None
    tx.emit(
        "run.claimed",
        caller,
        task_id=run["task_id"],
        run_id=run_id,
        payload={
            "attempt": run["attempt"],
            "session_id": session_id,
            "lease_until": ts(lease_until),
        },
        touch=False,
    )
    tx.deadline(lease_until)
    return Claimed(run, task, claim_id)


def claim_next_run(
    tx: Tx,
    caller: Caller,
    *,
    session_id: str | None,
    filters: ClaimFilters,
    lease_ms: int,
    token_hash: str,
    idempotency_key: str | None,
    max_claims_per_session: int,
    require_session: bool = False,
    exclude_run_id: str | None = None,
) -> Claimed | None:
    """Atomically claim the best claimable run matching ``filters``, or None.

    ``require_session``: the caller named ``session_id`` explicitly, so it
    must exist (NotFound otherwise). ``exclude_run_id``: never this run (the
    one the caller has just released).

    Order: priority rank descending, then oldest ``queued_at``, then id —
    walking ``runs_claim`` (or ``runs_claim_channel``) in index order.
    """
    if require_session and session_id is not None:
        get_session(tx, session_id)
    scope = None
    if idempotency_key is not None:
        scope = "claim_next:" + (session_id or f"{caller.actor_kind}:{caller.actor_ref}")
        replay = _replay_claim(tx, scope, idempotency_key, token_hash)
        if replay is not None:
            return replay
    _check_session_capacity(tx, session_id, max_claims_per_session)
    workspace_id = None
    if filters.workspace is not None:
        workspace = find_workspace(tx, filters.workspace)
        if workspace is None:
            return None
        workspace_id = workspace["id"]
    row = tx.one(*claim_query(filters, tx.now, workspace_id, exclude_run_id))
    if row is None:
        return None
    return _take(
        tx,
        caller,
        row[0],
        session_id=session_id,
        lease_ms=lease_ms,
        token_hash=token_hash,
        idempotency_scope=scope,
        idempotency_key=idempotency_key,
    )


def claim_query(
    filters: ClaimFilters,
    now: int,
    workspace_id: str | None = None,
    exclude_run_id: str | None = None,
) -> tuple[str, list[Any]]:
    """The SQL that picks the next run; public so a test can EXPLAIN it."""
    where = ["r.status = 'queued'", "r.available_at <= ?"]
    args: list[Any] = [now]
    if exclude_run_id is not None:
        where.append("r.id != ?")
        args.append(exclude_run_id)
    if filters.network_channel is not None:
        where.append("r.network_channel = ?")
        args.append(filters.network_channel)
    task_filters = []
    for column, value in (
        ("workspace_id", workspace_id),
        ("scope", filters.scope),
        ("owner_kind", filters.owner_kind),
        ("owner_ref", filters.owner_ref),
    ):
        if value is not None:
            task_filters.append(f"t.{column} = ?")
            args.append(value)
    if task_filters:
        sql = "SELECT r.id FROM runs r JOIN tasks t ON t.id = r.task_id WHERE "
        where.extend(task_filters)
    else:
        sql = "SELECT r.id FROM runs r WHERE "
    sql += " AND ".join(where) + " ORDER BY r.priority_rank DESC, r.queued_at, r.id LIMIT 1"
    return sql, args


def claim_run(
    tx: Tx,
    caller: Caller,
    run_id: str,
    *,
    session_id: str | None,
    lease_ms: int,
    token_hash: str,
    idempotency_key: str | None,
    max_claims_per_session: int,
    require_session: bool = False,
) -> Claimed:
    """Claim one named queued run (``runs.claim``); ``require_session`` as
    for ``claim_next_run``."""
    run_id = find_run(tx, run_id)["id"]
    if require_session and session_id is not None:
        get_session(tx, session_id)
    scope = None
    if idempotency_key is not None:
        # Scoped to the claimant too: another session reusing the key must not
        # be handed this claim's token.
        scope = f"runs.claim:{run_id}:" + (session_id or f"{caller.actor_kind}:{caller.actor_ref}")
        replay = _replay_claim(tx, scope, idempotency_key, token_hash)
        if replay is not None:
            return replay
    get_run(tx, run_id)
    _check_session_capacity(tx, session_id, max_claims_per_session)
    return _take(
        tx,
        caller,
        run_id,
        session_id=session_id,
        lease_ms=lease_ms,
        token_hash=token_hash,
        idempotency_scope=scope,
        idempotency_key=idempotency_key,
    )
