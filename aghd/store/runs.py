"""Runs, claims and leases: enqueue, claim, heartbeat, complete, fail, release,
cancel and lease expiry — every transition with its event, in one transaction.

Each function runs inside the committer's transaction (``tx``); a raised
``AghError`` rolls back only that job. Tokens never reach this module, only
their hashes.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, Forbidden, LeaseLost, NotFound
from agh.protocol import ACTIVE_RUN_STATUSES, PRIORITY_RANK
from aghd.store import graph
from aghd.store.db import (
    PREFIX_CANDIDATES,
    Caller,
    Tx,
    ambiguous_prefix,
    id_prefix,
    new_id,
    to_json,
)
from aghd.store.sessions import get_session
from aghd.store.workspaces import find_workspace
from aghd.timefmt import ts

if TYPE_CHECKING:
    import sqlite3

ACTIVE = ACTIVE_RUN_STATUSES


@dataclass(frozen=True, slots=True)
class ClaimFilters:
    network_channel: str | None = None
    # A workspace path, key, name or id; one that does not exist matches nothing.
    workspace: str | None = None
    scope: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None


# What a claim reply shows of the task (views.task_summary): returning only
# these from the claim's UPDATE saves building a ~40-column row per claim.
TASK_SUMMARY_COLUMNS = (
    "id, identifier, owner_kind, owner_ref, priority, scope, status, title, workspace_id"
)


@dataclass(slots=True)
class Claimed:
    run: sqlite3.Row
    # The task's TASK_SUMMARY_COLUMNS (what the claim reply shows).
    task: sqlite3.Row


@dataclass(slots=True)
class Backoff:
    base_ms: int
    cap_ms: int

    def delay(self, attempt: int) -> int:
        return int(min(self.cap_ms, self.base_ms * (2 ** max(0, attempt - 1))))


# -- reads ------------------------------------------------------------------


def get_run(tx: Tx, run_id: str) -> sqlite3.Row:
    """The run row with exactly this id; raises NotFound. Agents name their
    run by the id their claim returned: no prefix on the fenced paths."""
    row = tx.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    if row is None:
        raise _run_not_found(run_id)
    return row


def find_run(tx: Tx, ref: str) -> sqlite3.Row:
    """The run an operator names (``runs.*``): by id, else by unique id
    prefix. Callers go on with the row's ``id``, never ``ref``."""
    row = tx.one("SELECT * FROM runs WHERE id = ?", (ref,))
    if row is not None:
        return row
    prefix = id_prefix(ref, "run")
    found = (
        []
        if prefix is None
        else tx.all(
            "SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "~", PREFIX_CANDIDATES),
        )
    )
    if len(found) > 1:
        raise ambiguous_prefix("run", ref, [r["id"] for r in found])
    if not found:
        raise _run_not_found(ref)
    return found[0]


def _run_not_found(run_id: str) -> NotFound:
    return NotFound(
        f"run {run_id} not found", {"run_id": run_id, "hint": "list runs with tasks.runs.list"}
    )


def list_runs(
    tx: Tx, task_id: str, status: str | None, session_id: str | None, limit: int, cursor: str | None
) -> list[sqlite3.Row]:
    """Runs of one task, newest first; ``limit + 1`` rows so callers see if more exist."""
    sql = "SELECT * FROM runs WHERE task_id = ?"
    args: list[Any] = [task_id]
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    if session_id is not None:
        sql += " AND session_id = ?"
        args.append(session_id)
    if cursor is not None:
        sql += " AND id < ?"
        args.append(cursor)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit + 1)
    return tx.all(sql, args)


