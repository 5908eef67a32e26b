"""The daemon's own log: standard error, one line per event.

Formats (setting ``log_format``, flag ``--log-format``):

- ``text``: ``2026-12-02 16:30:00.123 INFO aghd: message``, for a terminal;
- ``journal``: ``<6>aghd: message``, the syslog priority prefix journald
  reads from a service's stderr and no timestamp (the journal keeps its
  own); ``auto`` picks it when stderr is the journal (``$JOURNAL_STREAM``);
- ``json``: one object per line: ``ts``, ``level``, ``logger``, ``msg``
  and, with a traceback, ``exc``.

A traceback is folded into its event's line (`` | `` between its lines), so
no line of the log stands alone without its level. Every message and
traceback is passed through ``redact`` (the rest of a line is our own
timestamp, level and logger name): a claim token is a bearer credential,
so none may reach a log, whatever a handler or a library put in it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

# A claim token as aghd.tokens makes them ("ct_" + 43 url-safe characters),
# and any value of a "claim_token" field, quoted (JSON, repr) or not.
_TOKEN = re.compile(r"ct_[A-Za-z0-9_-]{16,}")
_TOKEN_FIELD = re.compile(r"""(claim_token['"]?\s*[:=]\s*['"]?)[^'",}\s]+""")
REDACTED = "ct_<redacted>"

# syslog priorities (sd-daemon(3)): err, warning, info, debug.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_BY_LEVEL = sorted(_PRIORITY.items(), reverse=True)  # most severe first


def redact(line: str) -> str:
    """``line`` with every claim token replaced."""
    return _TOKEN_FIELD.sub(r"\1" + REDACTED, _TOKEN.sub(REDACTED, line))


def _fold(text: str) -> str:
    return " | ".join(part for part in text.splitlines() if part.strip())


class LineFormatter(logging.Formatter):
    """One redacted line per record in one of the formats above."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.style_name = fmt

    def format(self, record: logging.LogRecord) -> str:
        # Redacted before any quoting: JSON would escape a token's quotes.
        message = redact(record.getMessage())
        exc = self.formatException(record.exc_info) if record.exc_info else ""
        if record.stack_info:
            exc = (exc + "\n" + record.stack_info).strip()
        exc = redact(exc)
        if self.style_name == "json":
            doc = {
                "ts": _iso(record.created),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": message,
            }
            if exc:
                doc["exc"] = exc
            return json.dumps(doc, ensure_ascii=False)
        line = f"{record.name}: {message}"
        if exc:
            line += " | " + exc
        line = _fold(line)
        if self.style_name == "journal":
            return f"<{_priority(record.levelno)}>{line}"
        return f"{_local(record.created)} {record.levelname} {line}"


def _priority(levelno: int) -> int:
    for level, priority in _BY_LEVEL:
        if levelno >= level:
            return priority
    return 7


def _iso(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def _local(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + f".{millis:03d}"


def stderr_is_journal() -> bool:
    """Whether stderr is the journal's stream: systemd sets
    ``JOURNAL_STREAM=DEV:INODE`` for it, and a child whose stderr was
    redirected elsewhere keeps the variable, hence the comparison."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def resolve_format(fmt: str) -> str:
    """``auto`` as ``journal`` or ``text``; other formats as they are."""
    if fmt == "auto":
        return "journal" if stderr_is_journal() else "text"
    return fmt


_handler: logging.Handler | None = None


def configure(level: str, fmt: str) -> None:
    """Send the log to stderr at ``level`` in format ``fmt`` (``auto``,
    ``text``, ``journal``, ``json``); again on a reload, replacing the
    previous set-up."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        root.addHandler(_handler)
    _handler.setFormatter(LineFormatter(resolve_format(fmt)))
    root.setLevel(level.upper())
    # watchfiles reports every change it sees at INFO; ours says what changed.
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, root.level))
