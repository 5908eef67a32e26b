"""``tasks.*``: create, get, list, update, delete, start and the task's runs;
the graph (children, dependencies, approval, cancel, tree); input for its
agent (``tasks.send``); its events (``tasks.timeline``, ``tasks.stream``);
and each actor's inbox triage (``tasks.triage.*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from agh import protocol as p
from agh.errors import InvalidParams
from aghd import views
from aghd.rpc import Context, method
from aghd.store import coordination, workflows
from aghd.store import events as events_store
from aghd.store import observe as observe_store
from aghd.store import rows as lookups
from aghd.store import tasks as store
from aghd.store.models import NewTask, TaskFilters
from aghd.store.rows import find_task

if TYPE_CHECKING:
    from aghd.store.db import Tx
    from aghd.store.models import DetailParts, ListItemParts, Started


def _detail(parts: DetailParts) -> p.TaskDetail:
    item = _item(parts.item)
    return p.TaskDetail(
        children=[_item(c) for c in parts.children],
        dependencies=[views.dependency(d) for d in parts.item.dependencies],
        dependency_references=item.dependencies,
        events=[views.event(e) for e in parts.events],
        runs=[views.run(r) for r in parts.runs],
        summary=item,
        task=views.task(parts.item.task),
    )


def _item(parts: ListItemParts) -> p.TaskListItem:
    return views.task_list_item(
        parts.task,
        active_run=parts.active_run,
        child_count=parts.child_count,
        dependencies=parts.dependencies,
    )


@method("tasks.create", p.TasksCreateParams)
async def create(ctx: Context, params: p.TasksCreateParams) -> p.TaskRunResult:
    """Create a task; with ``start: true`` also request its run (reply carries it)."""
    return _task_run(await ctx.store.write(_create, ctx, params, params.parent_task_id))


@method("tasks.children.create", p.TasksChildrenCreateParams)
async def create_child(ctx: Context, params: p.TasksChildrenCreateParams) -> p.TaskRunResult:
    """A task under parent ``id`` (the reference replies ``{task}``; agh adds
    ``run`` for ``start: true`` like tasks.create)."""
    if params.parent_task_id is not None:
        raise InvalidParams(
            "tasks.children.create takes the parent as id; leave parent_task_id out",
            {"field": "$.params.parent_task_id"},
        )
    return _task_run(await ctx.store.write(_create, ctx, params, params.id))


def _create(tx: Tx, ctx: Context, params: p.TasksCreateParams, parent: str | None) -> Started:
    caller = ctx.caller
    owner = params.owner or p.Actor(caller.actor_kind, caller.actor_ref)  # type: ignore[arg-type]
    origin = params.origin or p.Origin(caller.origin_kind, caller.origin_ref)  # type: ignore[arg-type]
    new = NewTask(
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
        max_attempts=params.max_attempts or ctx.config.default_max_attempts,
        metadata=params.metadata,
        draft=params.draft,
        approval_policy=params.approval_policy,
        parent_task_id=parent,
        idempotency_key=params.idempotency_key,
        depends_on=tuple(params.depends_on),
    )
    return store.create_and_start(tx, caller, new, start=params.start, input_value=params.input)


def _task_run(started: Started) -> p.TaskRunResult:
    return p.TaskRunResult(
        run=None if started.run is None else views.run(started.run),
        task=views.task(started.task),
    )


@method("tasks.get", p.IdParams)
async def get(ctx: Context, params: p.IdParams) -> p.TaskDetailResult:
    parts = await ctx.store.read(lookups.task_detail, params.id)
    return p.TaskDetailResult(task=_detail(parts))


@method("tasks.list", p.TasksListParams)
async def list_tasks(ctx: Context, params: p.TasksListParams) -> p.TasksListResult:
    filters = TaskFilters(
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
    parts = await ctx.store.read(lookups.list_tasks_enriched, filters, params.limit, params.cursor)
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
        else:
            changes[field] = value
    row = await ctx.store.write(store.update_task, ctx.caller, params.id, changes)
    return p.TaskResult(task=views.task(row))


@method("tasks.delete", p.IdParams)
async def delete(ctx: Context, params: p.IdParams) -> p.EmptyResult:
    await ctx.store.write(store.delete_task, ctx.caller, params.id)
    return p.EmptyResult()


@method("tasks.start", p.TasksStartParams)
async def start(ctx: Context, params: p.TasksStartParams) -> p.TaskRunResult:
    started = await ctx.store.write(
        workflows.start_task_or_workflow,
        ctx.caller,
        params.id,
        idempotency_key=params.idempotency_key,
        input_value=params.input,
    )
    return _task_run(started)


@method("tasks.publish", p.IdParams)
async def publish(ctx: Context, params: p.IdParams) -> p.TaskRunResult:
    """Make a draft live and enqueue its run (with the input of an earlier start)."""
    return _task_run(await ctx.store.write(store.publish_task, ctx.caller, params.id))


@method("tasks.runs.enqueue", p.TasksStartParams)
async def enqueue(ctx: Context, params: p.TasksStartParams) -> p.TaskRunResult:
    """Same as ``tasks.start`` (a finished task gets a new run: a manual retry)."""
    return await start(ctx, params)


@method("tasks.runs.list", p.TasksRunsListParams)
async def list_runs(ctx: Context, params: p.TasksRunsListParams) -> p.RunsListResult:
    def do(tx: Tx) -> list[Any]:
        task = lookups.find_task(tx, params.id)
        return lookups.list_runs(
            tx, task["id"], params.status, params.session_id, params.limit, params.cursor
        )

    rows = await ctx.store.read(do)
    rows, cursor = views.page(rows, params.limit, "id")
    return p.RunsListResult(runs=[views.run(r) for r in rows], next_cursor=cursor)


@method("tasks.approve", p.TasksApproveParams)
async def approve(ctx: Context, params: p.TasksApproveParams) -> p.TaskRunResult:
    """Approve a gated task: its run is queued (null while dependencies are unmet)."""
    return _task_run(await ctx.store.write(store.approve, ctx.caller, params.id, params.comment))


@method("tasks.reject", p.TasksRejectParams)
async def reject(ctx: Context, params: p.TasksRejectParams) -> p.TaskResult:
    row = await ctx.store.write(store.reject, ctx.caller, params.id, params.reason)
    return p.TaskResult(task=views.task(row))


@method("tasks.cancel", p.TasksCancelParams)
async def cancel(ctx: Context, params: p.TasksCancelParams) -> p.TaskResult:
    """Cancel the task's whole subtree, active runs included."""
    row = await ctx.store.write(store.cancel_tree, ctx.caller, params.id, params.reason)
    return p.TaskResult(task=views.task(row))


