"""``agh dashboard`` and ``agh inbox …``: what needs attention
(PROTOCOL ``observe.dashboard``, ``observe.inbox``, ``tasks.triage.*``).

Owns: parsing and printing for these views. Must not: judge health or
lanes itself (aghd does, so every client shows the same verdict).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from agh.cli.connect import connect
from agh.cli.group import SafeGroup
from agh.cli.options import (
    INBOX_LANES,
    complete_task_ids,
    group_json,
    json_option,
    workspace_ref,
)
from agh.cli.output import (
    duration,
    emit_json,
    format_fields,
    format_table,
    indent,
    json_text,
    plural,
    shorten,
    terminal_width,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agh import protocol as p
    from agh.client import Client


def health_text(status: str, reasons: Sequence[str]) -> str:
    """``warning (2 stuck runs, queue backlog)``: the status and what made it."""
    return f"{status} ({', '.join(reasons)})" if reasons else status


def format_dashboard(board: p.Dashboard) -> str:
    """The readable form of ``observe.dashboard``: health first, then what
    is running, what waits, and how fast work is picked up."""
    health, totals, queue, fresh = board.health, board.totals, board.queue, board.freshness
    reasons = []
    if health.stuck_runs:
        reasons.append(plural(health.stuck_runs, "stuck run"))
    if health.active_orphan_runs:
        reasons.append(plural(health.active_orphan_runs, "orphaned run"))
    if health.queue_backlog:
        reasons.append("queue backlog")
    if fresh.stale:
        reasons.append(f"stale: nothing happened for {duration(fresh.age_ms)}")
    last = "-"
    if fresh.latest_activity_at:
        last = f"{fresh.latest_activity_at} ({duration(fresh.age_ms)} ago)"
    cards = board.cards
    latency = cards.latency
    window = f"last {duration(latency.window_ms)}" if latency.window_ms else "recent runs"

    def lat(stat: p.LatencyStat) -> str:
        if not stat.samples:
            return "no samples"
        return (
            f"avg {duration(stat.average_ms)}, max {duration(stat.maximum_ms)}"
            f" ({plural(stat.samples, 'run')})"
        )

    breakdown = ", ".join(
        f"{s.status} {s.count} ({s.share_percent:.1f}%)" for s in board.status_breakdown if s.count
    )
    pairs: list[tuple[str, Any]] = [
        ("Health", health_text(health.status, reasons)),
        ("Last activity", last),
        (
            "Tasks",
            f"{totals.tasks_total} ({breakdown})" if breakdown else totals.tasks_total,
        ),
        (
            "Waiting",
            f"{plural(cards.blocked.tasks, 'blocked task')}: "
            f"{cards.blocked.awaiting_approval} awaiting approval, "
            f"{cards.blocked.awaiting_dependencies} awaiting dependencies",
        ),
        (
            "Failed",
            f"{plural(cards.failed.tasks, 'task')}, {plural(cards.failed.failed_runs, 'run')}"
            f" ({cards.failed.forced_stops} forced stops)",
        ),
        (
            "Runs",
            f"{totals.active_runs} active ({totals.claimed_runs} claimed, "
            f"{totals.starting_runs} starting, {totals.running_runs} running), "
            f"{totals.queued_runs} queued; {totals.completed_runs} completed, "
            f"{totals.failed_runs} failed, {totals.canceled_runs} canceled",
        ),
        (
            "Queue",
            f"{queue.total} queued, oldest waited {duration(queue.oldest_queue_age_ms)}"
            + (
                f" ({queue.backlog_status}: over {duration(queue.backlog_threshold_ms)})"
                if queue.backlog_warning
                else ""
            ),
        ),
        (
            f"Latency ({window})",
            f"claim {lat(latency.claim_latency_ms)}; start {lat(latency.start_latency_ms)}",
        ),
    ]
    parts = [format_fields(pairs)]
    if queue.depth:
        rows = [
            (d.network_channel or "-", str(d.count), duration(d.oldest_queue_age_ms))
            for d in queue.depth
        ]
        parts.append(
            "Queue by channel:\n" + indent(format_table(("CHANNEL", "QUEUED", "OLDEST"), rows))
        )
    items = board.active_runs.items
    if items:
        run_rows = [
            (
                r.run_id,
                r.task_identifier,
                r.run_status,
                duration(r.age_ms),
                r.health_status
                + "".join(
                    f", {flag}" for flag, on in (("stuck", r.stuck), ("orphaned", r.orphaned)) if on
                ),
                shorten(r.task_title, 40),
            )
            for r in items
        ]
        table = format_table(("RUN", "TASK", "STATUS", "AGE", "HEALTH", "TITLE"), run_rows)
        parts.append("Active runs:\n" + indent(table))
    else:
        parts.append("Active runs: none")
    return "\n\n".join(parts)


@click.command("dashboard")
@click.option("--workspace", metavar="W", help="Only this workspace's tasks (path, id or key).")
@click.option("--channel", metavar="NAME", help="Only tasks on this network channel.")
@click.option("-w", "--watch", is_flag=True, help="Keep it on screen, redrawn as things change.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="With --watch: redraw at least this often (ages move on).",
)
@json_option
@click.pass_context
def dashboard(
    ctx: click.Context,
    workspace: str | None,
    channel: str | None,
    watch: bool,
    interval: float,
    as_json: bool,
) -> None:
    """Show the hub's health, active runs, queue and latencies.

    Health is ok, warning or critical: the worst of the queue (its oldest
    run waited too long), the active runs (stuck without heartbeat or
    activity, or orphaned by a disconnected session) and freshness (live
    work but nothing happening). Then task and run totals, blocked and
    failed work, the queue per channel, claim and start latencies, and
    every active run with its age and health.

    With --watch it stays on screen: redrawn when an event arrives (it
    follows the event stream) and every --interval seconds, until Ctrl-C
    (exit 0). On a terminal each view replaces the last; in a pipe the
    views follow each other, and with --json each is one JSON line.

    \b
    Example:
      agh dashboard
      agh dashboard --channel gpu --watch
      agh dashboard --json | jq -r .dashboard.health.status
    """
    filters = {
        k: v
        for k, v in (("workspace", workspace_ref(workspace)), ("network_channel", channel))
        if v is not None
    }
    with connect(ctx) as client:
        if watch:
            watch_dashboard(client, filters, interval, as_json)
            return
        result = client.observe_dashboard(**filters)
    if as_json:
        emit_json(result)
        return
    click.echo(format_dashboard(result.dashboard))


# How long `dashboard --watch` lets a burst of events settle before a redraw.
_BURST_S = 0.2


def watch_dashboard(
    client: Client, filters: dict[str, Any], interval: float, as_json: bool
) -> None:
    """Redraw on events (a burst coalesced into one view) and on a timer."""
    import time

    stream_filters = {k: v for k, v in filters.items() if k in ("workspace", "network_channel")}
    client.events_subscribe(**stream_filters)
    on_terminal = terminal_width() is not None
    try:
        while True:
            result = client.observe_dashboard(**filters)
            if as_json:
                click.echo(json_text(result))
            else:
                text = format_dashboard(result.dashboard)
                stamp = time.strftime("%H:%M:%S")
                if on_terminal:
                    # Home and clear: the new view replaces the old in place.
                    click.echo(f"\x1b[H\x1b[2J{stamp}  (Ctrl-C to quit)\n\n{text}")
                else:
                    click.echo(f"-- {stamp}\n{text}\n")
            try:
                client.next_event(timeout=interval)
                # Let the rest of a burst arrive, then draw it once.
                settle = time.monotonic() + _BURST_S
                while (left := settle - time.monotonic()) > 0:
                    client.next_event(timeout=left)
            except TimeoutError:
                pass
            client.notifications.clear()  # what changed is re-read whole
    except KeyboardInterrupt:
        return  # quitting a view is its normal end


def inbox_why(item: p.InboxItem) -> str:
    """What the item waits for or how its run ended: its blocking reason,
    else its run's status (and error)."""
    if item.blocking_reason:
        return item.blocking_reason
    run = item.run
    if run is None:
        return "-"
    if run.error:
        return f"run {run.status}: {shorten(run.error, 50)}"
    return f"run {run.status}"


