"""How ``agh`` prints: tables sized to the terminal, aligned fields, JSON,
relative ages and colour.

Colour only when stdout is a terminal and ``NO_COLOR`` is unset
(https://no-color.org); a table's widest flexible column is cut to the
terminal's width on a terminal and left whole in a pipe, so ``agh ls | grep``
sees full titles. Owns: formatting. Must not: connect or exit.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agh import protocol as p

# Status → colour: green done, red failed, yellow waiting on someone, cyan
# in flight. Statuses of tasks, runs and sessions share the names.
STATUS_COLOURS = {
    "completed": "green",
    "failed": "red",
    "canceled": "bright_black",
    "blocked": "yellow",
    "pending": "yellow",
    "draft": "bright_black",
    "ready": "blue",
    "queued": "blue",
    "in_progress": "cyan",
    "claimed": "cyan",
    "starting": "cyan",
    "running": "cyan",
    "active": "green",
    "disconnected": "yellow",
    "ended": "bright_black",
    # Health verdicts (dashboard, daemon status).
    "ok": "green",
    "warning": "yellow",
    "critical": "red",
}


def colour_enabled() -> bool:
    """Colour on stdout: a terminal, and no ``NO_COLOR`` (any value)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout
    return stream is not None and stream.isatty()


def paint(text: str, colour: str | None, *, bold: bool = False) -> str:
    """``text`` in ``colour`` when colour is enabled, else unchanged."""
    if colour is None or not colour_enabled():
        return text
    return click.style(text, fg=colour, bold=bold)


def status_text(status: str) -> str:
    return paint(status, STATUS_COLOURS.get(status))


def terminal_width() -> int | None:
    """The terminal's width when stdout is one, else ``None`` (no cutting)."""
    stream = sys.stdout
    if stream is None or not stream.isatty():
        return None
    import shutil  # on a terminal only; a pipe, the common case, needs none

    return shutil.get_terminal_size((100, 24)).columns


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp of the protocol (``…T…Z``) as aware UTC."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: str | None, now: dt.datetime | None = None) -> str:
    """``12s ago``, ``3m ago``, ``5h ago``, ``2d ago``; ``-`` for none.
    A time ahead of now (a lease end) reads ``in 4m``."""
    when = parse_time(value)
    if when is None:
        return "-"
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((now - when).total_seconds())
    ahead = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size or unit == "s":
            amount = f"{seconds // size}{unit}"
            break
    return f"in {amount}" if ahead else f"{amount} ago"


def actor_text(actor: p.Actor | None) -> str:
    if actor is None:
        return "-"
    return f"{actor.kind}:{actor.ref}" if actor.ref else actor.kind


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, with an ellipsis when cut."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    flex: int | None = None,
    width: int | None = None,
) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded.

    With ``flex`` (a column index) and ``width``, that column is cut with an
    ellipsis so each line fits ``width``; never below 12 characters. Cells
    may carry colour: widths count the visible characters only."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))
    if flex is not None and width is not None:
        others = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (len(widths) - 1)
        room = max(12, width - others)
        if widths[flex] > room:
            widths[flex] = room
            rows = [
                [shorten(c, room) if i == flex else c for i, c in enumerate(row)] for row in rows
            ]
    lines = []
    for row in (headers, *rows):
        cells = [pad(cell, widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def visible_len(text: str) -> int:
    return len(click.unstyle(text)) if "\x1b" in text else len(text)


def pad(text: str, width: int) -> str:
    return text + " " * (width - visible_len(text))


def format_fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``Label:  value`` lines, values aligned; ``None`` shows as ``-``."""
    width = max(len(label) for label, _ in pairs) + 1
    lines = []
    for label, value in pairs:
        text = "-" if value is None or value == "" else str(value)
        lines.append(f"{label + ':':<{width}}  {text}")
    return "\n".join(lines)


def json_text(value: Any) -> str:
    import msgspec  # not needed to build --help

    return msgspec.json.encode(value).decode()


def emit_json(value: Any) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(json_text(value))


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def payload_summary(payload: Any, width: int = 80) -> str:
    """An event payload as compact JSON on one line, cut to ``width``."""
    if payload is None or payload == {}:
        return "-"
    return shorten(json_text(payload), width)


def duration(ms: int | None) -> str:
    """``850ms``, ``12s``, ``5m03s``, ``2h10m``, ``3d04h``; ``-`` for none."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"
