#!/usr/bin/env python3
"""Benchmark: the store's claim→complete cycle in-process, fsync taken out.

What the schema and the store's SQL cost per cycle, without the daemon,
the socket or the disk: the same store functions ``agent.claim_next`` and
``agent.complete`` run, one transaction each, ``synchronous=OFF``. Use it
to weigh an index or a statement change; to compare two commits, run it
from a ``git worktree`` of each, interleaved, and take medians.

    python bench/store_cycle.py                  # global tasks
    python bench/store_cycle.py --workspace      # tasks in a workspace
    python bench/store_cycle.py --batch 16 --synchronous FULL   # group commit's ceiling

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

from aghd.store import claims, leases, tasks, workflows  # noqa: E402
from aghd.store.db import Caller, Tx, now_ms, open_connection  # noqa: E402
from aghd.store.models import ClaimFilters, NewTask  # noqa: E402
from aghd.tokens import new_token  # noqa: E402


def cycles_per_second(
    cycles: int, workspace: str | None, synchronous: str = "OFF", batch: int = 1
) -> float:
    """Claim→complete cycles per second: ``batch`` claims in one transaction,
    then their completions in another (1: a transaction per operation)."""
    with tempfile.TemporaryDirectory() as workdir:
        conn = open_connection(os.path.join(workdir, "cycle.db"), synchronous)
        caller = Caller("agent_session", "bench", "agent_session")
        new = NewTask(
            title="cycle", owner_kind="human", owner_ref="bench", origin_kind="cli",
            workspace=workspace,
        )  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(cycles):
            tx = Tx(conn, now_ms())
            row = tasks.create_task(tx, caller, new)
            workflows.start_task_or_workflow(
                tx, caller, row["id"], idempotency_key=None, input_value=None
            )
        conn.execute("COMMIT")
        started = time.perf_counter()
        for _ in range(0, cycles, batch):
            held = []
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(batch):
                _token, token_hash = new_token()
                claimed = claims.claim_next_run(
                    Tx(conn, now_ms()),
                    caller,
                    session_id=None,
                    filters=ClaimFilters(),
                    lease_ms=300_000,
                    token_hash=token_hash,
                    idempotency_key=None,
                    max_claims_per_session=0,
                )
                assert claimed is not None
                held.append((claimed.run["id"], token_hash))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            for run_id, token_hash in held:
                leases.complete_run(Tx(conn, now_ms()), caller, run_id, token_hash, None)
            conn.execute("COMMIT")
        rate = cycles // batch * batch / (time.perf_counter() - started)
        conn.close()
        return rate


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cycles", type=int, default=2500)
    ap.add_argument("--workspace", action="store_true", help="tasks in a workspace")
    ap.add_argument(
        "--batch", type=int, default=1, metavar="N", help="operations per transaction [1]"
    )
    ap.add_argument("--synchronous", default="OFF", help="OFF (CPU only) or FULL [OFF]")
    args = ap.parse_args()
    workspace = "/bench/cycle" if args.workspace else None
    rate = cycles_per_second(args.cycles, workspace, args.synchronous, args.batch)
    print(f"{rate:.0f} cycles/s")


if __name__ == "__main__":
    main()
