"""``agent.*``: what an agent does with work — claim-next (with long-poll),
heartbeat, complete, fail, release, and its run's log and messages
(``agent.log``, ``agent.send``, ``agent.messages``). Every call after the
claim is fenced by the claim token (only its hash reaches the store)."""

from __future__ import annotations

import anyio

from agh import protocol as p
from agh.errors import Busy
from aghd import views
from aghd.rpc import Context, method
from aghd.store import claims, coordination, leases
from aghd.store.models import ClaimFilters
from aghd.tokens import hash_token, new_token


@method("agent.claim_next", p.ClaimNextParams)
async def claim_next(ctx: Context, params: p.ClaimNextParams) -> p.ClaimNextResult:
    """Claim the best matching run, waiting up to ``wait_ms`` for one.

    Waiting costs nothing: the waiter sleeps until a commit makes a run
    claimable (or a delayed run comes due), then tries again.
    """
    svc = ctx.services
    cfg = svc.config
    token, token_hash = new_token()
    caller, session_id = svc.sessions.claimant(ctx.conn, params.session_id)
    lease_ms = params.lease_ms or cfg.default_lease_ms

    filters = ClaimFilters(
        network_channel=params.network_channel,
        workspace=params.workspace,
        scope=params.scope,
        owner_kind=params.owner_kind,
        owner_ref=params.owner_ref,
    )

    deadline = anyio.current_time() + params.wait_ms / 1000
    while True:
        # Take the signal before trying, so a run queued between our attempt
        # and our wait still wakes us.
        signal = svc.work.current()
        claimed = await svc.store.write(
            claims.claim_next_run,
            caller,
            session_id=session_id,
            filters=filters,
            lease_ms=lease_ms,
            token_hash=token_hash,
            idempotency_key=params.idempotency_key,
            max_claims_per_session=cfg.max_claims_per_session,
            require_session=params.session_id is not None,
        )
        if claimed is not None:
            run, lease = views.claimed(claimed.run)
            return p.ClaimNextResult(
                claim=p.Claim(
                    coordination_channel=run.coordination_channel,
                    lease=lease,
                    run=run,
                    task=views.task_summary(claimed.task),
                    claim_token=token,
                )
            )
        remaining = deadline - anyio.current_time()
        if remaining <= 0 or ctx.conn.closed.is_set():
            return p.ClaimNextResult(claim=None)
        if svc.stopping.is_set():
            raise Busy("aghd is shutting down; claim again once it is back")
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


@method("agent.heartbeat", p.HeartbeatParams)
async def heartbeat(ctx: Context, params: p.HeartbeatParams) -> p.LeaseResult:
    row = await ctx.store.write(
        leases.heartbeat, ctx.caller, params.run_id, hash_token(params.claim_token), params.lease_ms
    )
    return p.LeaseResult(lease=views.lease(row))


@method("agent.complete", p.AgentCompleteParams)
async def complete(ctx: Context, params: p.AgentCompleteParams) -> p.LeaseResult:
    row = await ctx.store.write(
        leases.complete_run,
        ctx.caller,
        params.run_id,
        hash_token(params.claim_token),
        params.result,
    )
    return p.LeaseResult(lease=views.lease(row))


@method("agent.fail", p.AgentFailParams)
async def fail(ctx: Context, params: p.AgentFailParams) -> p.LeaseResult:
    row = await ctx.store.write(
        leases.fail_run,
        ctx.caller,
        params.run_id,
        hash_token(params.claim_token),
        params.error,
        retry=params.retry,
        backoff=ctx.services.backoff,
    )
    return p.LeaseResult(lease=views.lease(row))


@method("agent.release", p.AgentReleaseParams)
async def release(ctx: Context, params: p.AgentReleaseParams) -> p.LeaseResult:
    row = await ctx.store.write(
        leases.release_run, ctx.caller, params.run_id, hash_token(params.claim_token), params.reason
    )
    return p.LeaseResult(lease=views.lease(row))


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
