"""The SQLite connection, the per-job transaction context, ids and times.

Owns: opening the database with the right pragmas, migrations on open, the
``Tx`` handed to every store function, id generation. Must not: know about
sockets, JSON-RPC or the event loop (the committer drives it from a thread).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from aghd.store.schema import migrate

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def open_connection(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    ``isolation_level=None`` hands transaction control to us: every write
    happens inside an explicit ``BEGIN IMMEDIATE`` owned by the committer.
    """
    if synchronous.upper() not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    # Keep the WAL from growing without bound between checkpoints.
    conn.execute("PRAGMA journal_size_limit=67108864")
    migrate(conn)
    return conn


# -- ids --------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_id_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def new_id(prefix: str) -> str:
    """A sortable id: ``prefix_`` + 10 chars of ms time + 16 chars of randomness.

    Within one millisecond the random part increases by one (monotonic ULID),
    so ids made by this process sort in creation order.
    """
    global _last_ms, _last_rand
    with _id_lock:
        ms = now_ms()
        if ms <= _last_ms:
            ms = _last_ms
            _last_rand += 1
        else:
            _last_ms = ms
            _last_rand = secrets.randbits(79)
        value = (ms << 80) | _last_rand
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "_" + "".join(reversed(chars))


# -- the per-job context -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the actor recorded on events and claims, and their origin."""

    actor_kind: str
    actor_ref: str | None
    origin_kind: str
    origin_ref: str | None = None
    session_id: str | None = None


DAEMON = Caller("automation", "aghd", "daemon", None)


@dataclass(slots=True)
class Committed:
    """What a transaction did that the daemon must react to after commit."""

    # (seq, event_type, task_id, run_id): for stream subscribers.
    events: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)
    # A run became claimable (wake long-polling claimers).
    work: bool = False
    # Earliest new deadline (lease expiry or delayed run) for the scheduler.
    deadline: int | None = None

    def merge(self, other: Committed) -> None:
        self.events.extend(other.events)
        self.work = self.work or other.work
        if other.deadline is not None and (self.deadline is None or other.deadline < self.deadline):
            self.deadline = other.deadline


class Tx:
    """One job's view of the open transaction: SQL helpers plus side effects."""

    __slots__ = ("conn", "effects", "now")

    def __init__(self, conn: sqlite3.Connection, now: int) -> None:
        self.conn = conn
        self.now = now
        self.effects = Committed()

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Any = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def emit(
        self,
        event_type: str,
        caller: Caller,
        *,
        task_id: str | None,
        run_id: str | None = None,
        payload: Any = None,
        touch: bool = True,
    ) -> int:
        """Write one event in this transaction and return its sequence.

        ``touch`` bumps the task's ``last_activity_at``; pass False when the
        caller's own UPDATE of the task already set it (the hot paths do,
        saving a statement per event).
        """
        cur = self.conn.execute(
            "INSERT INTO events (event_type, task_id, run_id, actor_kind, actor_ref,"
            " origin_kind, origin_ref, payload, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                event_type,
                task_id,
                run_id,
                caller.actor_kind,
                caller.actor_ref,
                caller.origin_kind,
                caller.origin_ref,
                None if payload is None else _json_encode(payload).decode(),
                self.now,
            ),
        )
        seq = cur.lastrowid
        assert seq is not None
        if touch and task_id is not None:
            self.conn.execute(
                "UPDATE tasks SET last_activity_at = ? WHERE id = ?", (self.now, task_id)
            )
        self.effects.events.append((seq, event_type, task_id, run_id))
        return seq

    def wake_claimers(self) -> None:
        self.effects.work = True

    def deadline(self, at_ms: int) -> None:
        d = self.effects.deadline
        if d is None or at_ms < d:
            self.effects.deadline = at_ms


def event_id(seq: int) -> str:
    """The wire id of the event with sequence ``seq`` (sortable, like seq)."""
    return f"evt_{seq:012d}"


def to_json(value: Any) -> str | None:
    return None if value is None else _json_encode(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else _json_decode(text)
