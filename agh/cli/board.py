"""``agh board``: a live Kanban board of the tasks, in the terminal.

The model and layout are pure functions that tests check directly:
``column_of`` (a task's column), ``card_of`` (how its card reads),
``arrange`` (the columns' order, window and limit), ``render`` (the screen's
lines at a size) and ``snapshot_rows`` (the board as a table). ``Board``
holds the cards and fetches them: all at the start (``tasks.list``, one
status at a time), then only the tasks that events name (``tasks.get``).
``Live`` runs the terminal view: one ``events.subscribe`` stream read by a
thread on its own connection, keys and resizes through ``agh.tui.Screen``,
at most ``1 / FRAME_S`` redraws a second, and a reconnect when aghd goes
away.

Owns: what column a task is in, what a card shows, when to fetch. Must
not: change anything in aghd, or judge health (``agh dashboard`` does).
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
import unicodedata
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import click

from agh.cli.connect import connect, socket_path
from agh.cli.names import connected_names, run_agent, session_of
from agh.cli.options import CLOSED_STATUSES, json_option, workspace_ref
from agh.cli.output import (
    age,
    emit_json,
    format_table,
    paint,
    parse_time,
    shorten,
    terminal_width,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from agh import protocol as p
    from agh.client import Client
    from agh.tui import Screen

QUEUED, RUNNING, INPUT, BLOCKED, FAILED, COMPLETED = (
    "queued",
    "running",
    "requires input",
    "blocked",
    "failed",
    "completed",
)
COLUMNS = (QUEUED, RUNNING, INPUT, BLOCKED, FAILED, COMPLETED)
CLOSED_COLUMNS = (FAILED, COMPLETED)
COLUMN_COLOURS = {
    QUEUED: "blue",
    RUNNING: "cyan",
    INPUT: "magenta",
    BLOCKED: "yellow",
    FAILED: "red",
    COMPLETED: "green",
}
PRIORITY_MARKS = {"urgent": " !!", "high": " !"}
# The start of aghd's blocking_reason while an agent's question waits for
# an answer (aghd/store/coordination.py); the inbox's "blocked" lane too.
AWAITING_INPUT = "awaiting input"
OPEN_STATUSES = ("pending", "blocked", "ready", "in_progress")

PAGE = 1000
# Open tasks are read whole, up to this many pages of each status; closed
# ones only from the newest page of each status (ids follow creation, so a
# closed task older than that is not shown until an event names it).
OPEN_PAGES = 10
# More changed tasks than this in one frame: one reload is cheaper.
REFETCH_MAX = 100
FRAME_S = 0.1  # at most 10 redraws a second, however many events arrive
TICK_S = 1.0  # redraw this often anyway: the ages move on
RETRY_S = 0.5  # between reconnect attempts while aghd is away
POLL_S = 0.5  # how soon the event thread sees that it must stop
CALL_TIMEOUT_S = 10.0
MIN_COLUMN = 10  # narrower than this, the columns are stacked instead
# Ctrl-C comes as SIGINT (the tty keeps ISIG on); as a byte only if a
# terminal sends it raw. Ctrl-D is a plain byte once ICANON is off.
QUIT_KEYS = ("q", "Q", "\x03", "\x04")


# -- the model (pure) -------------------------------------------------------------------


def awaiting_input(blocking_reason: str | None) -> bool:
    return blocking_reason is not None and blocking_reason.startswith(AWAITING_INPUT)


def column_of(
    status: str, approval_state: str = "not_required", blocking_reason: str | None = None
) -> str | None:
    """The column of a task, or ``None`` for a draft (never shown).

    "requires input" is where a person must act, as in the inbox: an
    approval pending, or an open task whose agent asked a question."""
    if status == "draft":
        return None
    if status in CLOSED_STATUSES:
        return COMPLETED if status == "completed" else FAILED
    if approval_state == "pending" or awaiting_input(blocking_reason):
        return INPUT
    if status == "in_progress":
        return RUNNING
    if status == "blocked":
        return BLOCKED
    return QUEUED  # pending (no run requested yet) and ready (a queued run)


@dataclass(frozen=True, slots=True)
class Card:
    """One task on the board. ``since``: when it came into its column, as
    near as the task and its run tell; ``agent``: the name of the session
    that holds (or, once closed, last held) its run."""

    task_id: str
    identifier: str
    title: str
    column: str
    status: str
    priority: str
    since: str | None
    agent: str | None = None
    note: str | None = None
    closed_at: str | None = None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    total: int  # cards in the column, shown or not
    cards: list[Card]


def card_note(item: p.TaskListItem, column: str) -> str | None:
    run = item.active_run
    reason = item.blocking_reason
    if column == INPUT:
        if item.approval_state == "pending":
            return "needs approval"
        return "asks: " + reason[len(AWAITING_INPUT) :].lstrip(": ") if reason else None
    if column == BLOCKED:
        return reason
    if column == QUEUED:
        if item.status == "pending":
            return "not started"
        if run is not None and run.attempt > 1:
            return f"retry {run.attempt}/{run.max_attempts}"
        return None
    if column == RUNNING:
        return run.status if run is not None and run.status != "running" else None
    if item.status == "canceled":
        return "canceled" + (f": {item.closed_reason}" if item.closed_reason else "")
    return item.closed_reason


def card_since(item: p.TaskListItem, column: str) -> str | None:
    run = item.active_run
    if column in CLOSED_COLUMNS:
        return item.closed_at or item.updated_at
    if column == RUNNING and run is not None:
        return run.started_at or run.claimed_at or item.updated_at
    if column == QUEUED and run is not None:
        return run.queued_at or item.updated_at
    return item.updated_at


def card_of(item: p.TaskListItem, agent: str | None = None) -> Card | None:
    """The card of a task as ``tasks.list`` / ``tasks.get`` show it, or
    ``None`` when it is not on the board (a draft)."""
    column = column_of(item.status, item.approval_state, item.blocking_reason)
    if column is None:
        return None
    return Card(
        task_id=item.id,
        identifier=item.identifier,
        title=item.title,
        column=column,
        status=item.status,
        priority=item.priority,
        since=card_since(item, column),
        agent=agent,
        note=card_note(item, column),
        closed_at=item.closed_at,
    )


def arrange(
    cards: Iterable[Card],
    *,
    now: dt.datetime,
    keep_closed_s: float,
    limit: int | None = None,
) -> list[Column]:
    """The six columns in order. Open ones: highest priority first, then
    longest waiting; closed ones: newest first, and only those closed
    within ``keep_closed_s`` seconds of ``now``. At most ``limit`` cards
    each (``total`` still counts them all)."""
    from agh.protocol import PRIORITY_RANK

    by_column: dict[str, list[Card]] = {name: [] for name in COLUMNS}
    cutoff = now - dt.timedelta(seconds=keep_closed_s)
    for card in cards:
        if card.column in CLOSED_COLUMNS:
            closed = parse_time(card.closed_at or card.since)
            if closed is None or closed < cutoff:
                continue
        by_column[card.column].append(card)
    columns = []
    for name, found in by_column.items():
        if name in CLOSED_COLUMNS:
            found.sort(key=lambda c: (c.closed_at or c.since or "", c.task_id), reverse=True)
        else:
            found.sort(key=lambda c: (-PRIORITY_RANK.get(c.priority, 0), c.since or "", c.task_id))
        columns.append(Column(name, len(found), found if limit is None else found[:limit]))
    return columns


def short_age(since: str | None, now: dt.datetime) -> str:
    """``3m``: the card's age without ``ago``; ``-`` when unknown."""
    text = age(since, now)
    return "0s" if text.startswith("in ") else text.removesuffix(" ago")


