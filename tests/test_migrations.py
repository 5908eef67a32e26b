"""Schema migrations and the claim query's plan."""

from __future__ import annotations

import os
import re
import sqlite3
from typing import Any

import pytest

from aghd.store import schema
from aghd.store.claims import claim_query
from aghd.store.db import now_ms, open_connection
from aghd.store.models import ClaimFilters


def _v1_database(path: str) -> None:
    """A database as migration 1 left it, with two tasks and a queued run."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert schema.migrate(conn, target=1) == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        now = 1_700_000_000_000
        for n, (tid, title, status) in enumerate(
            [
                ("task_01legacy0000000000000000a", "legacy one", "ready"),
                ("task_01legacy0000000000000000b", "legacy two", "pending"),
            ],
            start=1,
        ):
            conn.execute(
                "INSERT INTO tasks (id, identifier, title, scope, priority, max_attempts, status,"
                " created_at, updated_at, last_activity_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (tid, f"T-{n}", title, "global", "high", 1, status, now, now, now),
            )
        conn.execute("UPDATE meta SET value = 2 WHERE key = 'task_number'")
        conn.execute(
            "INSERT INTO runs (id, task_id, status, attempt, max_attempts, priority_rank,"
            " queued_at, available_at, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                "run_01legacy00000000000000000",
                "task_01legacy0000000000000000a",
                "queued",
                0,
                1,
                2,
                now,
                now,
                now,
            ),
        )
    finally:
        conn.close()


def test_open_migrates_old_database_and_keeps_data(short_dir: str) -> None:
    path = os.path.join(short_dir, "old.db")
    _v1_database(path)
    conn = open_connection(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        rows = conn.execute(
            "SELECT id, identifier, title, status FROM tasks ORDER BY id"
        ).fetchall()
        assert [tuple(r) for r in rows] == [
            ("task_01legacy0000000000000000a", "T-1", "legacy one", "ready"),
            ("task_01legacy0000000000000000b", "T-2", "legacy two", "pending"),
        ]
        run = conn.execute("SELECT task_id, status FROM runs").fetchone()
        assert tuple(run) == ("task_01legacy0000000000000000a", "queued")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    # Opening again is a no-op.
    conn = open_connection(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 2
    finally:
        conn.close()


def test_daemon_serves_an_old_database(short_dir: str, make_daemon: Any) -> None:
    _v1_database(os.path.join(short_dir, "agh.db"))  # make_daemon's db path
    d = make_daemon()
    with d.client() as c:
        legacy = c.tasks_get("T-1").task.task
        assert legacy.title == "legacy one" and legacy.priority == "high"
        assert c.tasks_create("new one").task.identifier == "T-3"
        claim = c.claim_next().claim
        assert claim is not None and claim.run.id == "run_01legacy00000000000000000"
        assert c.complete(claim.run.id, claim.claim_token).lease.status == "completed"


def test_fresh_database_is_at_latest(short_dir: str) -> None:
    conn = open_connection(os.path.join(short_dir, "fresh.db"))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"runs_claim", "runs_claim_channel", "runs_one_open_per_task"} <= names
    finally:
        conn.close()


def test_newer_database_is_refused(short_dir: str) -> None:
    path = os.path.join(short_dir, "future.db")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.LATEST + 1}")
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        open_connection(path)
    conn = sqlite3.connect(path)
    try:
        # Refused without writing anything.
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST + 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"from_the_future"}
    finally:
        conn.close()


def test_failed_migration_rolls_back(short_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that breaks half-way leaves no trace and no version bump."""
    path = os.path.join(short_dir, "broken.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        schema.migrate(conn)
        broken = "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n"
        monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
        monkeypatch.setattr(schema, "LATEST", schema.LATEST + 1)
        with pytest.raises(sqlite3.OperationalError):
            schema.migrate(conn, target=schema.LATEST)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST - 1
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[
                0
            ]
            == 0
        )
    finally:
        conn.close()


def _plan(conn: sqlite3.Connection, filters: ClaimFilters) -> str:
    sql, args = claim_query(filters, now_ms())
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
    return "\n".join(str(r[3]) for r in rows)


@pytest.fixture
def populated(short_dir: str) -> Any:
    conn = open_connection(os.path.join(short_dir, "plan.db"))
    now = now_ms()
    for i in range(50):
        tid = f"task_{i:026d}"
        conn.execute(
            "INSERT INTO tasks (id, identifier, title, scope, priority, max_attempts, status,"
            " created_at, updated_at, last_activity_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (tid, f"T-{i}", "t", "global", "medium", 1, "ready", now, now, now),
        )
        conn.execute(
            "INSERT INTO runs (id, task_id, status, attempt, max_attempts, priority_rank,"
            " network_channel, queued_at, available_at, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                f"run_{i:026d}",
                tid,
                "queued" if i % 3 else "completed",
                0,
                1,
                i % 4,
                "gpu" if i % 2 else None,
                now + i,
                now + i,
                now,
            ),
        )
    yield conn
    conn.close()


def test_claim_query_uses_runs_claim_index(populated: sqlite3.Connection) -> None:
    plan = _plan(populated, ClaimFilters())
    assert re.search(r"\bINDEX runs_claim\b(?!_)", plan), plan
    assert "TEMP B-TREE" not in plan, plan


def test_channel_claim_query_uses_channel_index(populated: sqlite3.Connection) -> None:
    plan = _plan(populated, ClaimFilters(network_channel="gpu"))
    assert re.search(r"\bINDEX runs_claim_channel\b", plan), plan
    assert "TEMP B-TREE" not in plan, plan