def format_inbox(inbox: p.Inbox) -> str:
    """One block per lane: ``approvals: 2 (1 unread)`` then its items, an
    unread one marked ``*``."""
    head = f"{plural(inbox.total, 'item')}, {inbox.unread_total} unread"
    if inbox.archived_total:
        head += f" ({inbox.archived_total} archived)"
    blocks = [head]
    for group in inbox.groups:
        title = f"{group.lane}: {group.count}"
        if group.unread_count:
            title += f" ({group.unread_count} unread)"
        if not group.items:
            blocks.append(title)
            continue
        rows = [
            (
                "*" if not item.triage.read else " ",
                item.task.identifier,
                item.task.status,
                shorten(item.task.title, 50),
                inbox_why(item),
            )
            for item in group.items
        ]
        table = format_table(("", "ID", "STATUS", "TITLE", "WHY"), rows)
        more = ""
        if group.count > len(group.items):
            more = f"\n  … {group.count - len(group.items)} more (--limit)"
        blocks.append(title + "\n" + indent(table) + more)
    return "\n\n".join(blocks)


@click.group("inbox", cls=SafeGroup, invoke_without_command=True)
@click.option("--lane", type=click.Choice(INBOX_LANES), help="Only this lane.")
@click.option("--unread", is_flag=True, help="Only unread items.")
@click.option(
    "--query", metavar="Q", help="Only tasks whose identifier is Q or whose title contains Q."
)
@click.option("--workspace", metavar="W", help="Only this workspace's tasks (path, id or key).")
@click.option(
    "--limit", type=click.IntRange(1, 1000), metavar="N", help="At most N items per lane."
)
@json_option
@click.pass_context
def inbox(
    ctx: click.Context,
    lane: str | None,
    unread: bool,
    query: str | None,
    workspace: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List what needs you, per lane; or triage one item.

    Lanes: approvals (waiting for a manual approval), failed_runs (failed
    tasks), blocked (blocked, or an agent waits for an answer), my_work
    (your open tasks); archived only with --lane archived. A task is in
    one lane at most. An item is unread (*) while its task has activity
    you have not seen; `agh inbox read ID` marks it seen, `dismiss` hides
    it until something new happens, `archive` moves it to the archived
    lane (`unarchive` brings it back). Each prints the triage state.
    --json may come before or after the subcommand.

    \b
    Example:
      agh inbox
      agh inbox --lane approvals --unread
      agh inbox read T-12
      agh inbox archive T-7 --json
    """
    if ctx.invoked_subcommand is not None:
        return
    filters: dict[str, Any] = {
        "lane": lane,
        "query": query,
        "workspace": workspace_ref(workspace),
        "limit": limit,
    }
    filters = {k: v for k, v in filters.items() if v is not None}
    if unread:
        filters["unread"] = True
    with connect(ctx) as client:
        result = client.observe_inbox(**filters)
    if as_json:
        emit_json(result)
        return
    click.echo(format_inbox(result.inbox))


def make_triage_command(action: str, summary: str) -> click.Command:
    @click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
    @json_option
    @click.pass_context
    def command(ctx: click.Context, task_id: str, as_json: bool) -> None:
        with connect(ctx) as client:
            result = client.tasks_triage(action, task_id)
        if group_json(ctx, as_json):
            emit_json(result)
            return
        t = result.triage
        flags = [name for name, on in (("dismissed", t.dismissed), ("archived", t.archived)) if on]
        state = ", ".join(["read" if t.read else "unread", *flags])
        click.echo(f"{task_id}  {state}")

    command.__doc__ = f"""{summary}

    Prints the task and its triage state for you (read, dismissed,
    archived).

    \b
    Example:
      agh inbox {action} T-12
    """
    return inbox.command(action)(command)


make_triage_command("read", "Mark a task's inbox item read, up to its latest activity.")


make_triage_command("dismiss", "Hide a task from your inbox until it has new activity.")


make_triage_command("archive", "Move a task to your archived lane (and mark it read).")


make_triage_command("unarchive", "Bring an archived task back to its lane.")