# -- the layout (pure) -----------------------------------------------------------------


def char_width(ch: str) -> int:
    """Terminal cells of one character: 2 for East Asian wide ones, 0 for
    combining marks."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def fit(text: str, width: int) -> str:
    """``text`` on one line of exactly ``width`` terminal cells: cut with an
    ellipsis, padded with spaces. Control characters show as ``?``: a title
    must not move the cursor or change colours."""
    if width <= 0:
        return ""
    line = " ".join(text.split())
    if line.isascii() and line.isprintable():
        return shorten(line, width).ljust(width)
    line = "".join("?" if unicodedata.category(ch) == "Cc" else ch for ch in line)
    cells = [char_width(ch) for ch in line]
    if sum(cells) <= width:
        return line + " " * (width - sum(cells))
    kept, used = [], 0
    for ch, cell in zip(line, cells, strict=True):
        if used + cell > width - 1:
            break
        kept.append(ch)
        used += cell
    return "".join(kept) + "…" + " " * (width - 1 - used)


def card_lines(card: Card, width: int, now: dt.datetime) -> list[str]:
    """A card's lines, each exactly ``width`` visible characters: its
    identifier and age, its title, then its agent and note when it has them."""
    when = short_age(card.since, now)
    room = width - len(when) - 1
    if room < 4:  # too narrow for both: the identifier wins
        head = paint(fit(card.identifier, width), None, bold=True)
    else:
        ident = card.identifier + PRIORITY_MARKS.get(card.priority, "")
        head = paint(fit(ident, room), None, bold=True) + " " + paint(when, "bright_black")
    lines = [head, fit(card.title, width)]
    if card.agent:
        lines.append(paint(fit("@" + card.agent, width), "cyan"))
    if card.note:
        colour = "yellow" if card.column == INPUT else "bright_black"
        lines.append(paint(fit(card.note, width), colour))
    return lines


def column_cells(column: Column, width: int, rows: int, now: dt.datetime) -> list[str]:
    """The body of one column: its cards a blank line apart, cut to
    ``rows`` lines with ``+N more`` at the bottom when they do not fit."""
    cells: list[str] = []
    for shown, card in enumerate(column.cards):
        lines = card_lines(card, width, now)
        gap = 1 if cells else 0
        hidden = column.total - shown
        # Room for this card, and for a "+N more" under it unless it is the last.
        need = gap + len(lines) + (0 if hidden == 1 else 1)
        if len(cells) + need > rows:
            if rows > 0:
                cells = cells[: rows - 1]
                cells.append(paint(fit(f"+{hidden} more", width), "bright_black"))
            return cells
        cells.extend([" " * width] * gap + lines)
    hidden = column.total - len(column.cards)
    if hidden and rows > 0:  # cut by --limit
        cells = [*cells[: rows - 1], paint(fit(f"+{hidden} more", width), "bright_black")]
    return cells


def column_widths(width: int, count: int) -> list[int]:
    """Widths of ``count`` columns one separator apart, filling ``width``
    exactly (what division leaves goes one each to the first columns)."""
    room = width - (count - 1)
    each, extra = divmod(room, count)
    return [each + (1 if i < extra else 0) for i in range(count)]


def column_title(column: Column, width: int) -> str:
    """`` QUEUED 3``: the name cut before the count is."""
    count = str(column.total)
    name = shorten(column.name.upper(), max(width - len(count) - 2, 1))
    return " " + fit(f"{name} {count}", width - 1)


def header_line(title: str, status: str, width: int, status_colour: str | None) -> str:
    """``title`` on the left, ``status`` on the right, ``width`` wide."""
    status = shorten(status, max(width - 1, 0)) if status else ""
    room = width - len(status) - (1 if status else 0)
    left = paint(fit(title, room), None, bold=True) if room > 0 else ""
    right = paint(status, status_colour, bold=status_colour is not None) if status else ""
    return left + (" " if status and room > 0 else "") + right


def render(
    columns: Sequence[Column],
    width: int,
    height: int,
    *,
    now: dt.datetime,
    title: str = "agh board",
    status: str = "",
    status_colour: str | None = None,
) -> list[str]:
    """The screen: a header, then the columns side by side (titles, a
    rule, the cards), at most ``height`` lines of exactly ``width`` visible
    characters each. Too narrow for side by side, the columns are stacked
    one card a line."""
    lines = [header_line(title, status, width, status_colour)]
    widths = column_widths(width, len(columns))
    if min(widths) < MIN_COLUMN:
        lines.extend(stacked_lines(columns, width, now))
        return lines[:height]
    heads = [
        paint(column_title(c, w), COLUMN_COLOURS[c.name], bold=True)
        for c, w in zip(columns, widths, strict=True)
    ]
    lines.append("│".join(heads))
    lines.append("┼".join("─" * w for w in widths))
    rows = max(height - len(lines), 0)
    # One space of margin on the left of each card.
    bodies = [column_cells(c, w - 1, rows, now) for c, w in zip(columns, widths, strict=True)]
    for i in range(rows):
        cells = [
            " " + (body[i] if i < len(body) else " " * (w - 1))
            for body, w in zip(bodies, widths, strict=True)
        ]
        lines.append("│".join(cells))
    return lines[:height]


def stacked_lines(columns: Sequence[Column], width: int, now: dt.datetime) -> list[str]:
    """Narrow terminals: each column as a heading and one line per card."""
    lines: list[str] = []
    for column in columns:
        head = f"{column.name.upper()} {column.total}"
        lines.append(paint(fit(head, width), COLUMN_COLOURS[column.name], bold=True))
        for card in column.cards:
            agent = f" @{card.agent}" if card.agent else ""
            text = f"{card.identifier} {short_age(card.since, now)}{agent} {card.title}"
            lines.append(" " + fit(text, width - 1))
        if column.total > len(column.cards):
            lines.append(" " + fit(f"+{column.total - len(column.cards)} more", width - 1))
    return lines


SNAPSHOT_HEADERS = ("COLUMN", "ID", "TITLE", "AGE", "AGENT", "NOTE")


def snapshot_rows(columns: Sequence[Column], now: dt.datetime) -> list[list[str]]:
    """The board as table rows, column by column, for a pipe or ``--once``."""
    return [
        [
            column.name,
            card.identifier,
            card.title,
            age(card.since, now),
            card.agent or "-",
            card.note or "-",
        ]
        for column in columns
        for card in column.cards
    ]


# -- fetching ------------------------------------------------------------------------


class Board:
    """The cards of the tasks the filters select, and how to bring them up
    to date: ``load`` reads them all, ``note`` records what an event
    changed, ``refresh`` re-reads just those tasks (or everything, after a
    deletion or a burst too large to fetch one by one)."""

    def __init__(self, filters: dict[str, str], channel: str | None = None) -> None:
        self.filters = filters
        self.channel = channel
        self.cards: dict[str, Card] = {}
        self.dirty: set[str] = set()
        self.stale = True  # everything must be (re)loaded
        # Session id -> its agent's name (None: the session has none).
        self.names: dict[str, str | None] = {}
        # Closed tasks whose last run was looked up for its agent.
        self.checked: set[str] = set()

    @property
    def pending(self) -> bool:
        return self.stale or bool(self.dirty)

    def note(self, item: p.TimelineItem) -> None:
        if item.event_type == "task.deleted":
            # The item has no task any more, and a whole subtree may be gone.
            self.stale = True
        elif item.task is not None:
            self.dirty.add(item.task.id)

    def refresh(self, client: Client) -> None:
        """Bring the dirty cards (or, when stale, all) up to date.
        Raises AghError (DaemonUnreachable when aghd went away)."""
        if self.stale or len(self.dirty) > REFETCH_MAX:
            self.load(client)
            return
        from agh.errors import NotFound

        for task_id in sorted(self.dirty):
            try:
                detail = client.tasks_get(task_id).task
            except NotFound:
                self.cards.pop(task_id, None)
            else:
                last = detail.summary.active_run or (detail.runs[0] if detail.runs else None)
                self.checked.add(task_id)
                self.put(client, detail.summary, last)
            self.dirty.discard(task_id)

    def load(self, client: Client) -> None:
        """Read every card afresh: the open tasks of each status, and the
        newest page of each closed status. The cards change only once all
        is read: a load that fails half way leaves the board as it was."""
        self.names.update(connected_names(client))
        cards: dict[str, Card] = {}
        for status in (*OPEN_STATUSES, *CLOSED_STATUSES):
            pages = OPEN_PAGES if status in OPEN_STATUSES else 1
            cursor = None
            for _ in range(pages):
                page = client.tasks_list(status=status, limit=PAGE, cursor=cursor, **self.filters)
                for item in page.tasks:
                    self.put(client, item, item.active_run, cards)
                cursor = page.next_cursor
                if cursor is None:
                    break
        self.cards, self.checked = cards, set()
        self.stale = False
        self.dirty.clear()

    def put(
        self,
        client: Client,
        item: p.TaskListItem,
        run: p.Run | None,
        cards: dict[str, Card] | None = None,
    ) -> None:
        """Set (or take off the board) the card of ``item`` in ``cards``
        (the board's own by default)."""
        cards = self.cards if cards is None else cards
        card = None
        if self.channel is None or item.network_channel == self.channel:
            card = card_of(item, self.agent(client, run))
        if card is None:
            cards.pop(item.id, None)
        else:
            cards[item.id] = card

    def agent(self, client: Client, run: p.Run | None) -> str | None:
        """The agent name for ``run``; a session not seen yet is looked
        up once through its run (``runs.get`` carries the session)."""
        sid = session_of(run)
        if run is not None and sid is not None and sid not in self.names:
            from agh.errors import NotFound

            try:
                session = client.runs_get(run.id).run.session
            except NotFound:
                session = None
            self.names[sid] = None if session is None else session.agent_name or session.name
        return run_agent(run, self.names)

    def enrich(self, client: Client, cards: Iterable[Card]) -> None:
        """Find the agent of closed cards about to be shown: ``tasks.list``
        has no run for a closed task, so its last run is read (once)."""
        for card in cards:
            if card.column not in CLOSED_COLUMNS or card.agent or card.task_id in self.checked:
                continue
            self.checked.add(card.task_id)
            runs = client.tasks_runs_list(card.task_id, limit=1).runs
            agent = self.agent(client, runs[0]) if runs else None
            if agent and card.task_id in self.cards:
                self.cards[card.task_id] = replace(card, agent=agent)


class Feed(threading.Thread):
    """The event stream, read by a thread on a connection of its own so the
    main thread can wait for keys, resizes and events in one select. Items
    and, at the end, the error that ended the stream go to ``items``;
    ``wake`` tells the main thread. A subscription dropped for falling
    behind is resumed after its last event."""

    def __init__(self, client: Client, filters: dict[str, str], wake: Callable[[], None]) -> None:
        super().__init__(name="agh-board-events", daemon=True)
        self.client = client
        self.filters = filters
        self.wake = wake
        self.items: queue.SimpleQueue[p.TimelineItem | Exception] = queue.SimpleQueue()
        self.stopped = threading.Event()
        sub = client.events_subscribe(**filters)  # before the load: nothing is missed
        self.subscription, self.last = sub.subscription, sub.after_sequence

    def stop(self) -> None:
        self.stopped.set()  # the thread closes its connection within POLL_S

    def run(self) -> None:
        from agh.errors import AghError

        try:
            while not self.stopped.is_set():
                try:
                    event = self.client.next_event(timeout=POLL_S)
                except TimeoutError:
                    continue
                if event.subscription != self.subscription:
                    continue
                if event.type == "overflow":
                    sub = self.client.events_subscribe(after_sequence=self.last, **self.filters)
                    self.subscription = sub.subscription
                    continue
                if event.type == "timeline" and event.timeline is not None:
                    self.last = max(self.last, event.timeline.sequence)
                    self.items.put(event.timeline)
                    self.wake()
        except (AghError, OSError) as exc:
            if not self.stopped.is_set():
                self.items.put(exc)
                self.wake()
        finally:
            self.client.close()


def open_client(path: str) -> Client:
    from agh.client import Client

    return Client(path, timeout=CALL_TIMEOUT_S)


# -- the live view ---------------------------------------------------------------------


class Live:
    """The board in the terminal until q or Ctrl-C."""

    def __init__(
        self,
        path: str,
        board: Board,
        *,
        title: str,
        limit: int | None,
        keep_closed_s: float,
    ) -> None:
        self.path = path
        self.board = board
        self.title = title
        self.limit = limit
        self.keep_closed_s = keep_closed_s
        self.client: Client | None = None
        self.feed: Feed | None = None
        self.problem = ""  # an error aghd gave; shown in the header until the next frame
        self.retry_at = 0.0
        self.last_draw = -1.0

    def run(self, client: Client, screen: Screen) -> None:
        self.screen = screen
        self.attach(client)
        while True:
            try:
                keys = screen.wait(self.timeout())
            except EOFError:  # the terminal is gone: nobody to show it to
                return
            if any(k in keys for k in QUIT_KEYS):
                return
            if "r" in keys:
                self.board.stale = True
            self.take_events()
            now = time.monotonic()
            if self.client is None and now >= self.retry_at:
                self.reconnect()
            if now - self.last_draw >= (FRAME_S if self.changed() else TICK_S):
                self.frame()

    def changed(self) -> bool:
        return self.screen.resized or (self.client is not None and self.board.pending)

    def timeout(self) -> float:
        now = time.monotonic()
        due = self.last_draw + (FRAME_S if self.changed() else TICK_S)
        if self.client is None:
            due = min(due, self.retry_at)
        return max(due - now, 0.0)

    # -- the connections ------------------------------------------------------------------

    def attach(self, client: Client) -> None:
        """Use ``client`` for reads, with a new stream on a second connection."""
        stream = open_client(self.path)
        try:
            feed = Feed(stream, self.board.filters, self.screen.wake)
        except BaseException:
            stream.close()
            raise
        feed.start()
        self.client, self.feed = client, feed
        self.board.stale = True

    def lost(self) -> None:
        """aghd went away: drop both connections and try again shortly."""
        if self.feed is not None:
            self.feed.stop()
        if self.client is not None:
            self.client.close()
        self.client, self.feed = None, None
        self.retry_at = time.monotonic() + RETRY_S
        self.last_draw = -1.0  # show "reconnecting…" now

    def reconnect(self) -> None:
        from agh.errors import AghError

        client: Client | None = None
        try:
            client = open_client(self.path)
            self.attach(client)
        except (AghError, OSError):
            if client is not None:
                client.close()
            self.client = None
            self.retry_at = time.monotonic() + RETRY_S

    def take_events(self) -> None:
        feed = self.feed
        while feed is not None:
            try:
                item = feed.items.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Exception):
                self.lost()
                return
            self.board.note(item)

    # -- drawing ---------------------------------------------------------------------------

    def frame(self) -> None:
        from agh.errors import AghError, DaemonUnreachable

        now = dt.datetime.now(dt.UTC)
        width, height = self.screen.size()
        self.screen.resized = False
        if self.client is not None:
            try:
                self.board.refresh(self.client)
                # Agents of the closed cards that can be on screen.
                visible = arrange(
                    self.board.cards.values(),
                    now=now,
                    keep_closed_s=self.keep_closed_s,
                    limit=min(self.limit or height, height),
                )
                self.board.enrich(self.client, (c for col in visible for c in col.cards))
                self.problem = ""
            except (DaemonUnreachable, OSError):
                self.lost()
            except AghError as exc:  # busy, say: shown, tried again next frame
                self.problem = f"aghd: {exc.message}"
        columns = arrange(
            self.board.cards.values(), now=now, keep_closed_s=self.keep_closed_s, limit=self.limit
        )
        if self.client is None:
            status, colour = "reconnecting…", "yellow"
        elif self.problem:
            status, colour = self.problem, "red"
        else:
            status, colour = f"{now.astimezone():%H:%M:%S}  q quits", None
        total = sum(c.total for c in columns)
        title = f"{self.title} · {total} task{'' if total == 1 else 's'}"
        self.screen.draw(
            render(
                columns,
                width,
                height,
                now=now,
                title=title,
                status=status,
                status_colour=colour,
            )
        )
        self.last_draw = time.monotonic()


