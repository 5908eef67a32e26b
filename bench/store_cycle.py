#!/usr/bin/env python3
"""Benchmark: the store's claim→complete cycle in-process, fsync taken out.

What the schema and the store's SQL cost per cycle, without the daemon,
the socket or the disk: the same store functions ``agent.claim_next`` and
``agent.complete`` run, one transaction each, ``synchronous=OFF``. Use it
to weigh an index or a statement change; to compare two commits, run it
from a ``git worktree`` of each, interleaved, and take medians.

    python bench/store_cycle.py                  # global tasks
    python bench/store_cycle.py --workspace      # tasks in a workspace

Not a test: numbers depend on the machine. Record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aghd.store import runs, tasks  # noqa: E402
from aghd.store.db import Caller, Tx, now_ms, open_connection  # noqa: E402
from aghd.tokens import new_token  # noqa: E402


def cycles_per_second(cycles: int, workspace: str | None, synchronous: str = "OFF") -> float:
    """Claim→complete cycles per second, one transaction per operation."""
    with tempfile.TemporaryDirectory() as workdir:
        conn = open_connection(os.path.join(workdir, "cycle.db"), synchronous)
        caller = Caller("agent_session", "bench", "agent_session")

        def txn(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
            conn.execute("BEGIN IMMEDIATE")
            result = fn(Tx(conn, now_ms()), *args, **kwargs)
            conn.execute("COMMIT")
            return result

        new = tasks.NewTask(
            title="cycle", owner_kind="human", owner_ref="bench", origin_kind="cli",
            workspace=workspace,
        )  # fmt: skip

        def create_many(tx: Tx) -> None:
            for _ in range(cycles):
                row = tasks.create_task(tx, caller, new)
                tasks.start_task(tx, caller, row["id"], idempotency_key=None, input_value=None)

        txn(create_many)
        started = time.perf_counter()
        for _ in range(cycles):
            _token, token_hash = new_token()
            claimed = txn(
                runs.claim_next_run,
                caller,
                session_id=None,
                filters=runs.ClaimFilters(),
                lease_ms=300_000,
                token_hash=token_hash,
                idempotency_key=None,
                max_claims_per_session=0,
            )
            txn(runs.complete_run, caller, claimed.run["id"], token_hash, None)
        rate = cycles / (time.perf_counter() - started)
        conn.close()
        return rate


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cycles", type=int, default=2500)
    ap.add_argument("--workspace", action="store_true", help="tasks in a workspace")
    args = ap.parse_args()
    rate = cycles_per_second(args.cycles, "/bench/cycle" if args.workspace else None)
    print(f"{rate:.0f} cycles/s")


if __name__ == "__main__":
    main()
