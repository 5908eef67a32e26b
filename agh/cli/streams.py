"""Reading the event log and run logs: ``timeline``, ``watch``, ``logs`` and
``events`` (PROTOCOL ``tasks.timeline``, ``tasks.stream``,
``events.subscribe``, ``runs.logs``).

Streams print one line per event, or JSON lines with --json; Ctrl-C ends
them with exit 130. Owns: following subscriptions without losing or
repeating an event (overflow → resubscribe from the last sequence). Must
not: poll where a subscription exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from agh.cli.connect import connect
from agh.cli.exits import EXIT_FAILED
from agh.cli.options import (
    CLOSED_STATUSES,
    LOG_LEVELS,
    complete_task_ids,
    json_option,
    workspace_ref,
)
from agh.cli.output import actor_text, emit_json, json_text, payload_summary

if TYPE_CHECKING:
    from agh import protocol as p
    from agh.client import Client


PAGE = 1000


def timeline_line(item: p.TimelineItem) -> str:
    """``42  2026-…Z  run.claimed  agent_session:coder-1  {"attempt":1}``."""
    parts = [
        str(item.sequence).rjust(6),
        item.timestamp,
        item.event_type.ljust(18),
        actor_text(item.actor).ljust(20),
        payload_summary(item.payload),
    ]
    return "  ".join(parts)


def read_timeline(
    client: Client, task_id: str, after: int, until: int | None = None
) -> list[p.TimelineItem]:
    """Every event of a task after ``after`` (up to ``until`` when given),
    page by page."""
    items: list[p.TimelineItem] = []
    while True:
        page = client.tasks_timeline(task_id, after_sequence=after, limit=PAGE).timeline
        for item in page:
            if until is not None and item.sequence > until:
                return items
            items.append(item)
        if len(page) < PAGE:
            return items
        after = page[-1].sequence


@click.command("timeline")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@click.option(
    "--after",
    type=click.IntRange(0),
    default=0,
    metavar="SEQ",
    help="Only events after this sequence number. [default: 0, from the start]",
)
@click.option(
    "--limit",
    type=click.IntRange(1, PAGE),
    metavar="N",
    help="At most N events (then a hint to continue). [default: all]",
)
@json_option
@click.pass_context
def timeline(
    ctx: click.Context, task_id: str, after: int, limit: int | None, as_json: bool
) -> None:
    """Print a task's events, oldest first, one line each.

    A line shows the event's sequence number, time, type, actor and its
    payload as compact JSON (cut to fit). --json prints {"timeline":
    [...]}, each item with the task and run as they are now.

    \b
    Example:
      agh timeline T-42
      agh timeline T-42 --after 120 --limit 20
      agh timeline T-42 --json | jq -r '.timeline[].event_type'
    """
    more = False
    with connect(ctx) as client:
        if limit is None:
            items = read_timeline(client, task_id, after)
        else:
            items = client.tasks_timeline(task_id, after_sequence=after, limit=limit).timeline
            if len(items) == limit:
                rest = client.tasks_timeline(task_id, after_sequence=items[-1].sequence, limit=1)
                more = bool(rest.timeline)
    if as_json:
        emit_json({"timeline": items})
    elif not items:
        click.echo("no events" + (f" after {after}" if after else ""), err=True)
    else:
        for item in items:
            click.echo(timeline_line(item))
    if more:
        click.echo(f"more events: agh timeline {task_id} --after {items[-1].sequence}", err=True)


def task_end(client: Client, task_id: str, after: int, until: int | None = None) -> int:
    """The sequence of the task's last event (up to ``until``), or ``after``."""
    items = read_timeline(client, task_id, after, until)
    return items[-1].sequence if items else after


def follow_task(client: Client, task_id: str, as_json: bool) -> str:
    """Print a task's stream until it is closed and every event up to its
    close is printed; return its final status.

    A timeline item carries the task as it is when aghd reads the event,
    so on a replay (or a burst) every item may already say "completed":
    seeing a closed status is not the end. Then the task's last event is
    looked up and the stream read up to it. A task reopened meanwhile (a
    new run) is followed on."""
    sub = client.tasks_stream(task_id).subscription
    last = 0
    end: int | None = None
    while True:
        event = client.next_event()
        if event.subscription != sub:
            continue  # left over from a subscription dropped for overflow
        if event.type == "overflow":
            sub = client.tasks_stream(task_id, after_sequence=last).subscription
            continue
        item = event.timeline
        if event.type != "timeline" or item is None or item.sequence <= last:
            continue
        last = item.sequence
        click.echo(json_text(event) if as_json else timeline_line(item))
        if item.event_type == "task.deleted":
            return "deleted"  # nothing more will happen to it
        status = item.task.status if item.task is not None else None
        if status is None or status not in CLOSED_STATUSES:
            end = None
            continue
        if end is None:
            end = task_end(client, task_id, last)
        if last >= end:
            return status