# -- the command -----------------------------------------------------------------------


def print_snapshot(columns: Sequence[Column], now: dt.datetime, as_json: bool) -> None:
    if as_json:
        emit_json({"columns": columns})
        return
    rows = snapshot_rows(columns, now)
    if rows:
        click.echo(format_table(SNAPSHOT_HEADERS, rows, flex=2, width=terminal_width()))
    else:
        click.echo("no tasks on the board", err=True)
    for column in columns:
        hidden = column.total - len(column.cards)
        if hidden:
            click.echo(f"{column.name}: {hidden} more (raise --limit to see them)", err=True)


@click.command("board")
@click.option("--workspace", metavar="W", help="Only tasks of this workspace (path, id or key).")
@click.option("--channel", metavar="NAME", help="Only tasks on this network channel.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    metavar="N",
    help="At most N cards per column. [default: as many as fit; all with --once]",
)
@click.option(
    "--completed-for",
    "completed_for",
    type=click.FloatRange(0),
    default=3600.0,
    show_default="3600, an hour",
    metavar="SECONDS",
    help="Keep completed and failed cards this long after they closed (0: none).",
)
@click.option(
    "--once", is_flag=True, help="Print the board once as a table and exit (as in a pipe)."
)
@json_option
@click.pass_context
def board(
    ctx: click.Context,
    workspace: str | None,
    channel: str | None,
    limit: int | None,
    completed_for: float,
    once: bool,
    as_json: bool,
) -> None:
    """A live Kanban board of the tasks, in the terminal.

    One card per task (drafts aside) with its identifier, age (how long
    it has been in its column), title, the agent working on its run (its
    session's agent name) and a note:

    \b
      queued          pending (not started yet) and ready (a run queued)
      running         a run claimed, starting or running
      requires input  a person must act: approval pending (agh approve),
                      or its agent asked a question (agh send)
      blocked         waiting on dependencies, or one failed
      failed          failed and canceled tasks, newest first
      completed       completed tasks, newest first

    Failed and completed cards stay --completed-for seconds after they
    closed. The board follows aghd's event stream: a change shows within
    a tenth of a second, and only the tasks an event names are read
    again. Keys: q or Ctrl-C quits (exit 0), r reloads everything, Ctrl-Z suspends. A
    resize redraws at the new size. If aghd goes away the header says
    "reconnecting…" and the board reloads when aghd is back (it is not
    started again from here).

    When stdout or stdin is not a terminal, or with --once, it prints the
    board once as a table (COLUMN ID TITLE AGE AGENT NOTE) and exits 0;
    --json prints it as {"columns": [{"name", "total", "cards"}]}
    instead (and, like --once, never starts the live view).

    \b
    Example:
      agh board
      agh board --channel gpu --limit 5 --completed-for 600
      agh board --once | grep 'requires input'
    """
    import sys

    filters = {
        k: v
        for k, v in (("workspace", workspace_ref(workspace)), ("network_channel", channel))
        if v is not None
    }
    state = Board(filters, channel)
    live = not (once or as_json) and sys.stdin.isatty() and sys.stdout.isatty()
    with connect(ctx) as client:
        if live:
            run_live(ctx, client, state, title_of(workspace, channel), limit, completed_for)
            return
        state.load(client)
        now = dt.datetime.now(dt.UTC)

        def columns() -> list[Column]:
            return arrange(state.cards.values(), now=now, keep_closed_s=completed_for, limit=limit)

        state.enrich(client, (c for col in columns() for c in col.cards))
        print_snapshot(columns(), now, as_json)


def title_of(workspace: str | None, channel: str | None) -> str:
    parts = ["agh board"]
    if workspace:
        parts.append(f"workspace {workspace}")
    if channel:
        parts.append(f"channel {channel}")
    return " · ".join(parts)


def run_live(
    ctx: click.Context,
    client: Client,
    state: Board,
    title: str,
    limit: int | None,
    keep_closed_s: float,
) -> None:
    from agh.tui import Screen

    view = Live(socket_path(ctx), state, title=title, limit=limit, keep_closed_s=keep_closed_s)
    try:
        with Screen() as screen:
            try:
                view.run(client, screen)
            finally:
                if view.feed is not None:
                    view.feed.stop()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one leaves a live view: exit 0, like q