def run_by_idempotency_key(tx: Tx, task_id: str, key: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM runs WHERE task_id = ? AND idempotency_key = ?", (task_id, key))


def open_run_for_task(tx: Tx, task_id: str) -> sqlite3.Row | None:
    return tx.one("SELECT * FROM runs WHERE task_id = ? AND ended_at IS NULL", (task_id,))


def next_deadline(tx: Tx, due_after: int) -> int | None:
    """Earliest lease expiry, or due time of a delayed run due after
    ``due_after`` (both indexed)."""
    lease = tx.scalar("SELECT min(lease_until) FROM runs WHERE lease_until IS NOT NULL")
    due = tx.scalar(
        "SELECT min(available_at) FROM runs"
        " WHERE status = 'queued' AND available_at > queued_at AND available_at > ?",
        (due_after,),
    )
    times = [t for t in (lease, due) if t is not None]
    return min(times) if times else None


# -- enqueue ----------------------------------------------------------------


def refuse_open_run(tx: Tx, task: sqlite3.Row) -> None:
    """Conflict (naming the run) when the task already has an open run."""
    current = open_run_for_task(tx, task["id"])
    if current is not None:
        raise Conflict(
            f"task {task['identifier']} already has run {current['id']} ({current['status']}); "
            "wait for it to finish or cancel it first",
            {"task_id": task["id"], "run_id": current["id"], "status": current["status"]},
        )


def enqueue_run(
    tx: Tx,
    caller: Caller,
    task: sqlite3.Row,
    *,
    idempotency_key: str | None,
    input_json: str | None,
) -> sqlite3.Row:
    """Queue a new run for a runnable task and mark the task ``ready``.

    Raises Conflict when the task already has an open run (one open run per
    task is an invariant, enforced again by a unique index).
    """
    refuse_open_run(tx, task)
    now = tx.now
    run = tx.one(
        "INSERT INTO runs (id, task_id, status, attempt, max_attempts, priority_rank,"
        " network_channel, queued_at, available_at, idempotency_key, input, origin_kind,"
        " origin_ref, created_at, workspace_id, workflow_id)"
        " VALUES (?,?,'queued',0,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING *",
        (
            new_id("run"),
            task["id"],
            task["max_attempts"],
            PRIORITY_RANK[task["priority"]],
            task["network_channel"],
            now,
            now,
            idempotency_key,
            input_json,
            caller.origin_kind,
            caller.origin_ref,
            now,
            task["workspace_id"],
            task["workflow_id"],
        ),
    )
    assert run is not None
    tx.execute(
        "UPDATE tasks SET status = 'ready', closed_at = NULL, closed_reason = NULL, skipped = 0,"
        " run_requested = 0, requested_input = NULL, requested_key = NULL,"
        " blocking_reason = NULL, updated_at = ?"
        " WHERE id = ?",
        (now, task["id"]),
    )
    tx.emit(
        "run.queued",
        caller,
        task_id=task["id"],
        run_id=run["id"],
        payload={"idempotency_key": idempotency_key} if idempotency_key else None,
    )
    tx.wake_claimers()
    return run


# -- claims -----------------------------------------------------------------


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
    tx.execute(
        "INSERT INTO replaced_tokens (claim_id, token_hash, replaced_at)"
        " SELECT id, token_hash, ? FROM claims WHERE id = ?",
        (tx.now, row["claim_id"]),
    )
    tx.execute("UPDATE claims SET token_hash = ? WHERE id = ?", (token_hash, row["claim_id"]))
    run = tx.one(
        "UPDATE runs SET claim_token_hash = ? WHERE id = ? RETURNING *", (token_hash, row["run_id"])
    )
    assert run is not None
    task = tx.one(f"SELECT {TASK_SUMMARY_COLUMNS} FROM tasks WHERE id = ?", (run["task_id"],))
    assert task is not None
    return Claimed(run, task)


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
    return Claimed(run, task)


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
) -> Claimed | None:
    """Atomically claim the best claimable run matching ``filters``, or None.

    ``require_session``: the caller named ``session_id`` explicitly, so it
    must exist (NotFound otherwise).

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
    row = tx.one(*claim_query(filters, tx.now, workspace_id))
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
    filters: ClaimFilters, now: int, workspace_id: str | None = None
) -> tuple[str, list[Any]]:
    """The SQL that picks the next run; public so a test can EXPLAIN it."""
    where = ["r.status = 'queued'", "r.available_at <= ?"]
    args: list[Any] = [now]
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


# -- fenced agent calls -----------------------------------------------------


def fenced(tx: Tx, run_id: str, token_hash: str, replay_reason: str | None = None) -> sqlite3.Row:
    """The run, if ``token_hash`` is its live claim; else lease_lost or forbidden.

    ``replay_reason``: if the token's claim already ended for exactly this
    reason (say the agent retries a ``complete`` whose reply it lost), the
    run is returned as it is, so the retry succeeds without a second write.
    """
    run = get_run(tx, run_id)
    current = run["claim_token_hash"]
    live = current is not None and hmac.compare_digest(current, token_hash)
    if live and run["status"] in ACTIVE:
        if run["lease_until"] <= tx.now:
            # Ran out, the reaper just has not got to it yet: lost all the same.
            raise LeaseLost(
                f"lease on run {run_id} was lost (expired); stop working on it",
                {"run_id": run_id, "reason": "expired", "status": run["status"]},
            )
        return run
    claim = next(
        (
            c
            for c in tx.all(
                "SELECT token_hash, ended_at, end_reason FROM claims WHERE run_id = ?", (run_id,)
            )
            if hmac.compare_digest(c["token_hash"], token_hash)
        ),
        None,
    )
    if claim is None and _was_replaced(tx, run_id, token_hash):
        raise LeaseLost(
            f"lease on run {run_id} was lost (replaced: a retried claim with the same "
            "idempotency_key handed out a new token); stop working on it with this token",
            {"run_id": run_id, "reason": "replaced", "status": run["status"]},
        )
    if claim is None:
        raise Forbidden(
            f"claim_token does not match any claim of run {run_id}",
            {"run_id": run_id, "hint": "use the claim_token returned by your claim"},
        )
    # A replay is only an answer while nobody holds the run since: once another
    # agent claimed it, the old token's retry must not touch the new claim.
    replay = replay_reason is not None and claim["end_reason"] == replay_reason
    if replay and run["status"] not in ACTIVE:
        return run
    reason = claim["end_reason"] or "superseded"
    raise LeaseLost(
        f"lease on run {run_id} was lost ({reason}); stop working on it",
        {"run_id": run_id, "reason": reason, "status": run["status"]},
    )


def _was_replaced(tx: Tx, run_id: str, token_hash: str) -> bool:
    """Whether ``token_hash`` was a token of this run that a claim replay replaced."""
    return any(
        hmac.compare_digest(r["token_hash"], token_hash)
        for r in tx.all(
            "SELECT t.token_hash FROM replaced_tokens t JOIN claims c ON c.id = t.claim_id"
            " WHERE c.run_id = ?",
            (run_id,),
        )
    )


def _end_claim(tx: Tx, run_id: str, reason: str) -> None:
    tx.execute(
        "UPDATE claims SET ended_at = ?, end_reason = ? WHERE run_id = ? AND ended_at IS NULL",
        (tx.now, reason, run_id),
    )


def heartbeat(
    tx: Tx, caller: Caller, run_id: str, token_hash: str, lease_ms: int | None
) -> sqlite3.Row:
    """Extend the lease; the first heartbeat moves claimed/starting to running.

    Without ``lease_ms`` the lease is extended by the length it was last
    given, so an agent that claimed with a short lease keeps a short one.
    """
    run = fenced(tx, run_id, token_hash)
    now = tx.now
    if lease_ms is None:
        lease_ms = run["lease_until"] - run["heartbeat_at"]
    lease_until = now + lease_ms
    to_running = run["status"] != "running"
    updated = tx.one(
        "UPDATE runs SET heartbeat_at = ?, lease_until = ?,"
        " status = 'running', started_at = coalesce(started_at, ?) WHERE id = ? RETURNING *",
        (now, lease_until, now, run_id),
    )
    assert updated is not None
    if to_running:
        tx.emit("run.running", caller, task_id=run["task_id"], run_id=run_id)
    tx.deadline(lease_until)
    return updated


def start_run(tx: Tx, caller: Caller, run_id: str) -> sqlite3.Row:
    """claimed → starting (``runs.start``)."""
    run = find_run(tx, run_id)
    run_id = run["id"]
    if run["status"] == "starting":
        return run
    if run["status"] != "claimed":
        raise Conflict(
            f"run {run_id} is {run['status']}; only a claimed run can be started",
            {"run_id": run_id, "status": run["status"]},
        )
    updated = tx.one(
        "UPDATE runs SET status = 'starting', started_at = ? WHERE id = ? RETURNING *",
        (tx.now, run_id),
    )
    assert updated is not None
    tx.emit("run.starting", caller, task_id=run["task_id"], run_id=run_id)
    return updated


def attach_session(tx: Tx, caller: Caller, run_id: str, session_id: str) -> sqlite3.Row:
    """Bind a session to an active run; claimed/starting → running."""
    run = find_run(tx, run_id)
    run_id = run["id"]
    if run["status"] not in ACTIVE:
        raise Conflict(
            f"run {run_id} is {run['status']}; a session can attach only to an active run",
            {"run_id": run_id, "status": run["status"]},
        )
    get_session(tx, session_id)
    updated = tx.one(
        "UPDATE runs SET session_id = ?, status = 'running', started_at = coalesce(started_at, ?)"
        " WHERE id = ? RETURNING *",
        (session_id, tx.now, run_id),
    )
    assert updated is not None
    tx.execute(
        "UPDATE claims SET session_id = ? WHERE run_id = ? AND ended_at IS NULL",
        (session_id, run_id),
    )
    tx.emit(
        "run.session_attached",
        caller,
        task_id=run["task_id"],
        run_id=run_id,
        payload={"session_id": session_id},
    )
    return updated


def _require_active(run: sqlite3.Row, action: str) -> None:
    if run["status"] not in ACTIVE:
        raise Conflict(
            f"run {run['id']} is {run['status']}; only a claimed, starting or running run can be "
            f"{action}",
            {"run_id": run["id"], "status": run["status"]},
        )


def complete_run(
    tx: Tx, caller: Caller, run_id: str, token_hash: str | None, result: Any
) -> sqlite3.Row:
    """Finish a run successfully; the task becomes ``completed``.

    ``token_hash`` None is the operator override (``runs.complete``).
    """
    if token_hash is None:
        run = find_run(tx, run_id)
        run_id = run["id"]
        _require_active(run, "completed")
    else:
        run = fenced(tx, run_id, token_hash, replay_reason="completed")
        if run["status"] == "completed":
            return run
    now = tx.now
    updated = tx.one(
        "UPDATE runs SET status = 'completed', result = ?, ended_at = ?, lease_until = NULL"
        " WHERE id = ? RETURNING *",
        (to_json(result), now, run_id),
    )
    assert updated is not None
    # An operator override ends the holder's claim with its own reason, so the
    # agent's later complete is lease_lost, not a silent "replay".
    _end_claim(tx, run_id, "completed" if token_hash is not None else "completed_by_operator")
    parent_id = tx.scalar(
        "UPDATE tasks SET status = 'completed', closed_at = ?, updated_at = ?,"
        " last_activity_at = ?, awaiting_input = 0, blocking_reason = NULL,"
        " runs_completed = runs_completed + 1 WHERE id = ? RETURNING parent_task_id",
        (now, now, now, run["task_id"]),
    )
    tx.emit("run.completed", caller, task_id=run["task_id"], run_id=run_id, touch=False)
    # Dependents waiting only for this task get their runs in this transaction.
    graph.settle(tx, caller, run["task_id"], parent_id)
    return updated


def fail_run(
    tx: Tx,
    caller: Caller,
    run_id: str,
    token_hash: str | None,
    error: str,
    *,
    retry: bool,
    backoff: Backoff,
) -> sqlite3.Row:
    """Fail a run: re-queue after backoff while attempts remain and ``retry``,
    else the run and its task are ``failed``."""
    if token_hash is None:
        run = find_run(tx, run_id)
        run_id = run["id"]
        _require_active(run, "failed")
    else:
        run = fenced(tx, run_id, token_hash, replay_reason="failed")
        if run["status"] not in ACTIVE:
            return run
    _end_claim(tx, run_id, "failed" if token_hash is not None else "failed_by_operator")
    if retry and run["attempt"] < run["max_attempts"]:
        due = tx.now + backoff.delay(run["attempt"])
        updated = _requeue(tx, run, available_at=due, error=error)
        tx.emit(
            "run.retry_scheduled",
            caller,
            task_id=run["task_id"],
            run_id=run_id,
            payload={"error": error, "attempt": run["attempt"], "available_at": ts(due)},
        )
        tx.deadline(due)
        return updated
    return _fail_final(tx, caller, run, error, forced=token_hash is None)


def _fail_final(
    tx: Tx, caller: Caller, run: sqlite3.Row, error: str, *, forced: bool
) -> sqlite3.Row:
    """The run and its task are ``failed``. ``forced``: its last claim was
    ended by lease expiry or an operator (a forced stop, for the dashboard)."""
    now = tx.now
    updated = tx.one(
        "UPDATE runs SET status = 'failed', error = ?, ended_at = ?, lease_until = NULL"
        " WHERE id = ? RETURNING *",
        (error, now, run["id"]),
    )
    assert updated is not None
    parent_id = tx.scalar(
        "UPDATE tasks SET status = 'failed', closed_at = ?, closed_reason = ?, updated_at = ?,"
        " awaiting_input = 0, blocking_reason = NULL, runs_failed = runs_failed + 1,"
        " runs_forced = runs_forced + ? WHERE id = ? RETURNING parent_task_id",
        (now, error, now, int(forced), run["task_id"]),
    )
    tx.emit(
        "run.failed",
        caller,
        task_id=run["task_id"],
        run_id=run["id"],
        payload={"error": error, "attempt": run["attempt"]},
    )
    graph.settle(tx, caller, run["task_id"], parent_id)
    return updated


def _requeue(
    tx: Tx, run: sqlite3.Row, *, available_at: int, error: str | None, attempt_delta: int = 0
) -> sqlite3.Row:
    """Active → queued. ``queued_at`` is kept, so the run keeps its place in line."""
    updated = tx.one(
        "UPDATE runs SET status = 'queued', attempt = attempt + ?, available_at = ?,"
        " lease_until = NULL, claim_token_hash = NULL, session_id = NULL, claimed_by_kind = NULL,"
        " claimed_by_ref = NULL, error = ? WHERE id = ? RETURNING *",
        (attempt_delta, available_at, error, run["id"]),
    )
    assert updated is not None
    tx.execute(
        "UPDATE tasks SET status = 'ready', updated_at = ? WHERE id = ?", (tx.now, run["task_id"])
    )
    if available_at <= tx.now:
        tx.wake_claimers()
    return updated


def release_run(
    tx: Tx, caller: Caller, run_id: str, token_hash: str, reason: str | None
) -> sqlite3.Row:
    """Give the run back: queued again, and the released claim does not count
    as an attempt (PROTOCOL §6: same attempt)."""
    run = fenced(tx, run_id, token_hash)
    _end_claim(tx, run_id, "released")
    updated = _requeue(tx, run, available_at=tx.now, error=None, attempt_delta=-1)
    tx.emit(
        "run.released",
        caller,
        task_id=run["task_id"],
        run_id=run_id,
        payload={"reason": reason} if reason else None,
    )
    return updated


def cancel_run(tx: Tx, caller: Caller, run_id: str, reason: str | None) -> sqlite3.Row:
    """Operator cancel of a queued or active run; its holder gets lease_lost."""
    run = find_run(tx, run_id)
    run_id = run["id"]
    if run["status"] not in ("queued", *ACTIVE):
        raise Conflict(
            f"run {run_id} is already {run['status']}; only a queued or active run can be canceled",
            {"run_id": run_id, "status": run["status"]},
        )
    updated = end_run_canceled(tx, caller, run, reason)
    now = tx.now
    parent_id = tx.scalar(
        "UPDATE tasks SET status = 'canceled', closed_at = ?, closed_reason = ?, updated_at = ?,"
        " awaiting_input = 0, blocking_reason = NULL WHERE id = ? RETURNING parent_task_id",
        (now, "run canceled" + (f": {reason}" if reason else ""), now, run["task_id"]),
    )
    graph.settle(tx, caller, run["task_id"], parent_id)
    return updated


def end_run_canceled(tx: Tx, caller: Caller, run: sqlite3.Row, reason: str | None) -> sqlite3.Row:
    """Cancel one open run (queued or active) and end its claim; the task's
    status is the caller's to set."""
    updated = tx.one(
        "UPDATE runs SET status = 'canceled', ended_at = ?, lease_until = NULL, error = ?"
        " WHERE id = ? RETURNING *",
        (tx.now, reason, run["id"]),
    )
    assert updated is not None
    tx.execute("UPDATE tasks SET runs_canceled = runs_canceled + 1 WHERE id = ?", (run["task_id"],))
    _end_claim(tx, run["id"], "canceled")
    tx.emit(
        "run.canceled",
        caller,
        task_id=run["task_id"],
        run_id=run["id"],
        payload={"reason": reason} if reason else None,
    )
    return updated


# -- the reaper ---------------------------------------------------------------


def expire_leases(tx: Tx, caller: Caller) -> int:
    """Handle every active run whose lease ran out by ``tx.now``.

    A lost lease counts as an attempt (the agent may have died mid-work):
    re-queued while attempts remain, else failed with ``lease expired``.
    Returns how many runs were handled.
    """
    expired = tx.all(
        "SELECT * FROM runs WHERE lease_until IS NOT NULL AND lease_until <= ?", (tx.now,)
    )
    for run in expired:
        _end_claim(tx, run["id"], "expired")
        requeue = run["attempt"] < run["max_attempts"]
        tx.emit(
            "run.lease_expired",
            caller,
            task_id=run["task_id"],
            run_id=run["id"],
            payload={
                "attempt": run["attempt"],
                "lease_until": ts(run["lease_until"]),
                "outcome": "requeued" if requeue else "failed",
            },
        )
        if requeue:
            _requeue(tx, run, available_at=tx.now, error="lease expired")
        else:
            _fail_final(tx, caller, run, "lease expired", forced=True)
    return len(expired)
