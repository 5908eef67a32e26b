"""``server.backup`` and ``agh backup``: an online copy of the database,
consistent under write load and never holding writers up; private,
written whole, never overwriting unasked; clear errors for a path that
cannot work; and the restore procedure of docs/OPERATIONS.md, run as
written against a real daemon.

Real daemons (a subprocess where the daemon must be stopped and started by
the CLI, in-process elsewhere), real sockets in short temp dirs, real
SQLite files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agh.client import Client
from agh.errors import Conflict, DaemonUnreachable, InvalidParams, NotFound
from aghd.store import tasks
from aghd.store.schema import LATEST
from tests.helpers.cli import clean_environ, invoke
from tests.helpers.daemons import spawn_daemon
from tests.helpers.store import HUMAN, StoreFile, new_task

if TYPE_CHECKING:
    from aghd.store.db import Tx
    from tests.helpers.daemons import ThreadDaemon
    from tests.helpers.wire import RawConn

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
# Size of the database the load test copies (AGH_BACKUP_BENCH_MB=50 for
# the figures in docs/OPERATIONS.md).
BENCH_MB = int(os.environ.get("AGH_BACKUP_BENCH_MB", "24"))


def paths(directory: str) -> tuple[str, str]:
    return os.path.join(directory, "agh.sock"), os.path.join(directory, "agh.db")


def seed(db_path: str, megabytes: int) -> None:
    """About ``megabytes`` of pending tasks, written by the store in one
    transaction (the copy has something to take its time over)."""
    padding = "x" * 4000

    def fill(tx: Tx, n: int) -> None:
        for i in range(n):
            new = new_task(f"seed {i}", description=padding)
            tasks.create_and_start(tx, HUMAN, new, start=False, input_value=None)

    store = StoreFile(db_path)
    store(fill, megabytes * 220)
    store.close()


def open_copy(path: str) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True))


def status_counts_agree(conn: sqlite3.Connection) -> bool:
    """The counts the triggers keep are a recount of the copy's tasks and
    runs (a copy torn between two commits would disagree)."""
    kept = {
        (tally, status): n
        for tally, status, n in conn.execute("SELECT tally, status, n FROM status_counts")
        if n != 0 and tally in ("task", "run")
    }
    counted: dict[tuple[str, str], int] = {}
    for status, n in conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
        if status not in ("ready", "in_progress"):
            counted["task", status] = n
    for status, n in conn.execute("SELECT status, count(*) FROM runs GROUP BY status"):
        if status in ("completed", "failed", "canceled"):
            counted["run", status] = n
    return kept == counted


class Writer(threading.Thread):
    """A client creating, claiming and completing tasks in a loop, noting
    when each write was acknowledged and how long each call took."""

    def __init__(self, socket_path: str, n: int) -> None:
        super().__init__(name=f"writer-{n}", daemon=True)
        self.socket_path = socket_path
        self.n = n
        self.created: list[tuple[str, float]] = []  # (task id, acknowledged at)
        self.completed: list[tuple[str, float]] = []
        self.calls: list[tuple[float, float]] = []  # (sent, answered)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def timed(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        sent = time.monotonic()
        result = call(*args, **kwargs)
        self.calls.append((sent, time.monotonic()))
        return result

    def run(self) -> None:
        try:
            with Client(self.socket_path, agent_name=f"writer-{self.n}") as c:
                k = 0
                while not self.stop.is_set():
                    task = self.timed(c.tasks_create, f"w{self.n}-{k}", start=True).task
                    self.created.append((task.id, time.monotonic()))
                    claim = self.timed(c.claim_next).claim
                    if claim is not None:
                        self.timed(c.complete, claim.run.id, claim.claim_token, {"w": self.n})
                        self.completed.append((claim.task.id, time.monotonic()))
                    k += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def slowest(calls: list[tuple[float, float]], start: float, end: float, *, inside: bool) -> float:
    """The longest call that overlapped [start, end] (``inside``: that lay
    within it)."""
    return max(
        (
            b - a
            for a, b in calls
            if (a >= start and b <= end if inside else b >= start and a <= end)
        ),
        default=0.0,
    )


def test_a_backup_under_write_load_is_sound_has_every_acknowledged_task_and_does_not_stall(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    socket_path, db_path = paths(short_dir)
    seed(db_path, BENCH_MB)
    procs.append(spawn_daemon(socket_path, db_path))
    out = os.path.join(short_dir, "copy.db")
    writers = [Writer(socket_path, n) for n in range(3)]
    for w in writers:
        w.start()
    try:
        deadline = time.monotonic() + 20
        while any(len(w.completed) < 20 for w in writers) and time.monotonic() < deadline:
            assert not any(w.error for w in writers), [w.error for w in writers]
            time.sleep(0.01)
        quiet_start = time.monotonic()
        time.sleep(0.3)  # a stretch without a backup, to compare with
        began = time.monotonic()
        created_before = {t for w in writers for t, at in w.created if at < began}
        completed_before = {t for w in writers for t, at in w.completed if at < began}
        with Client(socket_path) as c:
            result = c.server_backup(out)
        ended = time.monotonic()
        time.sleep(0.1)
    finally:
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(10)
    assert not any(w.error for w in writers), [w.error for w in writers]
    with Client(socket_path) as c:
        late = c.tasks_create("created after the backup").task.id

    calls = [call for w in writers for call in w.calls]
    copy_s = ended - began
    # Writes sent after the copy began and answered within its first 80%:
    # a copy holding the write lock lets none through before it is done.
    during = [b for a, b in calls if began < a and b < began + 0.8 * copy_s]
    quiet = slowest(calls, quiet_start, began, inside=True)
    stall = slowest(calls, began, ended, inside=False)
    print(
        f"\nbackup of {result.bytes / 1e6:.1f} MB took {copy_s * 1000:.0f} ms"
        f" ({result.duration_ms} ms in aghd); {len(during)} writes went through meanwhile;"
        f" slowest write during it {stall * 1000:.1f} ms, without a backup {quiet * 1000:.1f} ms"
    )
    # The writers went on while the copy ran: a copy holding the write lock
    # would have let none through, and made one wait for all of it.
    assert during, f"no write went through in the first 80% of a {copy_s:.3f} s backup"
    assert stall < max(copy_s * 0.9, quiet * 3), (stall, copy_s)

    assert result.path == out and result.bytes == os.path.getsize(out)
    assert result.schema_version == LATEST and result.database == db_path
    with open_copy(out) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        status = dict(conn.execute("SELECT id, status FROM tasks").fetchall())
        assert status_counts_agree(conn)
    # Every task acknowledged before the backup began is in it, completed
    # if its completion was acknowledged by then; one made after it is not.
    assert created_before <= status.keys()
    assert all(status[t] == "completed" for t in completed_before)
    assert late not in status
    assert len(status) >= BENCH_MB * 220 + len(created_before)


def test_the_backup_is_private_whole_and_replaces_a_file_only_with_force(
    daemon: ThreadDaemon, client: Client, short_dir: str
) -> None:
    client.tasks_create("in the backup")
    out = os.path.join(short_dir, "backups", "agh.db")
    os.mkdir(os.path.dirname(out))
    old = os.umask(0o022)  # what would make a plain new file 0644
    try:
        first = client.server_backup(out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert first.bytes == os.path.getsize(out) > 0
    # A plain single file: no -wal or -journal next to it, nor a temporary file.
    assert os.listdir(os.path.dirname(out)) == ["agh.db"]
    with open_copy(out) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    # An existing file is refused and left exactly as it was.
    with open(out, "wb") as f:
        f.write(b"an older backup")
    os.chmod(out, 0o644)
    with pytest.raises(Conflict) as refused:
        client.server_backup(out)
    assert "already exists" in refused.value.message
    assert "--force" in refused.value.details["hint"]
    assert Path(out).read_bytes() == b"an older backup"
    assert os.listdir(os.path.dirname(out)) == ["agh.db"]

    # With force it is replaced by a whole copy, private again.
    client.tasks_create("in the second backup only")
    second = client.server_backup(out, force=True)
    assert second.path == out and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with open_copy(out) as conn:
        titles = {r[0] for r in conn.execute("SELECT title FROM tasks")}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert titles == {"in the backup", "in the second backup only"}
    assert os.listdir(os.path.dirname(out)) == ["agh.db"]


def test_a_path_that_cannot_work_is_a_clear_error(
    daemon: ThreadDaemon, raw: RawConn, client: Client, short_dir: str
) -> None:
    raw.request("server.backup", {"path": "relative/agh.db"})
    error = raw.recv()["error"]
    assert error["code"] == -32602 and error["data"]["kind"] == "invalid_params"
    assert error["data"]["details"]["field"] == "$.params.path"
    assert "absolute" in error["message"]

    raw.request("server.backup", {"path": os.path.join(short_dir, "x.db"), "overwrite": True})
    assert raw.recv()["error"]["code"] == -32602  # a typo of force fails loudly

    missing = os.path.join(short_dir, "no", "such", "dir", "agh.db")
    with pytest.raises(InvalidParams) as exc:
        client.server_backup(missing)
    assert exc.value.details["field"] == "$.params.path"
    assert "does not exist" in exc.value.message and "mkdir -p" in exc.value.message
    assert not os.path.exists(os.path.dirname(missing))

    for wrong in (short_dir, daemon.config.db_path, daemon.config.db_path + "-wal"):
        with pytest.raises(InvalidParams) as exc:
            client.server_backup(wrong, force=True)
        assert exc.value.details["field"] == "$.params.path", wrong
    # The database the daemon serves was not touched by any of that.
    assert client.tasks_list().tasks == [] and os.path.getsize(daemon.config.db_path) > 0

    # A directory this user cannot write in: one of mode 0500, or, for root
    # (who writes anywhere else), sysfs.
    locked = os.path.join(short_dir, "locked")
    os.mkdir(locked, 0o500)
    if os.access(locked, os.W_OK):
        locked = "/sys"
    try:
        with pytest.raises(InvalidParams) as exc:
            client.server_backup(os.path.join(locked, "agh-backup.db"))
        assert "permission denied" in exc.value.message.lower()
        assert exc.value.details["field"] == "$.params.path"
    finally:
        if locked != "/sys":
            os.chmod(locked, 0o700)


def test_agh_backup_end_to_end(
    daemon: ThreadDaemon, client: Client, short_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.tasks_create("backed up by the CLI")
    monkeypatch.chdir(short_dir)

    def agh(*args: str) -> Any:
        return invoke("--socket", daemon.socket, *args)

    done = agh("backup", "cli.db")  # relative: resolved against the cwd
    path = os.path.join(short_dir, "cli.db")
    assert done.exit_code == 0, done.stderr
    fields = dict(re.findall(r"^([a-z ]+): +(.*)$", done.stdout, re.M))
    assert fields["backup"] == path and fields["schema version"] == str(LATEST)
    assert f"({os.path.getsize(path)} bytes)" in fields["size"]
    assert "restore" in done.stderr and "agh(1)" in done.stderr
    with open_copy(path) as conn:
        assert conn.execute("SELECT title FROM tasks").fetchall() == [("backed up by the CLI",)]

    again = agh("backup", path)
    assert again.exit_code == 4 and "already exists" in again.stderr
    assert "agh backup --force" in again.stderr

    forced = agh("backup", "--force", "--json", "cli.db")
    assert forced.exit_code == 0, forced.stderr
    got = json.loads(forced.stdout)
    assert got["path"] == path and got["bytes"] == os.path.getsize(path)
    assert set(got) == {"path", "bytes", "schema_version", "database", "taken_at", "duration_ms"}

    bad = agh("backup", os.path.join(short_dir, "nowhere", "x.db"))
    assert bad.exit_code == 2 and "does not exist" in bad.stderr


# -- the documented procedure, run as written ------------------------------------------------


def doc_blocks() -> list[str]:
    """The shell blocks of the "Backup and restore" section of OPERATIONS.md."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Backup and restore\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_documented_backup_and_restore_procedure_works_as_written(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    backup_block, restore_block = doc_blocks()
    socket_path, db_path = paths(short_dir)
    home = os.path.join(short_dir, "home")
    os.mkdir(home, 0o700)
    env = clean_environ(
        HOME=home,
        AGH_SOCKET=socket_path,
        AGH_DB=db_path,
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    env.pop("XDG_STATE_HOME", None)

    def bash(script: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, (script, done.stdout, done.stderr)
        return done

    procs.append(spawn_daemon(socket_path, db_path))
    with Client(socket_path, agent_name="doc") as c:
        kept = c.tasks_create("exists at the backup", start=True).task.id
        claim = c.claim_next().claim
        assert claim is not None and claim.task.id == kept
        c.complete(claim.run.id, claim.claim_token, {"ok": True})
        pending = c.tasks_create("pending at the backup").task.id

    took = bash(backup_block)
    backup = os.path.join(home, "agh-backup.db")
    assert backup in took.stdout and os.path.isfile(backup)

    with Client(socket_path) as c:
        late = c.tasks_create("created after the backup").task.id
        c.tasks_cancel(pending)
    restored_pid = None
    try:
        restored = bash(restore_block)
        assert "ok, schema version" in restored.stdout
        assert procs[0].wait(10) == 0  # `agh daemon stop` stopped the first one cleanly
        with Client(socket_path) as c:
            restored_pid = c.server_info().pid
            assert restored_pid != procs[0].pid
            assert c.tasks_get(kept).task.task.status == "completed"
            assert c.tasks_get(pending).task.task.status == "pending"  # not canceled
            with pytest.raises(NotFound):
                c.tasks_get(late)
            assert {t.id for t in c.tasks_list().tasks} == {kept, pending}
        # What it replaced is kept aside, the task created late included.
        with open_copy(db_path + ".before-restore") as conn:
            assert conn.execute("SELECT 1 FROM tasks WHERE id = ?", (late,)).fetchone()
    finally:
        if restored_pid is None:
            with contextlib.suppress(DaemonUnreachable), Client(socket_path) as c:
                restored_pid = c.server_info().pid
        if restored_pid is not None and restored_pid != procs[0].pid:
            stop_detached(restored_pid)


def stop_detached(pid: int) -> None:
    """Stop the aghd `agh daemon start` left running (not our child)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"aghd {pid} did not stop on SIGTERM")
