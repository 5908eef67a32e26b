"""What happens to a claimed run, every transition with its event.

Owns: the fence on every agent call (``fenced``), heartbeat, complete, fail
(re-queued after backoff while attempts remain), release, the operator's
start, attach, complete, fail and cancel, and the reaper
(``expire_leases``, ``next_deadline``); a run that ends settles its task's
dependents and container in the same transaction (``progress.settle``);
tokens never reach it, only their hashes. Must not: pick or claim a run
(``claims``), or decide what a finished run unblocks (``progress``).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from agh.errors import Conflict, Forbidden, LeaseLost
from aghd.store.db import Caller, Tx, to_json
from aghd.store.models import ACTIVE, Backoff
from aghd.store.progress import end_claim, end_run_canceled, settle
from aghd.store.rows import find_run, get_run
from aghd.store.sessions import get_session
from aghd.timefmt import ts

if TYPE_CHECKING:
    import sqlite3


# -- the fence ----------------------------------------------------------------


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


# -- transitions --------------------------------------------------------------


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


def _to_finish(tx: Tx, run_id: str, token_hash: str | None, outcome: str) -> sqlite3.Row:
    """The run a finish with ``outcome`` acts on. An operator's (no token):
    found by id or prefix, and it must be active. An agent's: fenced by its
    token; a retry of the same finish returns the run as it is (a replay)."""
    if token_hash is None:
        run = find_run(tx, run_id)
        _require_active(run, outcome)
        return run
    return fenced(tx, run_id, token_hash, replay_reason=outcome)


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
    run = _to_finish(tx, run_id, token_hash, "completed")
    run_id = run["id"]
    if token_hash is not None and run["status"] == "completed":
        return run  # a replay
    now = tx.now
    updated = tx.one(
        "UPDATE runs SET status = 'completed', result = ?, ended_at = ?, lease_until = NULL"
        " WHERE id = ? RETURNING *",
        (to_json(result), now, run_id),
    )
    assert updated is not None
    # An operator override ends the holder's claim with its own reason, so the
    # agent's later complete is lease_lost, not a silent "replay".
    end_claim(tx, run_id, "completed" if token_hash is not None else "completed_by_operator")
    parent_id = tx.scalar(
        "UPDATE tasks SET status = 'completed', closed_at = ?, updated_at = ?,"
        " last_activity_at = ?, awaiting_input = 0, blocking_reason = NULL,"
        " runs_completed = runs_completed + 1 WHERE id = ? RETURNING parent_task_id",
        (now, now, now, run["task_id"]),
    )
    tx.emit("run.completed", caller, task_id=run["task_id"], run_id=run_id, touch=False)
    # Dependents waiting only for this task get their runs in this transaction.
    settle(tx, caller, run["task_id"], parent_id)
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
    run = _to_finish(tx, run_id, token_hash, "failed")
    run_id = run["id"]
    if token_hash is not None and run["status"] not in ACTIVE:
        return run  # a replay (the run may be queued again for its retry)
    end_claim(tx, run_id, "failed" if token_hash is not None else "failed_by_operator")
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
    settle(tx, caller, run["task_id"], parent_id)
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
    end_claim(tx, run_id, "released")
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
    settle(tx, caller, run["task_id"], parent_id)
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
        end_claim(tx, run["id"], "expired")
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
