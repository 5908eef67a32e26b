"""The blocking rule (``aghd.store.graph``) and what follows from it
(``aghd.store.progress``), on a real SQLite file without the daemon:
what keeps a task from running, the cycle a dependency would close, and a
dependent's run queued in the very transaction that finishes the last
thing it waited for. The socket-level view of the same rules is in
tests/test_graph.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agh.errors import Conflict
from aghd.store import graph, leases, tasks
from aghd.store.models import Backoff
from aghd.store.rows import task_by_id
from tests.helpers.store import HUMAN, agent, claim, create, task, token

if TYPE_CHECKING:
    from aghd.store.db import Tx
    from tests.helpers.store import StoreFile

NO_RETRY = Backoff(1000, 1000)


def blocking(store: StoreFile, task_id: str) -> tuple[str | None, bool]:
    def do(tx: Tx) -> tuple[str | None, bool]:
        b = graph.blocking(tx, task_by_id(tx, task_id))
        return b.reason, b.skip

    return store(do)


def finish(store: StoreFile, task_id: str, *, ok: bool = True) -> None:
    """Claim the task's run and complete (or finally fail) it."""
    claimed = claim(store, "finish")
    assert claimed is not None and claimed.run["task_id"] == task_id
    run_id = claimed.run["id"]
    if ok:
        store(leases.complete_run, agent("finish"), run_id, token("finish"), {"ok": True})
    else:
        store(
            leases.fail_run,
            agent("finish"),
            run_id,
            token("finish"),
            "broken",
            retry=False,
            backoff=NO_RETRY,
        )


def queued_runs(store: StoreFile, task_id: str) -> int:
    return int(
        store.value("SELECT count(*) FROM runs WHERE task_id = ? AND status = 'queued'", task_id)
    )


def test_a_task_with_nothing_in_its_way_is_not_blocked(store: StoreFile) -> None:
    a = create(store, "a")
    assert blocking(store, a) == (None, False)
    assert task(store, a)["status"] == "ready"
    assert queued_runs(store, a) == 1


def test_a_dependency_blocks_until_it_completes_then_the_run_is_queued_in_that_commit(
    store: StoreFile,
) -> None:
    a = create(store, "a")
    b = create(store, "b", depends_on=(a,))
    reason, skip = blocking(store, b)
    assert reason == f"waiting on {task(store, a)['identifier']}" and not skip
    assert task(store, b)["status"] == "blocked"
    assert task(store, b)["blocking_reason"] == reason
    assert queued_runs(store, b) == 0

    finish(store, a)
    # complete_run settled the dependent: no later pass, no second request.
    assert task(store, b)["status"] == "ready"
    assert task(store, b)["blocking_reason"] is None
    assert queued_runs(store, b) == 1
    assert blocking(store, b) == (None, False)


def test_a_failed_dependency_says_how_to_go_on_and_keeps_the_task_blocked(
    store: StoreFile,
) -> None:
    a = create(store, "a")
    b = create(store, "b", depends_on=(a,))
    finish(store, a, ok=False)
    reason, skip = blocking(store, b)
    assert reason is not None and not skip
    assert "failed" in reason and "tasks.runs.enqueue" in reason
    assert task(store, b)["status"] == "blocked"
    assert queued_runs(store, b) == 0


def test_awaiting_approval_and_a_dependency_are_both_named(store: StoreFile) -> None:
    a = create(store, "a")
    b = create(store, "b", depends_on=(a,), approval_policy="manual")
    reason, _ = blocking(store, b)
    assert reason is not None
    assert reason.startswith("awaiting approval; waiting on ")
    finish(store, a)
    assert blocking(store, b) == ("awaiting approval", False)
    assert queued_runs(store, b) == 0
    store(tasks.approve, HUMAN, b, None)
    assert queued_runs(store, b) == 1


def test_many_waiting_dependencies_are_named_five_at_most(store: StoreFile) -> None:
    deps = [create(store, f"dep {i}") for i in range(7)]
    b = create(store, "b", depends_on=tuple(deps))
    reason, _ = blocking(store, b)
    names = [task(store, d)["identifier"] for d in deps]
    assert reason == f"waiting on {', '.join(names[:5])} and 2 more"


def test_a_draft_is_neither_blocked_nor_queued_until_published(store: StoreFile) -> None:
    a = create(store, "a")
    draft = create(store, "draft", draft=True, depends_on=(a,))
    assert task(store, draft)["status"] == "draft"
    assert queued_runs(store, draft) == 0
    store(tasks.publish_task, HUMAN, draft)
    assert task(store, draft)["status"] == "blocked"
    finish(store, a)
    assert queued_runs(store, draft) == 1


def test_the_cycle_a_new_dependency_would_close_is_found_and_refused(store: StoreFile) -> None:
    a, b, c = (create(store, n, start=False) for n in "abc")
    store(tasks.add_dependency, HUMAN, b, a)  # b waits for a
    store(tasks.add_dependency, HUMAN, c, b)  # c waits for b

    def path(start: str, goal: str) -> list[str] | None:
        return store(graph.cycle_path, start, goal)

    # a waiting for c would close a -> c -> b -> a.
    assert path(c, a) == [c, b, a]
    assert path(a, c) is None
    with pytest.raises(Conflict) as refused:
        store(tasks.add_dependency, HUMAN, a, c)
    ids = [task(store, t)["identifier"] for t in (a, c, b, a)]
    assert refused.value.details["cycle"] == ids
    assert " -> ".join(ids) in refused.value.message
    # Refused means nothing was written.
    assert store.value("SELECT count(*) FROM task_dependencies WHERE task_id = ?", a) == 0


def test_a_task_cannot_wait_for_itself(store: StoreFile) -> None:
    a = create(store, "a", start=False)
    with pytest.raises(Conflict) as refused:
        store(tasks.add_dependency, HUMAN, a, a)
    identifier = task(store, a)["identifier"]
    assert refused.value.details["cycle"] == [identifier, identifier]


def test_removing_the_last_dependency_queues_the_requested_run(store: StoreFile) -> None:
    a = create(store, "a")
    b = create(store, "b", depends_on=(a,))
    assert queued_runs(store, b) == 0
    store(tasks.remove_dependency, HUMAN, b, a)
    assert task(store, b)["status"] == "ready"
    assert queued_runs(store, b) == 1


def test_a_long_chain_settles_link_by_link(store: StoreFile) -> None:
    chain = [create(store, "t0")]
    for i in range(1, 30):
        chain.append(create(store, f"t{i}", depends_on=(chain[-1],)))
    for i, t in enumerate(chain):
        assert queued_runs(store, t) == 1, f"t{i} should be next"
        if i + 1 < len(chain):
            assert task(store, chain[i + 1])["status"] == "blocked"
        finish(store, t)
    assert {task(store, t)["status"] for t in chain} == {"completed"}
