#!/usr/bin/env python3
"""Benchmark: ``observe.dashboard`` (and ``observe.inbox``) on a large database.

Builds a database through the store's schema (bulk inserts, no daemon):
100,000 tasks in every status over five workspaces and the global scope,
four network channels, runs in every status (queued, claimed, starting,
running, completed, failed, canceled), their claims, sessions, and
1,000,000 events. Then starts a real ``aghd`` subprocess on it and times
``observe.dashboard`` unfiltered and filtered (a workspace, a channel, an
owner), and ``observe.inbox``, printing p50 / p95 / max per case.

    python bench/dashboard.py                        # 100k tasks, 1M events, 50 calls
    python bench/dashboard.py --calls 200 --keep /tmp/dash.db

Not a test: numbers depend on the machine. Record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jsonrpc import Conn  # noqa: E402  (bench/, beside this script)

HOUR = 3_600_000
DAY = 24 * HOUR
WORKSPACES = 5
CHANNELS = [None, None, "gpu", "cpu", "review"]
PRIORITIES = ["low", "medium", "medium", "high", "urgent"]
RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
# Task status mix, per 100 tasks.
MIX = [
    ("draft", 3),
    ("pending", 8),
    ("blocked", 6),
    ("ready", 14),
    ("in_progress", 2),
    ("completed", 55),
    ("failed", 7),
    ("canceled", 5),
]
# Agent sessions; each holds at most one active run (the default
# max_claims_per_session), so at most this many runs are active.
SESSIONS = 400


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


# -- building the database ---------------------------------------------------------


def build(path: str, n_tasks: int, n_events: int, seed: int = 7) -> None:
    """Fill a fresh database at ``path`` (migrated by the store) in one transaction."""
    from aghd.store.db import now_ms, open_connection
    from aghd.store.schema import RUN_TALLIES

    rnd = random.Random(seed)
    conn = open_connection(path, "OFF")
    now = now_ms()
    statuses = [s for s, weight in MIX for _ in range(weight)]
    conn.execute("BEGIN")
    workspaces = []
    for w in range(WORKSPACES):
        ws_id = f"ws_bench{w:02d}"
        key = f"W{chr(65 + w)}"
        workspaces.append((ws_id, key))
        conn.execute(
            "INSERT INTO workspaces (id, key, name, path, next_number, created_at)"
            " VALUES (?,?,?,?,?,?)",
            (ws_id, key, f"proj{w}", f"/bench/proj{w}", 1, now - 40 * DAY),
        )
    sessions = [f"ses_bench{s:04d}" for s in range(SESSIONS)]
    conn.executemany(
        "INSERT INTO sessions (session_id, agent_name, channel, name, state, created_at,"
        " updated_at) VALUES (?,?,?,?,?,?,?)",
        [
            (s, f"agent-{i}", None, None, "connected", now - DAY, now - HOUR)
            for i, s in enumerate(sessions)
        ],
    )
    tasks: list[tuple[Any, ...]] = []
    runs: list[tuple[Any, ...]] = []
    claims: list[tuple[Any, ...]] = []
    activity: list[tuple[str, str | None, int, int]] = []  # task, run, first, last
    numbers = {key: 0 for _, key in workspaces}
    global_number = 0
    idle = list(sessions)  # sessions free to hold an active run
    for i in range(n_tasks):
        status = statuses[rnd.randrange(len(statuses))]
        if status == "in_progress" and not idle:
            status = "ready"  # every session already holds a run
        created = now - rnd.randrange(30 * DAY)
        task_id = f"task_{created:013d}{i:08d}"
        if rnd.random() < 0.2:
            ws_id, scope = None, "global"
            global_number += 1
            identifier = f"T-{global_number}"
        else:
            ws_id, key = workspaces[rnd.randrange(WORKSPACES)]
            scope = "workspace"
            numbers[key] += 1
            identifier = f"{key}-{numbers[key]}"
        owner = rnd.random()
        if owner < 0.7:
            owner_kind, owner_ref, origin = "human", "alice", "cli"
        elif owner < 0.9:
            owner_kind, owner_ref, origin = "agent_session", rnd.choice(sessions), "agent_session"
        else:
            owner_kind, owner_ref, origin = "automation", "nightly", "automation"
        priority = rnd.choice(PRIORITIES)
        channel = rnd.choice(CHANNELS)
        approval_policy, approval_state, blocking = "none", "not_required", None
        closed_at = None
        last = created + rnd.randrange(1, HOUR)
        awaiting = 0
        if status == "blocked":
            if rnd.random() < 0.5:
                approval_policy, approval_state, blocking = "manual", "pending", "awaiting approval"
            else:
                blocking = "waiting on T-1"
        if status in ("completed", "failed", "canceled"):
            # 5% of closed work finished in the last hour: the latency window.
            if rnd.random() < 0.05:
                created = now - rnd.randrange(HOUR, 2 * HOUR)
                task_id = f"task_{created:013d}{i:08d}"
                last = now - rnd.randrange(HOUR)
            closed_at = last
        run_status = {
            "ready": "queued",
            "completed": "completed",
            "failed": "failed",
        }.get(status)
        if status == "in_progress":
            run_status = rnd.choice(["claimed", "starting", "running", "running"])
            awaiting = 1 if rnd.random() < 0.1 else 0
            if awaiting:
                blocking = "awaiting input: which branch?"
        if status == "canceled" and rnd.random() < 0.5:
            run_status = "canceled"
        if status == "ready":
            # Queued work waited up to two hours: the backlog check has data.
            created = now - rnd.randrange(2 * HOUR)
            task_id = f"task_{created:013d}{i:08d}"
            last = created
        if status == "in_progress":
            created = now - rnd.randrange(6 * HOUR)
            task_id = f"task_{created:013d}{i:08d}"
            last = now - rnd.randrange(20 * 60_000)
        if run_status is not None:
            if status == "completed" and rnd.random() < 0.1:
                # An earlier failed run, then a manual retry that completed.
                runs.append(
                    _run(
                        f"run_{created:013d}{i:08d}a",
                        task_id,
                        "failed",
                        created,
                        channel,
                        priority,
                        rnd,
                        now,
                        last,
                        claims,
                        rnd.choice(sessions),
                        "agent error",
                    )
                )
            runs.append(
                _run(
                    f"run_{created:013d}{i:08d}b",
                    task_id,
                    run_status,
                    created,
                    channel,
                    priority,
                    rnd,
                    now,
                    last,
                    claims,
                    idle.pop() if status == "in_progress" else rnd.choice(sessions),
                    None,
                )
            )
        tasks.append(
            (
                task_id,
                identifier,
                f"bench task {i} {rnd.choice(['fix', 'build', 'review'])}",
                scope,
                ws_id,
                owner_kind,
                owner_ref,
                owner_kind,
                owner_ref,
                origin,
                priority,
                channel,
                1,
                1 if status == "draft" else 0,
                status,
                approval_policy,
                approval_state,
                blocking,
                created,
                last,
                closed_at,
                last,
                awaiting,
            )
        )
        activity.append((task_id, runs[-1][0] if run_status else None, created, last))
    # Rows go in in creation order, as a daemon writes them: rowids then follow
    # the ids and the queue order, so the claim path has the locality it has
    # in a real file (random order made every claim touch a random page).
    tasks.sort(key=lambda t: t[0])
    runs.sort(key=lambda r: r[0])
    conn.executemany(
        "INSERT INTO tasks (id, identifier, title, scope, workspace_id, owner_kind, owner_ref,"
        " created_by_kind, created_by_ref, origin_kind, priority, network_channel, max_attempts,"
        " draft, status, approval_policy, approval_state, blocking_reason, created_at,"
        " updated_at, closed_at, last_activity_at, awaiting_input)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        tasks,
    )
    conn.execute("UPDATE meta SET value = ? WHERE key = 'task_number'", (global_number,))
    for ws_id, key in workspaces:
        conn.execute(
            "UPDATE workspaces SET next_number = ? WHERE id = ?", (numbers[key] + 1, ws_id)
        )
    conn.executemany(
        "INSERT INTO runs (id, task_id, status, attempt, max_attempts, priority_rank,"
        " network_channel, queued_at, available_at, claimed_at, started_at, ended_at,"
        " heartbeat_at, lease_until, claim_token_hash, claimed_by_kind, claimed_by_ref,"
        " session_id, error, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        runs,
    )
    claims.sort(key=lambda c: c[6])  # the claims table is appended in time order
    conn.executemany(
        "INSERT INTO claims (run_id, attempt, token_hash, claimed_by_kind, claimed_by_ref,"
        " session_id, claimed_at, ended_at, end_reason) VALUES (?,?,?,?,?,?,?,?,?)",
        claims,
    )
    # About n_events / n_tasks events per task, in time order (seq follows time).
    per_task = max(1, n_events // max(1, len(activity)))
    events: list[tuple[Any, ...]] = []
    types = ["task.created", "run.queued", "run.claimed", "run.log", "run.running", "task.updated"]
    for task_id, run_id, first, last in activity:
        span = max(1, last - first)
        for k in range(per_task):
            events.append(
                (
                    types[k % len(types)],
                    task_id,
                    run_id,
                    "human",
                    "alice",
                    "cli",
                    None,
                    first + span * k // per_task,
                )
            )
    events.sort(key=lambda e: e[7])
    conn.executemany(
        "INSERT INTO events (event_type, task_id, run_id, actor_kind, actor_ref, origin_kind,"
        " payload, created_at) VALUES (?,?,?,?,?,?,?,?)",
        events[:n_events],
    )
    # Some triage by the human owner, so the inbox has read and archived rows.
    triage = [
        ("human", "alice", t[0], 1, 0, 1 if n % 10 == 0 else 0, t[19], now)
        for n, t in enumerate(tasks)
        if t[14] in ("failed", "blocked") and n % 3 == 0
    ]
    conn.executemany(
        "INSERT INTO task_triage (actor_kind, actor_ref, task_id, read, dismissed, archived,"
        " last_seen_activity_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
        triage,
    )
    conn.execute(RUN_TALLIES)  # what the store keeps as runs end
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _run(
    run_id: str,
    task_id: str,
    status: str,
    created: int,
    channel: str | None,
    priority: str,
    rnd: random.Random,
    now: int,
    last: int,
    claims: list[tuple[Any, ...]],
    session_id: str,
    error: str | None,
) -> tuple[Any, ...]:
    queued = created + rnd.randrange(1000)
    claimed = started = ended = heartbeat = lease = session = None
    attempt = 0
    if status != "queued" and not (status == "canceled" and rnd.random() < 0.5):
        attempt = 1
        claimed = queued + rnd.randrange(50, 30_000)
        if status in ("claimed", "starting", "running"):
            claimed = max(queued, last - rnd.randrange(60_000))
        started = claimed + rnd.randrange(10, 5_000) if status != "claimed" else None
        heartbeat = last
        session = session_id
    if status in ("completed", "failed", "canceled"):
        ended = last
    if status in ("claimed", "starting", "running"):
        lease = now + HOUR
    end_reason = None
    if status == "failed":
        roll = rnd.random()
        # Forced stops (lease expiry, operator) are the exception: 15% of failures.
        end_reason = "failed" if roll < 0.85 else "expired" if roll < 0.95 else "failed_by_operator"
        error = error or {"expired": "lease expired"}.get(end_reason, "boom")
    elif status in ("completed", "canceled"):
        end_reason = status
    if attempt:
        claims.append(
            (run_id, 1, "h" * 64, "agent_session", session, session, claimed, ended, end_reason)
        )
    return (
        run_id, task_id, status, attempt, 1, RANK[priority], channel, queued, queued, claimed,
        started, ended, heartbeat, lease, "h" * 64 if lease else None,
        "agent_session" if attempt else None, session if attempt else None,
        session if lease else None, error, queued,
    )  # fmt: skip


# -- timing through a real daemon ------------------------------------------------------


def start_daemon(workdir: str, db: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = os.path.join(workdir, "agh.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aghd", "--socket", sock, "--db", db, "--log-level", "WARNING"],
        cwd=ROOT,
    )
    for _ in range(600):
        if os.path.exists(sock):
            return proc, sock
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("aghd did not start")


def time_calls(conn: Conn, method: str, params: dict[str, Any], calls: int) -> list[float]:
    conn.call(method, params)  # warm the page cache once
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.call(method, params)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--keep", metavar="DB", help="build (or reuse) the database at this path")
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="aghd")
    db = args.keep or os.path.join(workdir, "agh.db")
    try:
        if not os.path.exists(db):
            t0 = time.perf_counter()
            build(db, args.tasks, args.events)
            print(f"built {db} in {time.perf_counter() - t0:.1f} s")
        proc, sock = start_daemon(workdir, db)
        try:
            conn = Conn(sock)
            counts = conn.call("observe.dashboard", {})["dashboard"]["totals"]
            print(
                f"database: {counts['tasks_total']:,} tasks, {counts['runs_total']:,} runs,"
                f" {counts['active_runs']:,} active, {counts['queued_runs']:,} queued"
            )
            cases: list[tuple[str, str, dict[str, Any]]] = [
                ("dashboard, unfiltered", "observe.dashboard", {}),
                ("dashboard, workspace", "observe.dashboard", {"workspace": "/bench/proj1"}),
                ("dashboard, channel", "observe.dashboard", {"network_channel": "gpu"}),
                ("dashboard, owner", "observe.dashboard", {"owner_kind": "automation"}),
                (
                    "dashboard, owner (70%)",
                    "observe.dashboard",
                    {"owner_kind": "human", "owner_ref": "alice"},
                ),
                (
                    "dashboard, ws + channel",
                    "observe.dashboard",
                    {"workspace": "/bench/proj1", "network_channel": "gpu"},
                ),
                ("inbox, alice", "observe.inbox", {"owner_kind": "human", "owner_ref": "alice"}),
                (
                    "inbox, alice, workspace",
                    "observe.inbox",
                    {"owner_kind": "human", "owner_ref": "alice", "workspace": "/bench/proj1"},
                ),
            ]
            for label, method, params in cases:
                times = time_calls(conn, method, params, args.calls)
                print(
                    f"{label:26s} p50 {percentile(times, 50):7.2f} ms"
                    f"   p95 {percentile(times, 95):7.2f} ms   max {max(times):7.2f} ms"
                    f"   mean {statistics.fmean(times):7.2f} ms"
                )
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
