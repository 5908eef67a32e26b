"""Retention (``event_retention_days``, ``log_retention_days``): the old
history of tasks closed long enough ago goes, a live task's never does, no
kept count moves, settings of 0 delete nothing, and a stream replayed
across a pruned range delivers what is left, in order.

History is made old by writing it through the store at a clock set 40 days
back (``StoreFile.now``), on a real file; the rule is then checked on the
store, through a real committer, and in a real daemon whose retention loop
prunes it by itself.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import aghd.retention
from aghd.committer import Committer
from aghd.store import claims, coordination, observe, tasks
from aghd.store import retention as retention_store
from aghd.store.coordination import NewLine
from aghd.store.db import Caller, now_ms
from aghd.store.models import ClaimFilters
from tests.helpers.daemons import ThreadDaemon, make_config
from tests.helpers.store import HUMAN, StoreFile, create, finish, run_of, token

if TYPE_CHECKING:
    from collections.abc import Callable

    from agh.client import Client
    from aghd.store.db import Tx

DAY = 86_400_000
RETENTION_DAYS = 30
CLOSED = ("completed", "failed", "canceled")


# -- a history with old and recent parts ------------------------------------------------


def agent(who: str) -> Caller:
    # An origin the wire knows (streams in the daemon test decode it).
    return Caller("agent_session", who, "agent_session", None, who)


def claim(store: StoreFile, who: str, lease_ms: int = 60_000) -> str:
    """Agent ``who`` claims the best queued run; its id."""
    got = store(
        claims.claim_next_run,
        agent(who),
        session_id=who,
        filters=ClaimFilters(),
        lease_ms=lease_ms,
        token_hash=token(who),
        idempotency_key=None,
        max_claims_per_session=0,
    )
    assert got is not None
    return str(got.run["id"])


def log_lines(store: StoreFile, who: str, run_id: str, n: int = 3) -> None:
    lines = [NewLine("info", f"{who} line {i}", None, None) for i in range(n)]
    store(coordination.append_logs, agent(who), run_id, token(who), lines, 10_000)


def build_history(store: StoreFile) -> dict[str, str]:
    """Tasks of every kind whose history is 40 days old, then recent ones; the
    clock ends at the real now (the daemon's retention cuts from it)."""
    store.now = now_ms() - 40 * DAY
    ids: dict[str, str] = {}
    # Each task is created and claimed alone, so the claim takes its run.
    ids["completed"] = create(store, "old, completed")
    claim(store, "c")
    log_lines(store, "c", run_of(store, ids["completed"]))
    finish(store, "c", run_of(store, ids["completed"]), "complete")
    ids["failed"] = create(store, "old, failed")
    claim(store, "f")
    log_lines(store, "f", run_of(store, ids["failed"]))
    finish(store, "f", run_of(store, ids["failed"]), "fail")
    ids["canceled"] = create(store, "old, canceled")
    store(tasks.cancel_tree, HUMAN, ids["canceled"], "not needed")
    # Live for 40 days: a claimed run still writing (a lease beyond the test).
    ids["running"] = create(store, "old, still running")
    claim(store, "r", lease_ms=60 * DAY)
    log_lines(store, "r", run_of(store, ids["running"]))
    ids["pending"] = create(store, "old, still pending", start=False)
    ids["deleted"] = create(store, "old, deleted", start=False)
    store(tasks.delete_task, HUMAN, ids["deleted"])
    # A task that ran for long and closed only recently.
    ids["closed_lately"] = create(store, "old, closed lately")
    claim(store, "l", lease_ms=60 * DAY)
    log_lines(store, "l", run_of(store, ids["closed_lately"]))
    # The inbox's kept counts follow triage of old tasks, closed and live.
    store(observe.set_triage, "human", "tester", ids["failed"], "read")
    store(observe.set_triage, "human", "tester", ids["completed"], "archive")
    store(observe.set_triage, "human", "tester", ids["pending"], "dismiss")

    store.now += 40 * DAY - 60_000
    ids["recent"] = create(store, "recent, completed")
    claim(store, "n")
    log_lines(store, "n", run_of(store, ids["recent"]))
    finish(store, "n", run_of(store, ids["recent"]), "complete")
    finish(store, "l", run_of(store, ids["closed_lately"]), "complete")
    store(tasks.update_task, HUMAN, ids["pending"], {"title": "old, still pending (renamed)"})
    store.now += 60_000
    return ids


def events_of(conn: sqlite3.Connection, task_id: str) -> list[int]:
    return [r[0] for r in conn.execute("SELECT seq FROM events WHERE task_id = ?", (task_id,))]


def logs_of(conn: sqlite3.Connection, task_id: str) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM run_logs WHERE task_id = ?", (task_id,))]


# -- what the triggers keep, against a recount ---------------------------------------------


def kept_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT tally, status, n FROM status_counts")
    return {(tally, status): n for tally, status, n in rows if n != 0}


def recounted(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """status_counts by their definition (tests/test_store_counts.py's rule)."""
    counts: dict[tuple[str, str], int] = {}
    for status, n in conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
        if status not in ("ready", "in_progress"):
            counts["task", status] = n
    for status, n in conn.execute("SELECT status, count(*) FROM runs GROUP BY status"):
        if status in CLOSED:
            counts["run", status] = n
    lane = observe._LANE.replace("t.", "")
    nobody = {"kind": "", "owner_ref": None}
    for name, n in conn.execute(f"SELECT {lane} AS l, count(*) FROM tasks GROUP BY l", nobody):
        if name in ("approvals", "failed_runs", "blocked"):
            counts["lane", name] = n
    return counts


def inbox_agrees(store: StoreFile) -> Any:
    """The kept inbox of the actor who triaged is the scanned one; returns it."""
    answers = []
    for fn in (observe._kept_inbox, observe._scanned_inbox):
        lanes = store(fn, observe.InboxQuery("human", "tester", limit=100))
        answers.append(
            {
                name: (lane.count, lane.unread, [e.task["id"] for e in lane.entries])
                for name, lane in lanes.items()
            }
        )
    assert answers[0] == answers[1]
    return answers[0]


def prune_all(
    store: StoreFile, fn: Callable[[Tx, int, int, int], retention_store.Window], walk: int
) -> int:
    cutoff = store.now - RETENTION_DAYS * DAY
    deleted, after = 0, 0
    while True:
        window = store(fn, cutoff, after, walk)
        deleted += window.deleted
        if window.done:
            return deleted
        assert window.cursor > after, "the walk must advance"
        after = window.cursor


# -- the rule, on the store ------------------------------------------------------------------


@pytest.mark.parametrize("walk", [1, 3, retention_store.WINDOW])
def test_old_history_of_long_closed_tasks_goes_and_the_rest_stays(
    store: StoreFile, walk: int
) -> None:
    ids = build_history(store)
    conn = store.conn
    before = {name: (events_of(conn, i), logs_of(conn, i)) for name, i in ids.items()}
    counts, inbox = kept_counts(conn), inbox_agrees(store)
    assert counts == recounted(conn)
    assert all(before[n][0] for n in ("completed", "failed", "canceled", "deleted"))
    assert all(before[n][1] for n in ("completed", "failed", "running", "closed_lately", "recent"))
    newest = store.value("SELECT max(seq) FROM events")

    events = prune_all(store, retention_store.prune_events, walk)
    logs = prune_all(store, retention_store.prune_run_logs, walk)

    after = {name: (events_of(conn, i), logs_of(conn, i)) for name, i in ids.items()}
    gone = ("completed", "failed", "canceled", "deleted")
    for name in gone:
        assert after[name][0] == [], name
    assert after["completed"][1] == after["failed"][1] == []
    for name in ("running", "pending", "closed_lately", "recent"):
        assert after[name] == before[name], name
    assert events == sum(len(before[n][0]) for n in gone)
    assert logs == len(before["completed"][1]) + len(before["failed"][1])
    assert store.value("SELECT max(seq) FROM events") == newest
    # No trigger reads events or run logs: every kept count is as it was,
    # and still the recount; the inbox too (its lanes list tasks, not events).
    assert kept_counts(conn) == counts == recounted(conn)
    assert inbox_agrees(store) == inbox
    # The tasks and runs themselves stay.
    assert store.value("SELECT count(*) FROM tasks") == len(ids) - 1
    # Run again: nothing more to delete.
    assert prune_all(store, retention_store.prune_events, walk) == 0
    assert prune_all(store, retention_store.prune_run_logs, walk) == 0


def test_the_newest_event_stays_even_when_it_is_old(store: StoreFile) -> None:
    # A hub idle for longer than the retention: its last event is old and of
    # a closed task, but the log's last sequence must not move back.
    store.now = now_ms() - 40 * DAY
    task_id = create(store, "the only task")
    claim(store, "a")
    finish(store, "a", run_of(store, task_id), "complete")
    store.now = now_ms()
    seqs = events_of(store.conn, task_id)
    assert len(seqs) >= 3
    assert prune_all(store, retention_store.prune_events, 2) == len(seqs) - 1
    assert events_of(store.conn, task_id) == [seqs[-1]]


def test_an_old_task_closed_within_the_retention_keeps_its_whole_history(
    store: StoreFile,
) -> None:
    ids = build_history(store)
    old = events_of(store.conn, ids["closed_lately"])
    prune_all(store, retention_store.prune_events, 10)
    assert events_of(store.conn, ids["closed_lately"]) == old
    # Once it has been closed for the retention, its old events go too (but
    # for the newest event of the whole log, which stays in any case).
    store.now += (RETENTION_DAYS + 1) * DAY
    newest = store.value("SELECT max(seq) FROM events")
    prune_all(store, retention_store.prune_events, 10)
    assert set(events_of(store.conn, ids["closed_lately"])) <= {newest}
    assert events_of(store.conn, ids["pending"]) != []


# -- the pass, through a real committer -------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_settings_of_zero_prune_nothing_and_a_change_applies_at_the_next_pass(
    tmp_path: Any,
) -> None:
    path = str(tmp_path / "agh.db")
    store = StoreFile(path)
    ids = build_history(store)
    store.close()
    config = make_config(str(tmp_path))
    config.db_path = path
    committer = Committer(path)
    before = sqlite3.connect(path)
    rows = before.execute("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM run_logs)")
    events, logs = rows.fetchone()
    before.close()
    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        assert config.event_retention_days == config.log_retention_days == 0
        assert await aghd.retention.prune(committer, config) == aghd.retention.Pruned(0, 0)
        # A live change of the Config (a reload) is read at the next pass.
        config.log_retention_days = RETENTION_DAYS
        pruned = await aghd.retention.prune(committer, config)
        assert pruned.events == 0 and pruned.logs > 0
        config.event_retention_days = RETENTION_DAYS
        pruned = await aghd.retention.prune(committer, config)
        assert pruned.events > 0 and pruned.logs == 0
        committer.close()
    committer.shutdown()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM run_logs").fetchone()[0] < logs
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] < events
    assert events_of(conn, ids["pending"]) and logs_of(conn, ids["running"])
    conn.close()


