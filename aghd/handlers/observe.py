"""``observe.dashboard`` and ``observe.inbox``.

The figures and the health rules come from aghd/store/observe.py; this
module shapes them for the wire.
"""

from __future__ import annotations

from agh import protocol as p
from aghd import health, views
from aghd.rpc import Context, method
from aghd.store import observe as store
from aghd.timefmt import ts

ACTIVE_ITEMS = 100


@method("observe.dashboard", p.DashboardParams)
async def dashboard(ctx: Context, params: p.DashboardParams) -> p.DashboardResult:
    """The task dashboard for the tasks matching the filters (PROTOCOL §5)."""
    config = ctx.config
    thresholds = health.Thresholds(
        stuck_after_ms=config.stuck_after_ms,
        backlog_threshold_ms=config.backlog_threshold_ms,
        stale_after_ms=config.stale_after_ms,
        latency_window_ms=config.latency_window_ms,
    )
    filters = store.Filters(
        scope=params.scope,
        workspace=params.workspace,
        owner_kind=params.owner_kind,
        owner_ref=params.owner_ref,
        network_channel=params.network_channel,
        origin_kind=params.origin_kind,
    )
    figures = await ctx.store.read(store.dashboard, filters, thresholds, ACTIVE_ITEMS)
    return p.DashboardResult(dashboard=_dashboard(figures))


def _dashboard(f: store.DashboardFigures) -> p.Dashboard:
    tasks, runs = f.tasks, f.runs
    th = f.thresholds
    active_total = f.active_runs
    closed_total = runs["completed"] + runs["failed"] + runs["canceled"]
    oldest = f.oldest_queued_at
    queue_status = f.queue_status
    in_progress_status = f.in_progress_status
    latest_age = f.age(f.latest_activity_at)
    return p.Dashboard(
        active_runs=p.ActiveRuns(
            claimed=runs["claimed"],
            items=[
                views.active_run_item(
                    a.row,
                    now=f.now,
                    last_activity_at=a.last_activity_at,
                    stuck=a.stuck,
                    orphaned=a.orphaned,
                    health=a.health,
                )
                for a in f.active_items
            ],
            queued=runs["queued"],
            running=runs["running"],
            starting=runs["starting"],
            total=runs["queued"] + active_total,
        ),
        cards=p.DashboardCards(
            blocked=p.BlockedCard(
                awaiting_approval=f.awaiting_approval,
                awaiting_dependencies=tasks["blocked"] - f.awaiting_approval,
                health_status=health.blocked_health(f.awaiting_approval),
                tasks=tasks["blocked"],
            ),
            failed=p.FailedCard(
                failed_runs=runs["failed"],
                forced_stops=f.forced_stops,
                health_status=health.failed_health(tasks["failed"]),
                tasks=tasks["failed"],
            ),
            in_progress=p.InProgressCard(
                active_runs=active_total,
                claimed_runs=runs["claimed"],
                health_status=in_progress_status,
                queued_runs=runs["queued"],
                running_runs=runs["running"],
                starting_runs=runs["starting"],
                tasks=tasks["in_progress"],
            ),
            latency=p.LatencyCard(
                claim_latency_ms=_latency(f.claim_latency),
                start_latency_ms=_latency(f.start_latency),
                window_ms=th.latency_window_ms,
            ),
        ),
        freshness=p.Freshness(
            age_ms=latest_age,
            has_live_work=f.has_live_work,
            latest_activity_at=ts(f.latest_activity_at),
            observed_at=ts(f.now) or "",
            stale=f.stale,
            stale_after_ms=th.stale_after_ms,
            status=health.freshness_health(f.stale),
        ),
        health=p.DashboardHealth(
            active_orphan_runs=f.orphan_runs,
            queue_backlog=queue_status != "ok",
            status=f.status,
            stuck_runs=f.stuck_runs,
        ),
        queue=p.DashboardQueue(
            backlog_status=queue_status,
            backlog_threshold_ms=th.backlog_threshold_ms,
            backlog_warning=queue_status != "ok",
            depth=[
                p.QueueDepth(
                    count=d.count,
                    network_channel=d.network_channel,
                    oldest_queue_age_ms=f.age(d.oldest_queued_at),
                    oldest_queued_at=ts(d.oldest_queued_at),
                )
                for d in f.depth
            ],
            oldest_queue_age_ms=f.age(oldest),
            oldest_queued_at=ts(oldest),
            total=runs["queued"],
        ),
        status_breakdown=[
            p.StatusShare(count=tasks[status], share_percent=share, status=status)  # type: ignore[arg-type]
            for status, share in shares(tasks).items()
        ],
        totals=p.DashboardTotals(
            active_runs=active_total,
            awaiting_approval_tasks=f.awaiting_approval,
            blocked_tasks=tasks["blocked"],
            canceled_runs=runs["canceled"],
            canceled_tasks=tasks["canceled"],
            claimed_runs=runs["claimed"],
            completed_runs=runs["completed"],
            completed_tasks=tasks["completed"],
            dependency_blocked_tasks=tasks["blocked"] - f.awaiting_approval,
            draft_tasks=tasks["draft"],
            failed_runs=runs["failed"],
            failed_tasks=tasks["failed"],
            in_progress_tasks=tasks["in_progress"],
            pending_tasks=tasks["pending"],
            queued_runs=runs["queued"],
            ready_tasks=tasks["ready"],
            running_runs=runs["running"],
            runs_total=runs["queued"] + active_total + closed_total,
            starting_runs=runs["starting"],
            tasks_total=sum(tasks.values()),
        ),
    )


