"""The counts the dashboard reads instead of counting (``status_counts``,
kept by the triggers of migration 8) agree with a recount after every kind
of write that moves a task or a run: create in each status, claim,
complete, fail with and without a retry, release, lease expiry, operator
cancel, reject, cancel of a tree, retry of a failed task, delete (with its
runs, by cascade)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aghd.store import leases, observe, tasks, workflows
from aghd.store.db import DAEMON
from tests.helpers.store import HUMAN, claim, create, finish, run_of

if TYPE_CHECKING:
    from tests.helpers.store import StoreFile

HOT_TASKS = ("ready", "in_progress")
ENDED_RUNS = ("completed", "failed", "canceled")


def kept(store: StoreFile) -> dict[tuple[str, str], int]:
    return {
        (tally, status): n
        for tally, status, n in store.conn.execute("SELECT tally, status, n FROM status_counts")
        if n != 0
    }


def recounted(store: StoreFile) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for status, n in store.conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
        if status not in HOT_TASKS:
            counts["task", status] = n
    for status, n in store.conn.execute("SELECT status, count(*) FROM runs GROUP BY status"):
        if status in ENDED_RUNS:
            counts["run", status] = n
    # Forced stops by their definition, not by the tasks' tallies.
    forced = store.value(
        "SELECT count(*) FROM runs r WHERE r.status = 'failed' AND (SELECT c.end_reason"
        " FROM claims c WHERE c.run_id = r.id ORDER BY c.id DESC LIMIT 1)"
        " IN ('expired', 'failed_by_operator')"
    )
    if forced:
        counts["forced", ""] = forced
    # The inbox's shared lanes, by the inbox's own rule.
    lane = observe._LANE.replace("t.", "")
    nobody = {"kind": "", "owner_ref": None}  # no task is my_work for this actor
    rows = store.conn.execute(f"SELECT {lane} AS l, count(*) FROM tasks GROUP BY l", nobody)
    for name, n in rows:
        if name in ("approvals", "failed_runs", "blocked"):
            counts["lane", name] = n
    return counts


def claim_and_finish(store: StoreFile, outcome: str, who: str = "a", retry: bool = False) -> str:
    claimed = claim(store, who)
    assert claimed is not None
    run_id = str(claimed.run["id"])
    finish(store, who, run_id, outcome, retry=retry)
    assert kept(store) == recounted(store), outcome
    return run_id


def test_kept_counts_agree_with_a_recount_after_every_kind_of_write(store: StoreFile) -> None:
    assert kept(store) == recounted(store) == {}
    create(store, "a draft", draft=True)
    pending = create(store, "pending", start=False)
    gated = create(store, "gated", approval_policy="manual")
    create(store, "waits", depends_on=(pending,))
    parent = create(store, "parent", start=False)
    create(store, "child", parent_task_id=parent)
    for n in range(6):
        create(store, f"work {n}", max_attempts=2)
    assert kept(store) == recounted(store)

    claim_and_finish(store, "complete")
    claim_and_finish(store, "fail", retry=True)  # back to the queue: no ended run counted twice
    claim_and_finish(store, "fail")
    claim_and_finish(store, "release")
    done = claim_and_finish(store, "complete")

    # A lease that runs out ends the run by force (a forced stop when final).
    claimed = claim(store, "late", lease_ms=1_000)
    assert claimed is not None
    store.advance(5_000)
    assert store(leases.expire_leases, DAEMON) == 1
    assert kept(store) == recounted(store)
    claimed = claim(store, "late", lease_ms=1_000)
    assert claimed is not None
    store.advance(5_000)
    store(leases.expire_leases, DAEMON)
    assert kept(store)["forced", ""] == recounted(store)["forced", ""] >= 1

    claimed = claim(store, "b")
    assert claimed is not None
    store(leases.cancel_run, HUMAN, str(claimed.run["id"]), "not needed")
    store(tasks.reject, HUMAN, gated, "no")
    store(tasks.cancel_tree, HUMAN, parent, "dropped")
    assert kept(store) == recounted(store)

    failed = store.value("SELECT id FROM tasks WHERE status = 'failed' LIMIT 1")
    store(workflows.start_task_or_workflow, HUMAN, failed, idempotency_key=None, input_value=None)
    assert kept(store) == recounted(store)

    done_task = store.value("SELECT task_id FROM runs WHERE id = ?", done)
    store(tasks.delete_task, HUMAN, done_task)
    assert store.value("SELECT count(*) FROM runs WHERE id = ?", done) == 0
    assert kept(store) == recounted(store)
    assert ("run", "completed") in kept(store) and ("task", "canceled") in kept(store)
    assert run_of(store, failed)  # the retried task has its new run