def test_claim_query_picks_the_right_run(populated: sqlite3.Connection) -> None:
    now = now_ms() + 1000
    sql, args = claim_query(ClaimFilters(), now)
    best = populated.execute(sql, args).fetchone()[0]
    expected = populated.execute(
        "SELECT id FROM runs WHERE status = 'queued' AND available_at <= ?"
        " ORDER BY priority_rank DESC, queued_at, id LIMIT 1",
        (now,),
    ).fetchone()[0]
    assert best == expected
    sql, args = claim_query(ClaimFilters(network_channel="gpu"), now)
    best_gpu = populated.execute(sql, args).fetchone()[0]
    assert populated.execute(
        "SELECT network_channel, status FROM runs WHERE id = ?", (best_gpu,)
    ).fetchone()[:] == ("gpu", "queued")


def test_migration_5_backfills_the_run_tallies(short_dir: str) -> None:
    """Tasks' tallies of ended runs (the filtered dashboard's run totals and
    forced stops) are counted from the runs and claims already stored, and
    runs get their task's workspace."""
    path = os.path.join(short_dir, "m4.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert schema.migrate(conn, target=4) == 4
        now = 1_700_000_000_000
        for n, tid in enumerate(("task_a", "task_b"), start=1):
            conn.execute(
                "INSERT INTO tasks (id, identifier, title, scope, priority, max_attempts, status,"
                " created_at, updated_at, last_activity_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (tid, f"T-{n}", tid, "global", "high", 3, "failed", now, now, now),
            )
        conn.execute(
            "INSERT INTO workspaces (id, key, name, path, created_at)"
            " VALUES ('ws_1', 'W', 'w', '/w', 0)"
        )
        conn.execute(
            "UPDATE tasks SET workspace_id = 'ws_1', scope = 'workspace' WHERE id = 'task_b'"
        )
        # task_a: completed, canceled, failed by its agent, failed by expiry
        # (last claim), failed by an operator after an earlier expiry; task_b: queued.
        runs = [
            ("r1", "task_a", "completed", ["completed"]),
            ("r2", "task_a", "canceled", []),
            ("r3", "task_a", "failed", ["failed"]),
            ("r4", "task_a", "failed", ["failed", "expired"]),
            ("r5", "task_a", "failed", ["expired", "failed_by_operator"]),
            ("r6", "task_b", "queued", ["released"]),
        ]
        for rid, tid, status, claims in runs:
            ended = None if status == "queued" else now
            conn.execute(
                "INSERT INTO runs (id, task_id, status, max_attempts, priority_rank, queued_at,"
                " available_at, ended_at, created_at) VALUES (?,?,?,3,2,?,?,?,?)",
                (rid, tid, status, now, now, ended, now),
            )
            for attempt, reason in enumerate(claims, start=1):
                conn.execute(
                    "INSERT INTO claims (run_id, attempt, token_hash, claimed_at, ended_at,"
                    " end_reason) VALUES (?,?,?,?,?,?)",
                    (rid, attempt, "h", now, now, reason),
                )
    finally:
        conn.close()
    conn = open_connection(path)
    try:
        tallies = conn.execute(
            "SELECT id, runs_completed, runs_failed, runs_canceled, runs_forced FROM tasks"
            " ORDER BY id"
        ).fetchall()
        assert [tuple(t) for t in tallies] == [("task_a", 1, 3, 1, 2), ("task_b", 0, 0, 0, 0)]
        # Runs carry their task's workspace (for their coordination channel).
        placed = conn.execute("SELECT id, workspace_id FROM runs WHERE id IN ('r1', 'r6')")
        assert sorted(tuple(r) for r in placed) == [("r1", None), ("r6", "ws_1")]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "tasks_facets" in names
        assert not {"tasks_workspace_status", "runs_closed_task"} & names
        # Migration 8 counts what it found, and drops what those counts replace.
        counts = {(t, s): n for t, s, n in conn.execute("SELECT * FROM status_counts") if n}
        assert counts == {
            ("task", "failed"): 2,
            ("run", "completed"): 1,
            ("run", "canceled"): 1,
            ("run", "failed"): 3,
            ("forced", ""): 2,
            ("lane", "failed_runs"): 2,  # migration 9: the inbox's shared lanes
        }
        assert not {"runs_unsuccessful", "claims_forced"} & names
    finally:
        conn.close()


def test_listing_a_status_walks_it_in_id_order(short_dir: str) -> None:
    """tasks.list by status pages through tasks_status without sorting the
    whole status (tasks_facets, also led by status, would need a sort)."""
    from aghd.store.db import Tx
    from aghd.store.models import TaskFilters
    from aghd.store.rows import list_tasks

    conn = open_connection(os.path.join(short_dir, "list.db"))
    statements: list[str] = []
    try:
        # Statistics from an ANALYZE run before migration 5 (none for
        # tasks_facets) made the planner pick tasks_facets and sort.
        conn.execute("ANALYZE")
        conn.execute("INSERT INTO sqlite_stat1 VALUES ('tasks', 'tasks_status', '100000 12500 1')")
        conn.execute("ANALYZE sqlite_schema")  # reload the statistics
        conn.set_trace_callback(statements.append)
        list_tasks(Tx(conn, 0), TaskFilters(status="completed"), 50, None)
        conn.set_trace_callback(None)
        (sql,) = [s for s in statements if s.startswith("SELECT * FROM tasks")]
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "tasks_status" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        conn.close()