def _latency(stat: store.Latency) -> p.LatencyStat:
    return p.LatencyStat(
        average_ms=stat.average_ms, maximum_ms=int(stat.maximum_ms), samples=stat.samples
    )


def shares(counts: dict[str, int]) -> dict[str, float]:
    """Each count's share of the total in percent with one decimal, rounded
    by largest remainder so the shares add up to exactly 100.0 (in tenths:
    1000) when the total is not zero; all 0.0 when it is."""
    total = sum(counts.values())
    if total == 0:
        return dict.fromkeys(counts, 0.0)
    # Integer arithmetic: floor of each share in tenths, then the tenths
    # still missing go to the largest remainders (ties: the earlier key).
    tenths = {key: count * 1000 // total for key, count in counts.items()}
    remainders = sorted(counts, key=lambda key: -(counts[key] * 1000 % total))
    for key in remainders[: 1000 - sum(tenths.values())]:
        tenths[key] += 1
    return {key: tenths[key] / 10 for key in counts}


# -- inbox and triage ------------------------------------------------------------------


@method("observe.inbox", p.InboxParams)
async def inbox(ctx: Context, params: p.InboxParams) -> p.InboxResult:
    """The inbox of the calling actor, or of the owner named by owner_kind /
    owner_ref: lanes, counts, unread counts and triage (PROTOCOL §5)."""
    who = _inbox_actor(ctx, params)
    query = store.InboxQuery(
        actor_kind=who.kind,
        actor_ref=who.ref,
        scope=params.scope,
        workspace=params.workspace,
        query=params.query,
        unread_only=params.unread,
        limit=params.limit,
        lane=params.lane,
    )
    lanes = await ctx.store.read(store.inbox, query)
    shown = query.shown()
    live = [lane for name, lane in lanes.items() if name != "archived"]
    return p.InboxResult(
        inbox=p.Inbox(
            archived_total=lanes["archived"].count,
            groups=[
                p.InboxGroup(
                    count=lanes[name].count,
                    items=[views.inbox_item(e.task, e.run, who) for e in lanes[name].entries],
                    lane=name,  # type: ignore[arg-type]
                    unread_count=lanes[name].unread,
                )
                for name in shown
            ],
            total=sum(lane.count for lane in live),
            unread_total=sum(lane.unread for lane in live),
        )
    )


def _inbox_actor(ctx: Context, params: p.InboxParams) -> p.Actor:
    """owner_kind / owner_ref name the actor; either alone keeps the other
    from the caller, except that a kind alone means an owner without ref."""
    caller = ctx.caller
    if params.owner_kind is None and params.owner_ref is None:
        return p.Actor(caller.actor_kind, caller.actor_ref)  # type: ignore[arg-type]
    kind = params.owner_kind or caller.actor_kind
    return p.Actor(kind, params.owner_ref)  # type: ignore[arg-type]