@click.command("watch")
@click.argument("task_id", metavar="ID", shell_complete=complete_task_ids)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON lines: each stream.event notification as one object.",
)
@click.pass_context
def watch(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Print a task's events as they happen, until it is closed.

    Replays the task's history first (lines as in `agh timeline`), then
    prints each new event as aghd records it. Stops once the task is
    completed, failed or canceled and its events up to then are printed:
    exits 0 if it completed, 1 if it failed, was canceled or was deleted,
    130 on Ctrl-C.
    A task that is already closed prints its history and exits. --json
    prints each stream.event notification as one JSON object per line.

    \b
    Example:
      agh watch T-42
      agh watch T-42 && echo done
      agh watch T-42 --json | jq -c '.timeline | {sequence, event_type}'
    """
    with connect(ctx) as client:
        status = follow_task(client, task_id, as_json)
    if status != "completed":
        click.echo(f"agh: {task_id} is {status}", err=True)
        raise click.exceptions.Exit(EXIT_FAILED)


def log_line(log: p.RunLog) -> str:
    """``2026-…Z  info   [2] message`` (the step only when the line has one)."""
    step = f"[{log.step}] " if log.step is not None else ""
    return f"{log.timestamp}  {log.level.ljust(5)}  {step}{log.message}"


def log_wanted(log: p.RunLog, level: str | None, step: int | None) -> bool:
    """The --level (minimum) and --step filters, applied by the client to
    lines that arrive with stream events."""
    if step is not None and log.step != step:
        return False
    return level is None or LOG_LEVELS.index(log.level) >= LOG_LEVELS.index(level)


def read_logs(
    client: Client, run_id: str, after: int, filters: dict[str, Any]
) -> tuple[list[p.RunLog], int]:
    """Every retained line of a run after log id ``after``, page by page;
    returns them and the id to continue after."""
    lines: list[p.RunLog] = []
    while True:
        page = client.runs_logs(run_id, after=after, limit=PAGE, **filters)
        lines.extend(page.logs)
        after = page.next_after
        if len(page.logs) < PAGE:
            return lines, after


def emit_log(log: p.RunLog, as_json: bool) -> None:
    click.echo(json_text(log) if as_json else log_line(log))


@dataclass
class LogFollow:
    """Where `agh logs --follow` is: the run, its task's subscription, the
    last event sequence and the last log id seen."""

    run_id: str
    task_id: str
    subscription: str
    last_sequence: int
    last_id: int


def follow_logs(
    client: Client,
    state: LogFollow,
    level: str | None,
    step: int | None,
    as_json: bool,
) -> None:
    """Print the run's new lines as their ``run.log`` events arrive, until
    an event shows the run ended."""
    filters = {k: v for k, v in (("level", level), ("step", step)) if v is not None}
    while True:
        event = client.next_event()
        if event.subscription != state.subscription:
            continue
        if event.type == "overflow":
            state.subscription = client.events_subscribe(
                task_id=state.task_id, after_sequence=state.last_sequence
            ).subscription
            continue
        item = event.timeline
        if event.type != "timeline" or item is None:
            continue
        state.last_sequence = item.sequence
        if item.run is None or item.run.id != state.run_id:
            continue
        if item.event_type == "run.log":
            if event.logs is None:  # no longer retained with the event: ask
                new, state.last_id = read_logs(client, state.run_id, state.last_id, filters)
            else:
                new = [x for x in event.logs if x.id > state.last_id and log_wanted(x, level, step)]
                state.last_id = max([state.last_id, *(x.id for x in event.logs)])
            for log in new:
                emit_log(log, as_json)
        if item.run.status in CLOSED_STATUSES:
            # The item shows the run as it is now: lines of run.log events
            # still on their way are read here instead.
            rest, state.last_id = read_logs(client, state.run_id, state.last_id, filters)
            for log in rest:
                emit_log(log, as_json)
            return


@click.command("logs")
@click.argument("ref", metavar="RUN_OR_TASK", shell_complete=complete_task_ids)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--step", type=int, metavar="N", help="Only lines of step N.")
@click.option("--level", type=click.Choice(LOG_LEVELS), help="Only lines at this level or above.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    metavar="N",
    help="Only the last N of the lines already written. [default: all]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document; with --follow, JSON lines (one log line each).",
)
@click.pass_context
def logs(
    ctx: click.Context,
    ref: str,
    follow: bool,
    step: int | None,
    level: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Print the log lines an agent wrote for a run.

    RUN_OR_TASK is a run id, or a task (T-42 or task_…) for its latest
    run. A line shows the time, level, [step] and message; aghd keeps the
    last 10,000 lines of each run. With
    --follow, prints new lines as the agent writes them and exits 0 when
    the run ends (at once if it already has). --json prints
    {"logs": [...], "run_id", "next_after"}; with --follow, one log line
    object per line instead.

    \b
    Example:
      agh logs T-42
      agh logs run_01J… --level warn --step 2
      agh logs T-42 --follow --limit 20
    """
    filters = {k: v for k, v in (("level", level), ("step", step)) if v is not None}
    with connect(ctx) as client:
        first = client.runs_logs(ref, limit=PAGE, **filters)  # resolves a task to its run
        run_id = first.run_id
        lines, last_id = list(first.logs), first.next_after
        state: LogFollow | None = None
        ended = True
        if follow:
            task_id = client.runs_get(run_id).run.task.id
            sub = client.events_subscribe(task_id=task_id)
            # After subscribing: a run that ends later is seen in the stream,
            # and the read below has every line written before the stream starts.
            ended = client.runs_get(run_id).run.run.status in CLOSED_STATUSES
            state = LogFollow(run_id, task_id, sub.subscription, sub.after_sequence, last_id)
        if follow or len(first.logs) == PAGE:
            rest, last_id = read_logs(client, run_id, last_id, filters)
            lines.extend(rest)
        if limit is not None:
            lines = lines[-limit:]
        if as_json and not follow:
            emit_json({"logs": lines, "run_id": run_id, "next_after": last_id})
            return
        if not lines and not follow:
            click.echo(f"no log lines for {run_id}", err=True)
        for log in lines:
            emit_log(log, as_json)
        if state is None or ended:
            return
        state.last_id = last_id
        follow_logs(client, state, level, step, as_json)


@click.command("events")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--after",
    type=click.IntRange(0),
    metavar="SEQ",
    help="Start after this sequence number. [default: 0; with --follow, the end of the log]",
)
@click.option(
    "--task",
    "task_ref",
    metavar="ID",
    shell_complete=complete_task_ids,
    help="Only this task's events.",
)
@click.option("--workspace", metavar="W", help="Only events of this workspace's tasks.")
@click.option("--channel", metavar="NAME", help="Only events of tasks on this network channel.")
@click.option("--json", "as_json", is_flag=True, help="Accepted; the output is JSON lines anyway.")
@click.pass_context
def events(
    ctx: click.Context,
    follow: bool,
    after: int | None,
    task_ref: str | None,
    workspace: str | None,
    channel: str | None,
    as_json: bool,
) -> None:
    """Print the event log as JSON lines, one timeline item per line.

    Each line is one event with its task and run as they are now (the
    items of `agh timeline --json`), in sequence order. Without --follow,
    prints the events stored after --after when the command starts and
    exits 0 (with --workspace or --channel, possibly only at aghd's next
    keepalive, up to 15 s later). With --follow, prints them and then
    every new event until Ctrl-C (exit 130); a subscriber that falls
    behind is resumed where it stopped. The output is always JSON lines
    (--json changes nothing).

    \b
    Example:
      agh events --after 100 | jq -r .event_type
      agh events --follow --channel gpu
      agh events --task T-42
    """
    filters = {
        k: v
        for k, v in (
            ("task_id", task_ref),
            ("workspace", workspace_ref(workspace)),
            ("network_channel", channel),
        )
        if v is not None
    }
    with connect(ctx) as client:
        stream_events(client, filters, after, follow)


