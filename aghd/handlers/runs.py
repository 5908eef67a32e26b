"""``runs.*``: operator actions on one run (no claim token needed), and
reading its log (``runs.logs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agh import protocol as p
from aghd import views
from aghd.rpc import Context, method
from aghd.store import claims, coordination, leases
from aghd.store.rows import find_run, task_by_id
from aghd.store.sessions import find_session
from aghd.timefmt import ts
from aghd.tokens import new_token

if TYPE_CHECKING:
    from aghd.store.db import Tx


def _result(row: Any) -> p.RunResult:
    return p.RunResult(run=views.run(row))


@method("runs.get", p.IdParams)
async def get(ctx: Context, params: p.IdParams) -> p.RunDetailResult:
    def do(tx: Tx) -> tuple[Any, Any, Any]:
        run = find_run(tx, params.id)
        return run, task_by_id(tx, run["task_id"]), find_session(tx, run["session_id"])

    run, task, session = await ctx.store.read(do)
    return p.RunDetailResult(
        run=p.RunDetail(
            run=views.run(run),
            session=None if session is None else views.session(session),
            summary=p.RunSummaryStats(last_activity_at=ts(task["last_activity_at"])),
            task=views.task_summary(task),
        )
    )


@method("runs.claim", p.RunsClaimParams)
async def claim(ctx: Context, params: p.RunsClaimParams) -> p.RunClaimResult:
    """Claim one named queued run; the token is in this reply only."""
    token, token_hash = new_token()
    caller, session_id = ctx.sessions.claimant(ctx.conn, params.session_id)
    cfg = ctx.config

    claimed = await ctx.store.write(
        claims.claim_run,
        caller,
        params.id,
        session_id=session_id,
        lease_ms=params.lease_ms or cfg.default_lease_ms,
        token_hash=token_hash,
        idempotency_key=params.idempotency_key,
        max_claims_per_session=cfg.max_claims_per_session,
        require_session=params.session_id is not None,
    )
    run, lease = views.claimed(claimed.run)
    return p.RunClaimResult(run=run, claim_token=token, lease=lease)


@method("runs.start", p.RunsStartParams)
async def start(ctx: Context, params: p.RunsStartParams) -> p.RunResult:
    return _result(await ctx.store.write(leases.start_run, ctx.caller, params.id))


@method("runs.attach_session", p.RunsAttachSessionParams)
async def attach_session(ctx: Context, params: p.RunsAttachSessionParams) -> p.RunResult:
    return _result(
        await ctx.store.write(leases.attach_session, ctx.caller, params.id, params.session_id)
    )


@method("runs.complete", p.RunsCompleteParams)
async def complete(ctx: Context, params: p.RunsCompleteParams) -> p.RunResult:
    return _result(
        await ctx.store.write(leases.complete_run, ctx.caller, params.id, None, params.result)
    )


@method("runs.fail", p.RunsFailParams)
async def fail(ctx: Context, params: p.RunsFailParams) -> p.RunResult:
    """Operator fail: final, no retry (the operator decided)."""
    row = await ctx.store.write(
        leases.fail_run,
        ctx.caller,
        params.id,
        None,
        params.error or "failed by operator",
        retry=False,
        backoff=ctx.services.backoff,
    )
    return _result(row)


@method("runs.cancel", p.RunsCancelParams)
async def cancel(ctx: Context, params: p.RunsCancelParams) -> p.RunResult:
    return _result(await ctx.store.write(leases.cancel_run, ctx.caller, params.id, params.reason))


@method("runs.logs", p.RunsLogsParams)
async def run_logs(ctx: Context, params: p.RunsLogsParams) -> p.RunsLogsResult:
    run_id, rows = await ctx.store.read(
        coordination.read_logs,
        params.id,
        level=params.level,
        step=params.step,
        after=params.after,
        limit=params.limit,
    )
    return p.RunsLogsResult(
        logs=[views.run_log(r) for r in rows],
        run_id=run_id,
        next_after=rows[-1]["id"] if rows else params.after,
    )
