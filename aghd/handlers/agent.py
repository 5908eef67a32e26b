"""``agent.*``: what an agent does with work — claim-next (with long-poll),
heartbeat, complete, fail, release (each optionally claiming the next run in
the same transaction: one round trip per cycle), and its run's log and
messages (``agent.log``, ``agent.send``, ``agent.messages``). Every call
after the claim is fenced by the claim token (only its hash reaches the
store)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from agh import protocol as p
from agh.errors import AghError, Busy
from aghd import views
from aghd.rpc import Context, method
from aghd.store import claims, coordination, cycle, leases
from aghd.store.models import ClaimFilters, NextClaim
from aghd.tokens import hash_token, new_token

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Awaitable, Callable

    from aghd.store.db import Tx
    from aghd.store.models import Claimed


@method("agent.claim_next", p.ClaimNextParams)
async def claim_next(ctx: Context, params: p.ClaimNextParams) -> p.ClaimNextResult:
    """Claim the best matching run, waiting up to ``wait_ms`` for one."""
    svc = ctx.services
    token, token_hash = new_token()
    caller, session_id = svc.sessions.claimant(ctx.conn, params.session_id)
    filters = _filters(params)
    lease_ms = params.lease_ms or svc.config.default_lease_ms

    async def attempt() -> Claimed | None:
        return await svc.store.write(
            claims.claim_next_run,
            caller,
            session_id=session_id,
            filters=filters,
            lease_ms=lease_ms,
            token_hash=token_hash,
            idempotency_key=params.idempotency_key,
            max_claims_per_session=svc.config.max_claims_per_session,
            require_session=params.session_id is not None,
        )

    claimed = await _within(ctx, attempt, params.wait_ms, drained_is_busy=True)
    return p.ClaimNextResult(claim=None if claimed is None else _claim(claimed, token))


def _filters(params: p.NextClaimParams) -> ClaimFilters:
    return ClaimFilters(
        network_channel=params.network_channel,
        workspace=params.workspace,
        scope=params.scope,
        owner_kind=params.owner_kind,
        owner_ref=params.owner_ref,
    )


def _claim(claimed: Claimed, token: str) -> p.Claim:
    run, lease = views.claimed(claimed.run)
    return p.Claim(
        coordination_channel=run.coordination_channel,
        lease=lease,
        run=run,
        task=views.task_summary(claimed.task),
        claim_token=token,
    )


async def _within(
    ctx: Context,
    attempt: Callable[[], Awaitable[Claimed | None]],
    wait_ms: int,
    *,
    drained_is_busy: bool,
) -> Claimed | None:
    """``attempt()`` until it claims, or ``wait_ms`` passed, or the caller
    hung up. Waiting costs nothing: the waiter sleeps until a commit makes
    a run claimable (or a delayed run comes due), then tries again. While
    the daemon drains: ``busy`` (``drained_is_busy``), else None."""
    svc = ctx.services
    # time.monotonic() is the event loop's clock; anyio.current_time() would
    # look the loop up (a getpid() system call) on every claim.
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        # Take the signal before trying, so a run queued between our attempt
        # and our wait still wakes us.
        signal = svc.work.current()
        claimed = await attempt()
        if claimed is not None:
            return claimed
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.conn.closed.is_set():
            return None
        if svc.stopping.is_set():
            if drained_is_busy:
                raise Busy("aghd is shutting down; claim again once it is back")
            return None
        await _first_of((signal, ctx.conn.closed, svc.stopping), remaining)


async def _first_of(events: tuple[anyio.Event, ...], seconds: float) -> None:
    """Return when any event is set or ``seconds`` passed."""
    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:

            async def wait(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            for event in events:
                tg.start_soon(wait, event)


async def _finish(
    ctx: Context,
    finish: Callable[[Tx], sqlite3.Row],
    run_id: str,
    token_hash: str,
    want: p.NextClaimParams | None,
    *,
    released: bool = False,
) -> p.FinishResult:
    """A fenced finish and, with ``want`` (the call's ``next``), the next
    claim for the same session in the same transaction (PROTOCOL §6, one
    round trip per cycle). When nothing is claimable at once and ``want``
    waits, the finish is already durable while the claim long-polls; the
    reply carries both."""
    if want is None:
        return p.FinishResult(lease=views.lease(await ctx.store.write(finish)))
    svc = ctx.services
    token, next_hash = new_token()
    next_claim = NextClaim(
        filters=_filters(want),
        lease_ms=want.lease_ms or svc.config.default_lease_ms,
        token_hash=next_hash,
        max_claims_per_session=svc.config.max_claims_per_session,
    )
    finished: sqlite3.Row | None = None

    async def attempt() -> Claimed | None:
        nonlocal finished
        if finished is None:  # the first attempt finishes too
            finished, claimed = await svc.store.write(
                cycle.finish_and_claim,
                finish,
                ctx.caller,
                run_id,
                token_hash,
                next_claim,
                released=released,
            )
            return claimed
        try:
            return await svc.store.write(
                cycle.claim_after, ctx.caller, run_id, token_hash, next_claim, released=released
            )
        except AghError:
            # The finish is durable: say so. No next claim this time (the
            # daemon is draining, say); the agent claims again.
            return None

    claimed = await _within(ctx, attempt, want.wait_ms, drained_is_busy=False)
    assert finished is not None
    return p.FinishResult(
        lease=views.lease(finished), next=None if claimed is None else _claim(claimed, token)
    )


@method("agent.heartbeat", p.HeartbeatParams)
async def heartbeat(ctx: Context, params: p.HeartbeatParams) -> p.LeaseResult:
    row = await ctx.store.write(
        leases.heartbeat, ctx.caller, params.run_id, hash_token(params.claim_token), params.lease_ms
    )
    return p.LeaseResult(lease=views.lease(row))


@method("agent.complete", p.AgentCompleteParams)
async def complete(ctx: Context, params: p.AgentCompleteParams) -> p.FinishResult:
    token_hash = hash_token(params.claim_token)

    def finish(tx: Tx) -> sqlite3.Row:
        return leases.complete_run(tx, ctx.caller, params.run_id, token_hash, params.result)

    return await _finish(ctx, finish, params.run_id, token_hash, params.next)


@method("agent.fail", p.AgentFailParams)
async def fail(ctx: Context, params: p.AgentFailParams) -> p.FinishResult:
    token_hash = hash_token(params.claim_token)

    def finish(tx: Tx) -> sqlite3.Row:
        return leases.fail_run(
            tx,
            ctx.caller,
            params.run_id,
            token_hash,
            params.error,
            retry=params.retry,
            backoff=ctx.services.backoff,
        )

    return await _finish(ctx, finish, params.run_id, token_hash, params.next)


@method("agent.release", p.AgentReleaseParams)
async def release(ctx: Context, params: p.AgentReleaseParams) -> p.FinishResult:
    token_hash = hash_token(params.claim_token)

    def finish(tx: Tx) -> sqlite3.Row:
        return leases.release_run(tx, ctx.caller, params.run_id, token_hash, params.reason)

    return await _finish(ctx, finish, params.run_id, token_hash, params.next, released=True)


@method("agent.log", p.AgentLogParams)
async def agent_log(ctx: Context, params: p.AgentLogParams) -> p.AgentLogResult:
    lines = [coordination.NewLine(x.level, x.message, x.step, x.metadata) for x in params.lines]
    count, last_id = await ctx.store.write(
        coordination.append_logs,
        ctx.caller,
        params.run_id,
        hash_token(params.claim_token),
        lines,
        ctx.config.log_retention_lines,
    )
    return p.AgentLogResult(accepted=count, last_id=last_id)


@method("agent.send", p.AgentSendParams)
async def agent_send(ctx: Context, params: p.AgentSendParams) -> p.MessageResult:
    """A status or question from the agent holding the run."""
    row = await ctx.store.write(
        coordination.agent_post,
        ctx.caller,
        params.run_id,
        hash_token(params.claim_token),
        params.message,
        params.kind,
    )
    return p.MessageResult(message=views.message(row))


@method("agent.messages", p.AgentMessagesParams)
async def agent_messages(ctx: Context, params: p.AgentMessagesParams) -> p.MessagesResult:
    rows = await ctx.store.write(
        coordination.agent_messages,
        params.run_id,
        hash_token(params.claim_token),
        params.after,
        params.limit,
    )
    return p.MessagesResult(
        messages=[views.message(r) for r in rows],
        next_after=rows[-1]["id"] if rows else params.after,
    )
