"""The SQLite connection, the per-job transaction context, ids and times.

Owns: opening the database with the right pragmas, migrations on open, the
``Tx`` handed to every store function, id generation, the file-level checks
and copies (``check_file``, ``backup_database``). Must not: know about
sockets, JSON-RPC or the event loop (the committer drives it from a thread).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import msgspec

from agh.errors import AghError, Busy, Conflict, InternalError, InvalidParams, NotFound
from aghd.store.schema import migrate

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DatabaseDamaged(Exception):
    """``PRAGMA quick_check`` found the database file damaged."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def open_connection(
    path: str, synchronous: str = "FULL", busy_timeout_ms: int = 5000, *, check: bool = False
) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    With ``check``, a file ``PRAGMA quick_check`` finds damaged raises
    DatabaseDamaged before anything (a migration) writes to it.

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
    # How long a statement waits for another program's lock before SQLITE_BUSY
    # (which the client gets as a retryable ``busy``).
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    # Keep the WAL from growing without bound between checkpoints.
    conn.execute("PRAGMA journal_size_limit=67108864")
    if check:
        problems = integrity_problems(conn)
        if problems:
            conn.close()
            raise DatabaseDamaged(problems)
    migrate(conn)
    return conn


def integrity_problems(conn: sqlite3.Connection, most: int = 5, *, full: bool = False) -> list[str]:
    """What ``PRAGMA quick_check`` (``full``: ``integrity_check``) finds wrong
    (at most ``most``); [] when ok.

    quick_check reads every page and checks the b-trees' structure, not that
    indexes match their tables: linear in the file's size and several times
    faster than integrity_check, so it is the start-up check.
    """
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({int(most)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found


def recovery_steps(path: str) -> str:
    """What every message about a damaged database at ``path`` tells to do."""
    return (
        "keep a copy of the file, then recover it"
        f" (`sqlite3 {path} .recover | sqlite3 recovered.db`) and serve the copy"
        " (--db recovered.db), or restore a backup"
    )


def check_file(path: str, most: int = 10) -> tuple[int | None, list[str]]:
    """``aghd --check``: the schema version of the database at ``path`` and
    what the full integrity check finds wrong (at most ``most``; [] when
    ok), read-only, so it may run while a daemon serves the file. The
    version is None when the file is not a database at all."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return None, [str(exc)]
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        return version, integrity_problems(conn, most, full=True)
    except sqlite3.DatabaseError as exc:
        return None, [str(exc)]
    finally:
        conn.close()


# -- online backup ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What ``backup_database`` wrote."""

    path: str
    bytes: int
    schema_version: int
    # When the copy's snapshot was taken (ms since the epoch).
    taken_at: int
    duration_ms: int


_PATH_FIELD = "$.params.path"
# OS errors while writing the copy that pass by themselves (retry later),
# as opposed to a destination that can never work (invalid params).
_TRANSIENT = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN)


def backup_database(
    source: str, dest: str, *, replace: bool = False, busy_timeout_ms: int = 5000
) -> BackupReport:
    """Copy the database at ``source`` to the absolute path ``dest``, online.

    ``VACUUM INTO`` on a read-only connection of its own: one read
    transaction, so the copy is one consistent snapshot (every write
    committed before it started, nothing of a later one) and, in WAL
    mode, writers go on committing while it runs. The copy is written
    to a hidden temporary file (mode 0600: the database holds claim token
    hashes and everything the agents wrote) in ``dest``'s directory,
    fsynced, then linked (or, with ``replace``, renamed) into place and the
    directory fsynced: ``dest`` is either the whole copy or untouched. It
    is a plain rollback-journal database, one self-contained file.

    Raises InvalidParams (naming ``$.params.path``) for a destination that
    cannot work (no such directory, a directory, the served database
    itself, not writable), Conflict when ``dest`` exists and not
    ``replace``, Busy when the disk is full or failing (nothing written),
    and the storage error of a source that cannot be read.
    """
    directory, name = os.path.split(dest)
    if not name:
        raise _bad_path(dest, "names a directory, not a file", "end it with a file name")
    if not os.path.isdir(directory):
        raise _bad_path(
            dest,
            f"cannot be written: the directory {directory} does not exist",
            f"create it first (mkdir -p {directory}) or choose another path",
        )
    if os.path.isdir(dest):
        raise _bad_path(dest, "is a directory", f"name a file inside it ({dest}/agh-backup.db)")
    if _serves(source, dest):
        raise _bad_path(
            dest,
            "is the database aghd serves (or one of its -wal, -shm files)",
            "write the backup to another path",
        )
    if os.path.lexists(dest) and not replace:
        raise _exists(dest)
    started = time.monotonic()
    taken_at = now_ms()
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        # VACUUM INTO accepts an empty file and keeps its mode: created
        # 0600 here, whatever the umask, so the copy is never readable by
        # others, not even while it is being written.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise _write_error(dest, exc) from None
    try:
        src = sqlite3.connect(
            f"file:{urllib.parse.quote(source)}?mode=ro",
            uri=True,
            isolation_level=None,
            timeout=busy_timeout_ms / 1000,
            check_same_thread=False,
        )
        try:
            src.execute("VACUUM INTO ?", (tmp,))
        finally:
            src.close()
        copy = sqlite3.connect(f"file:{urllib.parse.quote(tmp)}?mode=ro", uri=True)
        try:
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
        finally:
            copy.close()
        # SQLite does not fsync what VACUUM INTO writes: do it before the
        # name points at it, so a crash leaves the old file or the whole copy.
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        _put_in_place(tmp, dest, replace=replace)
        _fsync_dir(directory)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(dest, exc) from None
        if isinstance(exc, sqlite3.Error):
            raise _copy_error(exc, source, dest) from None
        raise
    return BackupReport(dest, size, version, taken_at, int((time.monotonic() - started) * 1000))


def _serves(source: str, dest: str) -> bool:
    """Whether ``dest`` is the database file at ``source`` or a side file of it."""
    names = {source + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    real = os.path.realpath(dest)
    if real in {os.path.realpath(n) for n in names}:
        return True
    for other in names:
        with contextlib.suppress(OSError):
            if os.path.samefile(dest, other):
                return True
    return False


def _put_in_place(tmp: str, dest: str, *, replace: bool) -> None:
    if replace:
        os.replace(tmp, dest)
        return
    # A hard link never replaces: a file created at dest since the check
    # above is refused, not overwritten.
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise _exists(dest) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # A file system without hard links (vfat, some FUSE mounts).
        if os.path.lexists(dest):
            raise _exists(dest) from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a file system that cannot sync directories
            raise
    finally:
        os.close(fd)


def _bad_path(dest: str, what: str, hint: str) -> InvalidParams:
    return InvalidParams(
        f"backup path {dest} {what}; {hint}", {"field": _PATH_FIELD, "path": dest, "hint": hint}
    )


def _exists(dest: str) -> Conflict:
    hint = f"pass force to replace it (agh backup --force {dest}), or choose another path"
    return Conflict(
        f"{dest} already exists; nothing was written. To replace it: {hint}",
        {"field": _PATH_FIELD, "path": dest, "hint": hint},
    )


def _write_error(dest: str, exc: OSError) -> AghError:
    directory = os.path.dirname(dest)
    if exc.errno in _TRANSIENT:
        return Busy(
            f"cannot write the backup {dest} ({exc.strerror}); nothing was written: free some"
            f" space in {directory} (or check the disk), then retry",
            {"path": dest, "error": str(exc), "hint": "free disk space, then retry"},
        )
    return _bad_path(
        dest,
        f"cannot be written ({exc.strerror})",
        f"choose a directory this user can write, or fix the permissions of {directory}",
    )


def _copy_error(exc: sqlite3.Error, source: str, dest: str) -> AghError:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_FULL, _IOERR):
        return Busy(
            f"cannot write the backup {dest} ({exc}); nothing was written: free some space in"
            f" {os.path.dirname(dest)} (or check the disk), then retry",
            {"path": dest, "error": str(exc), "hint": "free disk space, then retry"},
        )
    return storage_error(exc, source, writing=False)


# -- what SQLite's errors mean to a client ------------------------------------

# Primary result codes (https://sqlite.org/rescode.html).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


def storage_error(exc: sqlite3.Error, path: str, *, writing: bool = True) -> AghError:
    """The client-facing error for a failed SQLite call on the database ``path``.

    Conditions outside aghd that pass (another program holding the write
    lock, a full disk, a read-only file, an I/O error) are ``busy``: nothing
    was saved and the same request is safe to retry once they are fixed. A
    damaged file is an internal error that says so and what to do; anything
    else is a bug.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    unsaved = "nothing was saved; " if writing else ""
    details: dict[str, object] = {"db": path, "error": str(exc)}
    if code in (_BUSY, _LOCKED):
        return Busy(
            f"the database {path} is locked by another program; {unsaved}retry, and if it "
            f"persists find the program holding it with `fuser {path}`",
            {**details, "cause": "locked", "hint": "retry later"},
        )
    if code == _FULL:
        return Busy(
            f"the disk holding {path} is full; {unsaved}free some space there, then retry "
            "(aghd goes on by itself once there is room)",
            {**details, "cause": "disk_full", "hint": "free disk space, then retry"},
        )
    if code in (_READONLY, _CANTOPEN):
        return Busy(
            f"aghd cannot write {path} ({exc}); {unsaved}check that the file and its "
            "directory exist and are writable by this user, then retry",
            {**details, "cause": "not_writable", "hint": "fix the permissions, then retry"},
        )
    if code == _IOERR:
        return Busy(
            f"I/O error on {path} ({exc}); {unsaved}check the disk (`dmesg`), then retry",
            {**details, "cause": "io_error", "hint": "check the disk, then retry"},
        )
    if code in (_CORRUPT, _NOTADB):
        return InternalError(
            f"the database {path} is damaged ({exc}); stop aghd, {recovery_steps(path)}",
            {**details, "cause": "corrupt", "hint": "recover or restore the database"},
        )
    return InternalError.from_exception(exc)


# -- ids --------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_id_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def id_prefix(ref: str, kind: str) -> str | None:
    """The id prefix ``ref`` stands for, or ``None`` when it cannot be one.

    Commands name a task or run by a unique prefix of its id, as git and
    docker do: ``task_01KBX3`` or just ``01KBX3`` (at least 4 characters of
    the id's Crockford base-32 part, case-insensitive). A full id is not a
    prefix (it was looked up exactly and not found)."""
    head = kind + "_"
    body = ref[len(head) :] if ref.startswith(head) else ref
    body = body.lower()
    if not 4 <= len(body) < 26 or any(c not in _CROCKFORD for c in body):
        return None
    return head + body


def ambiguous_prefix(kind: str, ref: str, matches: list[str]) -> NotFound:
    """A prefix that names several: list them, say how to pick one."""
    more = "" if len(matches) < PREFIX_CANDIDATES else " and more"
    return NotFound(
        f"{kind} prefix {ref} names several {kind}s: {', '.join(matches)}{more}",
        {
            kind: ref,
            "candidates": matches,
            "hint": f"give more characters of the {kind} id"
            + (", or the task's identifier (T-42)" if kind == "task" else ""),
        },
    )


# How many matches of an ambiguous prefix an error lists.
PREFIX_CANDIDATES = 10


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

    def for_session(self, session_id: str) -> Caller:
        """The agent session ``session_id`` acting from this caller's origin
        (a claim made for a session the caller names)."""
        return Caller("agent_session", session_id, self.origin_kind, self.origin_ref, session_id)


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
