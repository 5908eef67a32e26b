#!/usr/bin/env python3
"""The denominator of agh's throughput ratios: a bare queue on SQLite, in
process, with no daemon, no socket and none of agh's bookkeeping (events,
claims history, sessions, tasks).

One table ``runs(id, status, priority, queued_at, token)`` with the index
``(status, priority DESC, queued_at)``. A claim is
``UPDATE … WHERE id = (SELECT … ORDER BY priority DESC, queued_at LIMIT 1)
RETURNING id``; a complete is an ``UPDATE`` fenced by the token. WAL,
``synchronous=FULL``. Two ways to commit:

- one transaction (one fsync) per operation: claim, then complete;
- ten cycles per transaction (the claims, then the completes).

    python bench/raw_sqlite.py --cycles 3000

Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import tempfile
import time

SCHEMA = """
CREATE TABLE runs (
    id        INTEGER PRIMARY KEY,
    status    TEXT NOT NULL,
    priority  INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,
    token     TEXT
);
CREATE INDEX runs_claim ON runs (status, priority DESC, queued_at);
"""
CLAIM = (
    "UPDATE runs SET status = 'claimed', token = ? WHERE id = ("
    "SELECT id FROM runs WHERE status = 'queued' ORDER BY priority DESC, queued_at LIMIT 1"
    ") RETURNING id"
)
COMPLETE = "UPDATE runs SET status = 'completed', token = NULL WHERE id = ? AND token = ?"


def open_queue(path: str, queued: int, synchronous: str = "FULL") -> sqlite3.Connection:
    """A new queue at ``path`` with ``queued`` runs waiting (autocommit:
    the caller owns its transactions)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (status, priority, queued_at) VALUES ('queued', ?, ?)",
        ((i % 4, i) for i in range(queued)),
    )
    conn.execute("COMMIT")
    return conn


def cycles_per_second(cycles: int, per_commit: int = 1, synchronous: str = "FULL") -> float:
    """Claim→complete cycles per second, committing every ``per_commit``
    cycles (1: a transaction per operation, two per cycle)."""
    with tempfile.TemporaryDirectory() as workdir:
        conn = open_queue(os.path.join(workdir, "raw.db"), cycles, synchronous)
        started = time.perf_counter()
        for _ in range(0, cycles, per_commit):
            held = []
            if per_commit > 1:
                conn.execute("BEGIN IMMEDIATE")
            for _ in range(per_commit):
                token = secrets.token_hex(16)
                if per_commit == 1:
                    conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(CLAIM, (token,)).fetchone()
                if per_commit == 1:
                    conn.execute("COMMIT")
                held.append((row[0], token))
            for run_id, token in held:
                if per_commit == 1:
                    conn.execute("BEGIN IMMEDIATE")
                assert conn.execute(COMPLETE, (run_id, token)).rowcount == 1
                if per_commit == 1:
                    conn.execute("COMMIT")
            if per_commit > 1:
                conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
    return cycles / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=3000)
    ap.add_argument("--synchronous", default="FULL")
    args = ap.parse_args()
    one = cycles_per_second(args.cycles, 1, args.synchronous)
    ten = cycles_per_second(args.cycles, 10, args.synchronous)
    print(f"raw SQLite, one commit per operation: {one:8.0f} cycles/s")
    print(f"raw SQLite, ten cycles per commit:    {ten:8.0f} cycles/s")


if __name__ == "__main__":
    main()