def stream_events(client: Client, filters: dict[str, Any], after: int | None, follow: bool) -> None:
    """Print matching timeline items after ``after`` as JSON lines: without
    ``follow`` up to the end of the log as it is now, else until Ctrl-C.

    The end is known by subscribing once without a cursor. The stream stops
    at the event with that sequence or, when a filter skips it, at the
    next keepalive (its sequence is the subscription's cursor)."""
    end: int | None = None
    if not follow:
        # Subscribing without a cursor tells the end of the log now.
        probe = client.events_subscribe(**filters)
        client.subscriptions_cancel(probe.subscription)
        end = probe.after_sequence
        after = after or 0
        task_id = filters.get("task_id")
        if task_id is not None:
            # A task's last event is usually well before the end of the log;
            # stop at it rather than wait for aghd's next keepalive.
            end = min(end, task_end(client, task_id, after, end))
        if end <= after:
            return
    sub = client.events_subscribe(after_sequence=after, **filters)
    sid, last = sub.subscription, sub.after_sequence
    while True:
        event = client.next_event()
        if event.subscription != sid:
            continue  # the probe's, or one dropped for overflow
        if event.type == "overflow":
            sid = client.events_subscribe(after_sequence=last, **filters).subscription
            continue
        item = event.timeline
        if event.type == "timeline" and item is not None and item.sequence > last:
            if end is not None and item.sequence > end:
                return
            click.echo(json_text(item))
            last = item.sequence
        if end is not None and event.sequence >= end:
            return
