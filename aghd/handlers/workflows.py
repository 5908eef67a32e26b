"""``workflows.compose``: YAML in, a plan out (and, unless a dry run, the
workflow's tasks written, or with ``update`` the workflow's next version)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from agh import protocol as p
from aghd import views, workflows
from aghd.rpc import Context, method
from aghd.store import workflows as store

if TYPE_CHECKING:
    from aghd.store.db import Tx


def _result(
    plan: p.WorkflowPlan,
    update: store.UpdatePlan | None,
    workflow: p.Workflow | None = None,
    task: p.Task | None = None,
) -> p.ComposeResult:
    if update is None:
        return p.ComposeResult(plan=plan, workflow=workflow, task=task)
    return p.ComposeResult(
        plan=plan,
        workflow=workflow,
        task=task,
        kept_steps=update.kept,
        changed_steps=update.changed,
        removed_steps=update.removed,
    )


@method("workflows.compose", p.WorkflowsComposeParams)
async def compose(ctx: Context, params: p.WorkflowsComposeParams) -> p.ComposeResult:
    # Parsing a large file takes a while; keep the event loop answering.
    wf = await anyio.to_thread.run_sync(workflows.parse, params.yaml, params.vars)
    plan = workflows.to_plan(wf)
    caller = ctx.caller
    max_attempts = ctx.config.default_max_attempts
    ref = params.update
    if params.dry_run:

        def check(tx: Tx) -> store.UpdatePlan | None:
            store.check_references(tx, wf)
            # A dry run of an update says what it would keep, or refuses as it would.
            return None if ref is None else store.plan_update(tx, caller, wf, ref, max_attempts)

        return _result(plan, await ctx.store.read(check))

    def do(tx: Tx) -> tuple[p.Workflow, p.Task, store.UpdatePlan | None]:
        update = None
        if ref is None:
            workflow, root = store.compose(
                tx,
                caller,
                wf,
                source=params.yaml,
                variables=params.vars,
                owner=(caller.actor_kind, caller.actor_ref),
                workspace=params.workspace,
                default_max_attempts=max_attempts,
            )
        else:
            workflow, root, update = store.update(
                tx,
                caller,
                wf,
                ref=ref,
                source=params.yaml,
                variables=params.vars,
                default_max_attempts=max_attempts,
            )
        if params.start:
            root = store.start(tx, caller, root, None)
        return views.workflow(workflow), views.task(root), update

    workflow, task, update = await ctx.store.write(do)
    return _result(plan, update, workflow, task)
