"""``tasks.*``: create, get, list, update, delete, start and the task's runs."""

from __future__ import annotations

from typing import Any

import msgspec

from agh import protocol as p
from agh.errors import InvalidParams
from aghd import views
from aghd.rpc import Context, method
from aghd.store import runs as runs_store
from aghd.store import tasks as store
from aghd.store.db import Tx


def _detail(parts: store.DetailParts) -> p.TaskDetail:
    item = _item(parts.item)
    return p.TaskDetail(
        children=[_item(c) for c in parts.children],
        dependencies=[],
        dependency_references=[],
        events=[views.event(e) for e in parts.events],
        runs=[views.run(r, parts.item.task["workspace_id"]) for r in parts.runs],
        summary=item,
        task=views.task(parts.item.task),
    )


def _item(parts: store.ListItemParts) -> p.TaskListItem:
    return views.task_list_item(
        parts.task, active_run=parts.active_run, child_count=parts.child_count
    )


@method("tasks.create", p.TasksCreateParams)
async def create(ctx: Context, params: p.TasksCreateParams) -> p.TaskRunResult:
    """Create a task; with ``start: true`` also request its run (reply carries it)."""
    if params.depends_on:
        raise InvalidParams(
            "depends_on is not supported by this aghd yet",
            {"field": "$.params.depends_on", "hint": "create the task without dependencies"},
        )
    if params.approval_policy == "manual":
        # Until tasks.approve exists such a task could never run.
        raise InvalidParams(
            "approval_policy 'manual' is not supported by this aghd yet",
            {"field": "$.params.approval_policy", "hint": "create the task with 'none'"},
        )
    caller = ctx.caller
    owner = params.owner or p.Actor(caller.actor_kind, caller.actor_ref)  # type: ignore[arg-type]
    origin = params.origin or p.Origin(caller.origin_kind, caller.origin_ref)  # type: ignore[arg-type]
    new = store.NewTask(
        title=params.title,
        description=params.description,
        scope=params.scope,
        workspace=params.workspace,
        owner_kind=owner.kind,
        owner_ref=owner.ref,
        origin_kind=origin.kind,
        origin_ref=origin.ref,
        priority=params.priority,
        network_channel=params.network_channel,
        max_attempts=params.max_attempts or ctx.daemon.config.default_max_attempts,
        metadata=params.metadata,
        draft=params.draft,
        approval_policy=params.approval_policy,
        parent_task_id=params.parent_task_id,
        idempotency_key=params.idempotency_key,
    )

    started = await ctx.daemon.write(
        store.create_and_start,
        caller,
        new,
        start=params.start,
        input_value=params.input,
    )
    return _task_run(started)


def _task_run(started: store.Started) -> p.TaskRunResult:
    ws = started.task["workspace_id"]
    return p.TaskRunResult(
        run=None if started.run is None else views.run(started.run, ws),
        task=views.task(started.task),
    )


@method("tasks.get", p.IdParams)
async def get(ctx: Context, params: p.IdParams) -> p.TaskDetailResult:
    parts = await ctx.daemon.read(store.task_detail, params.id)
    return p.TaskDetailResult(task=_detail(parts))


@method("tasks.list", p.TasksListParams)
async def list_tasks(ctx: Context, params: p.TasksListParams) -> p.TasksListResult:
    filters = store.TaskFilters(
        scope=params.scope,
        workspace=params.workspace,
        status=params.status,
        priority=params.priority,
        include_drafts=params.include_drafts,
        approval_state=params.approval_state,
        owner_kind=params.owner_kind,
        owner_ref=params.owner_ref,
        parent_task_id=params.parent_task_id,
        network_channel=params.network_channel,
        query=params.query,
    )
    parts = await ctx.daemon.read(store.list_tasks_enriched, filters, params.limit, params.cursor)
    parts, next_cursor = views.page(parts, params.limit, lambda x: x.task["id"])
    return p.TasksListResult(tasks=[_item(x) for x in parts], next_cursor=next_cursor)


@method("tasks.update", p.TasksUpdateParams)
async def update(ctx: Context, params: p.TasksUpdateParams) -> p.TaskResult:
    changes: dict[str, Any] = {}
    for field in params.__struct_fields__:
        value = getattr(params, field)
        if field == "id" or value is msgspec.UNSET:
            continue
        if field == "owner":
            changes["owner_kind"], changes["owner_ref"] = value.kind, value.ref
        elif field == "approval_policy":
            raise InvalidParams(
                "approval_policy cannot be changed after creation by this aghd",
                {"field": "$.params.approval_policy"},
            )
        else:
            changes[field] = value
    row = await ctx.daemon.write(store.update_task, ctx.caller, params.id, changes)
    return p.TaskResult(task=views.task(row))


@method("tasks.delete", p.IdParams)
async def delete(ctx: Context, params: p.IdParams) -> p.EmptyResult:
    await ctx.daemon.write(store.delete_task, ctx.caller, params.id)
    return p.EmptyResult()


@method("tasks.start", p.TasksStartParams)
async def start(ctx: Context, params: p.TasksStartParams) -> p.TaskRunResult:
    started = await ctx.daemon.write(
        store.start_task,
        ctx.caller,
        params.id,
        idempotency_key=params.idempotency_key,
        input_value=params.input,
    )
    return _task_run(started)


@method("tasks.publish", p.IdParams)
async def publish(ctx: Context, params: p.IdParams) -> p.TaskRunResult:
    """Make a draft live and enqueue its run (with the input of an earlier start)."""
    return _task_run(await ctx.daemon.write(store.publish_task, ctx.caller, params.id))


@method("tasks.runs.enqueue", p.TasksStartParams)
async def enqueue(ctx: Context, params: p.TasksStartParams) -> p.TaskRunResult:
    """Same as ``tasks.start`` (a finished task gets a new run: a manual retry)."""
    return await start(ctx, params)


@method("tasks.runs.list", p.TasksRunsListParams)
async def list_runs(ctx: Context, params: p.TasksRunsListParams) -> p.RunsListResult:
    def do(tx: Tx) -> tuple[Any, list[Any]]:
        task = store.find_task(tx, params.id)
        return task, runs_store.list_runs(
            tx, task["id"], params.status, params.session_id, params.limit, params.cursor
        )

    task, rows = await ctx.daemon.read(do)
    rows, cursor = views.page(rows, params.limit, "id")
    return p.RunsListResult(
        runs=[views.run(r, task["workspace_id"]) for r in rows], next_cursor=cursor
    )
