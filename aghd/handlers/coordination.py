"""Run logs and the coordination channel: ``agent.log``, ``runs.logs``,
``tasks.send``, ``agent.send``, ``agent.messages``."""

from __future__ import annotations

from agh import protocol as p
from aghd import views
from aghd.rpc import Context, method
from aghd.store import coordination as store
from aghd.tokens import hash_token


@method("agent.log", p.AgentLogParams)
async def agent_log(ctx: Context, params: p.AgentLogParams) -> p.AgentLogResult:
    lines = [store.NewLine(x.level, x.message, x.step, x.metadata) for x in params.lines]
    count, last_id = await ctx.daemon.write(
        store.append_logs,
        ctx.caller,
        params.run_id,
        hash_token(params.claim_token),
        lines,
        ctx.daemon.config.log_retention_lines,
    )
    return p.AgentLogResult(accepted=count, last_id=last_id)


@method("runs.logs", p.RunsLogsParams)
async def run_logs(ctx: Context, params: p.RunsLogsParams) -> p.RunsLogsResult:
    run_id, rows = await ctx.daemon.read(
        store.read_logs,
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


@method("tasks.send", p.TasksSendParams)
async def send(ctx: Context, params: p.TasksSendParams) -> p.MessageResult:
    """Input for the task's running agent (kept for its next run if none)."""
    row, delivered = await ctx.daemon.write(
        store.send_to_task, ctx.caller, params.id, params.message
    )
    return p.MessageResult(message=views.message(row), delivered=delivered)


@method("agent.send", p.AgentSendParams)
async def agent_send(ctx: Context, params: p.AgentSendParams) -> p.MessageResult:
    """A status or question from the agent holding the run."""
    row = await ctx.daemon.write(
        store.agent_post,
        ctx.caller,
        params.run_id,
        hash_token(params.claim_token),
        params.message,
        params.kind,
    )
    return p.MessageResult(message=views.message(row))


@method("agent.messages", p.AgentMessagesParams)
async def agent_messages(ctx: Context, params: p.AgentMessagesParams) -> p.MessagesResult:
    rows = await ctx.daemon.write(
        store.agent_messages,
        params.run_id,
        hash_token(params.claim_token),
        params.after,
        params.limit,
    )
    return p.MessagesResult(
        messages=[views.message(r) for r in rows],
        next_after=rows[-1]["id"] if rows else params.after,
    )