# -- in the daemon: the loop, and streams across what it pruned -----------------------------


def stored(db_path: str, task_id: str | None = None) -> list[int]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        if task_id is None:
            return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
        return events_of(conn, task_id)
    finally:
        conn.close()


def replay(client: Client, until: int) -> list[int]:
    """Sequences of the timeline notifications up to ``until``."""
    seen: list[int] = []
    while not seen or seen[-1] < until:
        event = client.next_event(timeout=5)
        assert event.type == "timeline", event
        assert event.timeline is not None and event.timeline.sequence == event.sequence
        seen.append(event.sequence)
    return seen


def test_the_daemon_prunes_by_itself_and_streams_replay_what_is_left(
    short_dir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(short_dir)
    store = StoreFile(config.db_path)
    ids = build_history(store)
    store.close()
    full = stored(config.db_path)
    completed = stored(config.db_path, ids["completed"])
    monkeypatch.setattr(aghd.retention, "START_DELAY_S", 0.0)
    config.event_retention_days = config.log_retention_days = RETENTION_DAYS
    caplog.set_level(logging.INFO, logger="aghd.retention")
    daemon = ThreadDaemon(config).start()
    try:
        # The pass logs once it is done with both tables.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "retention: deleted" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
        left = stored(config.db_path)
        assert stored(config.db_path, ids["completed"]) == []
        assert set(left) < set(full) and left[-1] == full[-1]
        assert any("retention: deleted" in r.getMessage() for r in caplog.records)
        with daemon.client() as c:
            # From the start: exactly the stored events, in order, gaps and all.
            c.events_subscribe(after_sequence=0)
            assert replay(c, left[-1]) == left
        with daemon.client() as c:
            # From a sequence inside the pruned range: on with the next stored
            # event; then live events follow.
            inside = completed[1]
            assert inside not in left
            c.events_subscribe(after_sequence=inside)
            assert replay(c, left[-1]) == [s for s in left if s > inside]
            with daemon.client() as w:
                w.tasks_create("after the pruning")
            (live,) = replay(c, left[-1] + 1)
            assert live > left[-1]
        with daemon.client() as c:
            # A task's own stream and timeline, where its history was pruned.
            mine = stored(config.db_path, ids["closed_lately"])
            assert mine and c.tasks_timeline(ids["closed_lately"]).timeline
            c.tasks_stream(ids["closed_lately"], after_sequence=0)
            assert replay(c, mine[-1]) == mine
    finally:
        daemon.stop()
