"""Fault injection: a full disk, a database locked by another program, a
directory aghd cannot write, a damaged database file, a second daemon
through another name for the same file. Each fault gets a clear error (or a
clear refusal to start) naming the problem and the next step; nothing
acknowledged is lost and no user file is overwritten."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh import errors
from agh.client import Client
from tests.helpers.daemons import spawn_daemon, stop_process
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from collections.abc import Iterator


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _refused(proc: subprocess.Popen[bytes]) -> str:
    """Wait for a daemon that must refuse to start; return its stderr."""
    try:
        _out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("aghd started although it should have refused")
    text = err.decode()
    assert proc.returncode not in (0, None), text
    assert "Traceback" not in text, text
    return text


@contextlib.contextmanager
def _tmpfs(path: str, options: str) -> Iterator[str]:
    """A real tmpfs mounted at ``path`` (root only; skipped elsewhere)."""
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", path], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


# -- disk full -----------------------------------------------------------------


def test_disk_full_is_busy_reads_go_on_and_it_recovers_by_itself(
    make_daemon: Any, short_dir: str
) -> None:
    with _tmpfs(os.path.join(short_dir, "small"), "size=4m,mode=0700") as mnt:
        d = make_daemon(db_path=os.path.join(mnt, "agh.db"))
        acked: list[str] = []
        with d.client() as c:
            for i in range(20):
                acked.append(c.tasks_create(f"before {i}", start=True).task.id)
            # Leave the file system a few KB: the next big writes cannot fit.
            balloon = os.path.join(mnt, "balloon")
            with open(balloon, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            full = None
            for i in range(200):
                try:
                    acked.append(c.tasks_create(f"filler {i}", description="x" * 60_000).task.id)
                except errors.Busy as exc:
                    full = exc
                    break
            assert full is not None, "the disk never filled up"
            assert full.details["cause"] == "disk_full"
            assert "full" in full.message and "free some space" in full.message
            assert "bug" not in full.message
            # Reads keep working while the disk is full.
            assert {t.id for t in c.tasks_list(limit=1000).tasks} >= set(acked)
            assert c.tasks_get(acked[0]).task.task.title == "before 0"
            with pytest.raises(errors.Busy):
                c.tasks_create("still full", description="y" * 60_000)
            # Space comes back: the very next write succeeds, no restart.
            os.unlink(balloon)
            after = c.tasks_create("after", description="z" * 60_000).task.id
            claim = c.claim_next().claim
            assert claim is not None and claim.task.id == acked[0]
            c.complete(claim.run.id, claim.claim_token, result={"ok": True})
            assert c.server_info().pid == os.getpid()
        d.stop()
        # Nothing acknowledged was lost, and the file is sound.
        conn = sqlite3.connect(os.path.join(mnt, "agh.db"))
        ids = {row[0] for row in conn.execute("SELECT id FROM tasks")}
        assert set(acked) | {after} <= ids
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


# -- another program holds the write lock --------------------------------------------


def test_locked_database_is_a_bounded_wait_then_busy(make_daemon: Any) -> None:
    d = make_daemon(busy_timeout_ms=400)
    with d.client() as c:
        kept = c.tasks_create("kept").task.id
        other = sqlite3.connect(d.config.db_path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(errors.Busy) as caught:
                c.tasks_create("while locked")
            waited = time.monotonic() - started
            assert 0.3 < waited < 5, waited
            assert caught.value.details["cause"] == "locked"
            assert "locked by another program" in caught.value.message
            assert "fuser" in caught.value.message
            # Reads are not held up (WAL), and the daemon answers.
            assert c.tasks_get(kept).task.task.id == kept
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert c.tasks_create("after the lock").task.title == "after the lock"


# -- start-up refusals ---------------------------------------------------------------


def test_unwritable_database_directory_is_refused_without_traceback(short_dir: str) -> None:
    ro = os.path.join(short_dir, "ro")
    if os.geteuid() == 0:
        # Root ignores permission bits; a read-only file system stops it.
        with _tmpfs(ro, "ro,size=1m"):
            err = _refused(spawn_daemon(os.path.join(short_dir, "s"), f"{ro}/agh.db", wait=False))
    else:
        os.makedirs(ro, mode=0o500)
        err = _refused(spawn_daemon(os.path.join(short_dir, "s"), f"{ro}/agh.db", wait=False))
    assert f"cannot open the database {ro}/agh.db" in err
    assert "writable" in err and "--db" in err


def _daemon_with_tasks(
    socket: str, db: str, procs: list[subprocess.Popen[bytes]], n: int = 300
) -> None:
    proc = spawn_daemon(socket, db)
    procs.append(proc)
    with Client(socket) as c:
        for i in range(n):
            c.tasks_create(f"task {i}", description="d" * 200)
    assert stop_process(proc) == 0


def _garbage_over_root_page(db: str, table: str) -> None:
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(os.urandom(page_size))


def test_damaged_database_is_refused_and_left_as_it_was(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    _daemon_with_tasks(sock, db, procs)
    _garbage_over_root_page(db, "tasks")
    before = _sha(db)
    err = _refused(spawn_daemon(sock, db, wait=False))
    assert f"the database {db} is damaged" in err
    assert ".recover" in err and "backup" in err
    assert _sha(db) == before, "aghd changed the damaged file"
    assert not os.path.exists(sock)


def test_file_that_is_not_a_database_is_refused_and_kept(short_dir: str) -> None:
    db = os.path.join(short_dir, "notes.db")
    with open(db, "wb") as f:
        f.write(b"my notes, not a database\n" * 400)
    before = _sha(db)
    err = _refused(spawn_daemon(os.path.join(short_dir, "s"), db, wait=False))
    assert f"cannot open {db}" in err and "damaged" in err
    assert _sha(db) == before


def test_integrity_check_can_be_skipped_to_read_what_is_left(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    """``--no-integrity-check`` serves a database the start-up check refuses
    (documented for reading what is left of a damaged one)."""
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    _daemon_with_tasks(sock, db, procs, n=3)
    _garbage_over_root_page(db, "events")
    assert "is damaged" in _refused(spawn_daemon(sock, db, wait=False))
    proc = spawn_daemon(sock, db, "--no-integrity-check")
    procs.append(proc)
    with Client(sock) as c:
        assert sorted(t.title for t in c.tasks_list().tasks) == ["task 0", "task 1", "task 2"]
    assert stop_process(proc) == 0


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_second_daemon_through_another_name_is_refused(
    short_dir: str, link: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    db = os.path.join(short_dir, "agh.db")
    procs.append(spawn_daemon(os.path.join(short_dir, "a.sock"), db))
    with Client(os.path.join(short_dir, "a.sock")) as c:
        c.tasks_create("first")
    other_dir = os.path.join(short_dir, "other")
    os.mkdir(other_dir, 0o700)
    alias = os.path.join(other_dir, "alias.db")
    if link == "hard":
        os.link(db, alias)
    else:
        os.symlink(db, alias)
    err = _refused(spawn_daemon(os.path.join(other_dir, "b.sock"), alias, wait=False))
    assert "already running" in err and str(procs[0].pid) in err
    assert not os.path.exists(alias + "-wal"), "the second daemon opened the database"
    with Client(os.path.join(short_dir, "a.sock")) as c:
        assert [t.title for t in c.tasks_list().tasks] == ["first"]


# -- damage found while serving ------------------------------------------------------


def test_damaged_event_ends_only_that_subscription(daemon: Any, client: Client) -> None:
    task = client.tasks_create("watched").task
    other = sqlite3.connect(daemon.config.db_path, isolation_level=None)
    other.execute("UPDATE events SET payload = 'not json {' WHERE task_id = ?", (task.id,))
    other.close()
    raw = RawConn(daemon.socket)
    try:
        raw.request("events.subscribe", {"after_sequence": 0}, id=1)
        assert "subscription" in raw.recv()["result"]
        final = raw.recv()
        assert final["method"] == "stream.event" and final["params"]["type"] == "error"
        assert final["params"]["error"]["code"] == -32603
        # The daemon lives on, on the same connection and on others.
        raw.request("server.info", id=2)
        assert raw.recv()["id"] == 2
        assert client.tasks_create("still serving").task.title == "still serving"
    finally:
        raw.close()


def test_garbage_page_while_serving_ends_the_subscription_not_the_daemon(
    daemon: Any, client: Client
) -> None:
    for i in range(50):
        client.tasks_create(f"t{i}", description="e" * 500)
    db = daemon.config.db_path
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _garbage_over_root_page(db, "events")
    # A commit by another connection makes aghd's connections drop their
    # page caches and read the damaged page from the file.
    other.execute("PRAGMA user_version = user_version")
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE sessions SET updated_at = updated_at")
    other.execute("COMMIT")
    other.close()
    raw = RawConn(daemon.socket)
    try:
        raw.request("events.subscribe", {"after_sequence": 0}, id=1)
        first = raw.recv()
        if "error" in first:  # the subscribe's own read met the damage
            assert first["error"]["code"] == -32603
        else:
            final = raw.recv()
            assert final["params"]["type"] == "error"
            assert "damaged" in final["params"]["error"]["message"]
        time.sleep(0.5)
        raw.request("server.info", id=2)
        assert raw.recv()["result"]["pid"] == os.getpid()
    finally:
        raw.close()


def test_writes_racing_a_held_lock_all_get_answers(make_daemon: Any) -> None:
    """Many writers while another program holds the lock: every one gets
    ``busy`` or success within the bounded wait, none hangs."""
    d = make_daemon(busy_timeout_ms=300)
    other = sqlite3.connect(d.config.db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        with d.client() as c:
            for i in range(3):
                try:
                    c.tasks_create(f"w{n}-{i}")
                    kind = "ok"
                except errors.Busy:
                    kind = "busy"
                with lock:
                    outcomes.append(kind)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    other.execute("ROLLBACK")
    other.close()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == 24
    assert "busy" in outcomes and "ok" in outcomes


def _start_log(sock: str, db: str, procs: list[subprocess.Popen[bytes]], log: str) -> str:
    """Start aghd at INFO into ``log``, stop it cleanly, return what it logged."""
    proc = spawn_daemon(sock, db, level="INFO", log=log)
    procs.append(proc)
    assert stop_process(proc) == 0
    with open(log, encoding="utf-8") as f:
        return f.read()


SKIPPED = "start-up check skipped"


def test_the_start_up_check_is_skipped_only_for_a_file_left_as_a_clean_stop_left_it(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    """The integrity check reads every page (seconds for a big hub): a start
    after a clean stop, with the file untouched since, skips it; a start
    after a crash, or once the file changed, checks."""
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    log = os.path.join(short_dir, "aghd.log")
    assert SKIPPED not in _start_log(sock, db, procs, log)  # a new file: checked
    mark = db + ".clean"
    assert os.path.exists(mark) and os.stat(mark).st_mode & 0o777 == 0o600
    assert SKIPPED in _start_log(sock, db, procs, log)
    # Anything that touched the file since: checked again.
    os.utime(db, ns=(time.time_ns(), time.time_ns()))
    assert SKIPPED not in _start_log(sock, db, procs, log)
    # A crash leaves no mark: the mark is gone as soon as aghd starts.
    proc = spawn_daemon(sock, db)
    procs.append(proc)
    assert not os.path.exists(mark)
    proc.kill()
    proc.wait()
    assert SKIPPED not in _start_log(sock, db, procs, log)


def test_damage_after_a_clean_stop_is_still_refused(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    _daemon_with_tasks(sock, db, procs)
    assert os.path.exists(db + ".clean")
    _garbage_over_root_page(db, "tasks")
    assert f"the database {db} is damaged" in _refused(spawn_daemon(sock, db, wait=False))


# -- aghd --check ---------------------------------------------------------------------------


def _check(db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aghd", "--check", "--db", db],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_passes_a_sound_database_while_its_daemon_serves(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    from aghd.store.schema import LATEST

    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    proc = spawn_daemon(sock, db)
    procs.append(proc)
    with Client(sock) as c:
        c.tasks_create("kept", start=True)
        done = _check(db)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{db}: ok, schema version {LATEST}"
        c.tasks_create("still served")  # the check took no lock that lasts
    assert stop_process(proc) == 0
    # Read-only: checking a stopped daemon's file leaves it byte for byte.
    before = _sha(db)
    assert _check(db).returncode == 0 and _sha(db) == before


def test_check_fails_on_garbage_after_the_sqlite_header(short_dir: str) -> None:
    db = os.path.join(short_dir, "garbage.db")
    with open(db, "wb") as f:
        f.write(b"SQLite format 3\x00" + os.urandom(16 * 4096))
    done = _check(db)
    assert done.returncode == 1
    assert f"{db} is damaged or not a database" in done.stderr and ".recover" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_names_what_is_damaged_and_a_missing_file(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    _daemon_with_tasks(sock, db, procs)
    _garbage_over_root_page(db, "tasks")
    before = _sha(db)
    done = _check(db)
    assert done.returncode == 1, done.stdout
    assert "damaged" in done.stderr and len(done.stderr.splitlines()) >= 3
    assert _sha(db) == before, "the check changed the file"
    missing = _check(os.path.join(short_dir, "none.db"))
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not os.path.exists(os.path.join(short_dir, "none.db"))


# -- a stop asked for during start-up -------------------------------------------------------


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (SigCgt)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_sigterm_during_start_up_stops_cleanly(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A stop asked for while aghd is still starting (here held up by a
    write lock another program holds on its database) waits until aghd
    can act on it, then stops it cleanly: exit 0, the clean-stop mark, no
    socket left. The default action would kill it outright."""
    sock, db = os.path.join(short_dir, "s"), os.path.join(short_dir, "agh.db")
    _daemon_with_tasks(sock, db, procs, n=1)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # aghd's start-up recovery write waits on it
    try:
        proc = spawn_daemon(sock, db, wait=False)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not _catches(proc.pid, signal.SIGTERM):
            assert proc.poll() is None and time.monotonic() < deadline, "SIGTERM never caught"
            time.sleep(0.01)
        assert not os.path.exists(sock)  # still starting
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert proc.wait(20) == 0
    assert os.path.exists(db + ".clean") and not os.path.exists(sock)