@method("tasks.dependencies.add", p.DependencyAddParams)
async def add_dependency(ctx: Context, params: p.DependencyAddParams) -> p.TaskDetailResult:
    def do(tx: Tx) -> DetailParts:
        task_id = store.add_dependency(tx, ctx.caller, params.id, params.depends_on_task_id)
        return lookups.task_detail(tx, task_id)

    return p.TaskDetailResult(task=_detail(await ctx.store.write(do)))


@method("tasks.dependencies.remove", p.DependencyRemoveParams)
async def remove_dependency(ctx: Context, params: p.DependencyRemoveParams) -> p.TaskDetailResult:
    def do(tx: Tx) -> DetailParts:
        task_id = store.remove_dependency(tx, ctx.caller, params.id, params.depends_on_id)
        return lookups.task_detail(tx, task_id)

    return p.TaskDetailResult(task=_detail(await ctx.store.write(do)))


@method("tasks.tree", p.IdParams)
async def tree(ctx: Context, params: p.IdParams) -> p.TaskTreeResult:
    root, *rest = [
        views.tree_node(n.task, n.depth, n.active_run, n.child_count)
        for n in await ctx.store.read(lookups.tree, params.id)
    ]
    return p.TaskTreeResult(tree=p.TaskTree(root=root, descendants=rest))


@method("tasks.send", p.TasksSendParams)
async def send(ctx: Context, params: p.TasksSendParams) -> p.MessageResult:
    """Input for the task's running agent (kept for its next run if none)."""
    row, delivered = await ctx.store.write(
        coordination.send_to_task, ctx.caller, params.id, params.message
    )
    return p.MessageResult(message=views.message(row), delivered=delivered)


@method("tasks.timeline", p.TimelineParams)
async def timeline(ctx: Context, params: p.TimelineParams) -> p.TimelineResult:
    def do(tx: Tx) -> list[events_store.TimelineEntry]:
        task = find_task(tx, params.id)
        rows = events_store.task_timeline(tx, task["id"], params.after_sequence, params.limit)
        return events_store.timeline_entries(tx, rows)

    entries = await ctx.store.read(do)
    return p.TimelineResult(timeline=[views.timeline_item(e) for e in entries])


@method("tasks.stream", p.TaskStreamParams)
async def stream_task(ctx: Context, params: p.TaskStreamParams) -> p.SubscribeResult:
    """One task's events; without ``after_sequence`` its whole history first."""
    task = await ctx.store.read(find_task, params.id)
    after = params.after_sequence or 0
    sub = ctx.streams.subscribe(
        ctx.conn, events_store.StreamFilter(task_id=task["id"]), after, ctx.after_reply
    )
    return p.SubscribeResult(subscription=sub.id, after_sequence=after)


async def _triage(ctx: Context, params: p.IdParams, action: str) -> p.TriageResult:
    caller = ctx.caller
    row = await ctx.store.write(
        observe_store.set_triage, caller.actor_kind, caller.actor_ref, params.id, action
    )
    return p.TriageResult(triage=views.triage(row))


@method("tasks.triage.read", p.IdParams)
async def triage_read(ctx: Context, params: p.IdParams) -> p.TriageResult:
    """Mark the task read for the calling actor (up to its current activity)."""
    return await _triage(ctx, params, "read")


@method("tasks.triage.dismiss", p.IdParams)
async def triage_dismiss(ctx: Context, params: p.IdParams) -> p.TriageResult:
    """Hide the task from the caller's inbox until it has newer activity."""
    return await _triage(ctx, params, "dismiss")


@method("tasks.triage.archive", p.IdParams)
async def triage_archive(ctx: Context, params: p.IdParams) -> p.TriageResult:
    """Move the task to the caller's archived lane (and mark it read)."""
    return await _triage(ctx, params, "archive")


@method("tasks.triage.unarchive", p.IdParams)
async def triage_unarchive(ctx: Context, params: p.IdParams) -> p.TriageResult:
    """agh addition: bring an archived task back to the caller's lanes."""
    return await _triage(ctx, params, "unarchive")
