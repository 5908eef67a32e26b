"""``workflows.compose``: YAML in, a plan out (and, unless a dry run, the
workflow's tasks written)."""

from __future__ import annotations

import anyio

from agh import protocol as p
from aghd import views, workflow_spec
from aghd.rpc import Context, method
from aghd.store import workflows as store
from aghd.store.db import Tx


@method("workflows.compose", p.WorkflowsComposeParams)
async def compose(ctx: Context, params: p.WorkflowsComposeParams) -> p.ComposeResult:
    # Parsing a large file takes a while; keep the event loop answering.
    wf = await anyio.to_thread.run_sync(workflow_spec.parse, params.yaml, params.vars)
    plan = workflow_spec.to_plan(wf)
    if params.dry_run:
        await ctx.daemon.read(store.check_references, wf)
        return p.ComposeResult(plan=plan)
    caller = ctx.caller

    def do(tx: Tx) -> tuple[p.Workflow, p.Task]:
        workflow, root = store.compose(
            tx,
            caller,
            wf,
            source=params.yaml,
            variables=params.vars,
            update=params.update,
            owner=(caller.actor_kind, caller.actor_ref),
            workspace=params.workspace,
            default_max_attempts=ctx.daemon.config.default_max_attempts,
        )
        if params.start:
            root = store.start(tx, caller, root, None)
        return views.workflow(workflow), views.task(root)

    workflow, task = await ctx.daemon.write(do)
    return p.ComposeResult(plan=plan, workflow=workflow, task=task)
