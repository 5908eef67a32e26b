"""The unfiltered inbox answered from migration 9's indexes and kept counts
(``_kept_inbox``) is the inbox the scan of every task gives
(``_scanned_inbox``): every lane's count, unread count and items, for
several actors, after a seeded random mix of every write that moves a task
between lanes, changes its activity, or changes an actor's triage."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest

from agh.errors import AghError
from aghd.store import coordination, leases, observe, tasks
from aghd.store.db import DAEMON
from aghd.store.models import NewTask
from tests.helpers.store import HUMAN, agent, claim, create, finish, token

if TYPE_CHECKING:
    from tests.helpers.store import StoreFile

ACTORS: list[tuple[str, str | None]] = [
    ("human", "alice"),
    ("human", "bob"),
    ("automation", None),
    ("agent_session", "ses_x"),
]
OWNERS = [*ACTORS, ("human", "carol")]


def inbox_of(
    store: StoreFile, kind: str, ref: str | None, limit: int, kept: bool, lane: str | None = None
) -> Any:
    query = observe.InboxQuery(kind, ref, limit=limit, lane=lane)
    lanes = store(observe._kept_inbox if kept else observe._scanned_inbox, query)
    return {
        name: (lane.count, lane.unread, [e.task["id"] for e in lane.entries])
        for name, lane in lanes.items()
    }


def assert_agree(store: StoreFile, step: str) -> None:
    for kind, ref in ACTORS:
        for limit, lane in ((3, None), (100, None), (3, "archived"), (3, "blocked")):
            kept = inbox_of(store, kind, ref, limit, kept=True, lane=lane)
            scanned = inbox_of(store, kind, ref, limit, kept=False, lane=lane)
            assert kept == scanned, (step, kind, ref, limit, lane)


def new(rnd: random.Random, **fields: Any) -> NewTask:
    kind, ref = rnd.choice(OWNERS)
    return NewTask(title="t", owner_kind=kind, owner_ref=ref, origin_kind="cli", **fields)


def some_task(store: StoreFile, rnd: random.Random, where: str = "1") -> str | None:
    ids = [r[0] for r in store.conn.execute(f"SELECT id FROM tasks WHERE {where}")]
    return rnd.choice(ids) if ids else None


def step(store: StoreFile, rnd: random.Random, n: int) -> str:
    """One random write; what it was."""
    choice = rnd.randrange(12)
    who = f"w{n}"
    try:
        if choice <= 2:
            shape = rnd.choice(["start", "draft", "pending", "gated", "waits"])
            shapes: dict[str, dict[str, Any]] = {
                "draft": {"draft": True},
                "gated": {"approval_policy": "manual"},
                "waits": {"depends_on": tuple(filter(None, [some_task(store, rnd)]))},
            }
            fields = shapes.get(shape, {})
            store(
                tasks.create_and_start,
                HUMAN,
                new(rnd, max_attempts=rnd.choice([1, 2]), **fields),
                start=shape != "pending",
                input_value=None,
            )
            return f"create {shape}"
        if choice == 3:
            c = claim(store, who)
            if c is None:
                return "claim: none"
            run_id = str(c.run["id"])
            outcome = rnd.choice(["complete", "fail", "release", "ask", "hold"])
            if outcome in ("complete", "fail", "release"):
                finish(store, who, run_id, outcome, retry=rnd.random() < 0.5)
            elif outcome == "ask":
                store(coordination.agent_post, agent(who), run_id, token(who), "which?", "question")
            return f"claim and {outcome}"
        if choice == 4:
            store.advance(120_000)
            return f"expired {store(leases.expire_leases, DAEMON)}"
        if choice == 5:
            ref = some_task(store, rnd, "approval_state = 'pending'")
            if ref is None:
                return "approve: none"
            if rnd.random() < 0.5:
                store(tasks.approve, HUMAN, ref, None)
            else:
                store(tasks.reject, HUMAN, ref, "no")
            return "approval decided"
        if choice == 6:
            ref = some_task(store, rnd)
            if ref is None:
                return "send: none"
            store(coordination.send_to_task, HUMAN, ref, "more")  # new activity
            return "sent"
        if choice == 7:
            ref = some_task(store, rnd, "draft = 1")
            if ref is not None:
                store(tasks.publish_task, HUMAN, ref)
            return "published"
        if choice == 8 and rnd.random() < 0.3:
            ref = some_task(store, rnd)
            if ref is not None:
                store(tasks.delete_task, HUMAN, ref)
            return "deleted"
        if choice == 9 and rnd.random() < 0.3:
            ref = some_task(store, rnd)
            if ref is not None:
                store(tasks.cancel_tree, HUMAN, ref, "dropped")
            return "canceled"
        # Triage by a random actor, the most common write here.
        ref = some_task(store, rnd)
        if ref is None:
            return "triage: none"
        kind, actor_ref = rnd.choice(ACTORS)
        action = rnd.choice(observe.TRIAGE_ACTIONS)
        store(observe.set_triage, kind, actor_ref, ref, action)
        store.advance(rnd.choice([0, 1, 1000]))
        return f"triage {action}"
    except AghError as exc:  # a refused write (a conflict, say) changes nothing
        return f"refused: {exc.code}"


@pytest.mark.parametrize("seed", range(4))
def test_kept_inbox_is_the_scanned_inbox(store: StoreFile, seed: int) -> None:
    rnd = random.Random(seed)
    for n in range(8):
        create(store, f"seed {n}")
    assert_agree(store, "start")
    done: list[str] = []
    for n in range(220):
        store.advance(rnd.choice([1, 5, 50]))
        done.append(step(store, rnd, n))
        if n % 10 == 9:
            assert_agree(store, f"after {n}: {done[-10:]}")
    assert_agree(store, "end")
    # The mix reached what it is meant to test.
    kinds = {d.split(":")[0].split()[0] for d in done}
    assert {"create", "claim", "triage", "sent"} <= kinds, kinds
    lanes = inbox_of(store, "human", "alice", 100, kept=True)
    assert sum(count for count, _unread, _ in lanes.values()) > 0


def test_a_nobody_triaged_task_costs_the_claim_path_no_trigger_work(store: StoreFile) -> None:
    """Claiming and completing untriaged tasks leaves the kept counts alone
    (the task trigger's EXISTS probe finds nothing)."""
    create(store, "a")
    store(observe.set_triage, "human", "alice", create(store, "b", start=False), "read")
    before = list(store.conn.execute("SELECT * FROM inbox_triaged ORDER BY 1, 2, 3"))
    c = claim(store, "z")
    assert c is not None
    store(leases.complete_run, agent("z"), c.run["id"], token("z"), None)
    after = list(store.conn.execute("SELECT * FROM inbox_triaged ORDER BY 1, 2, 3"))
    assert [tuple(r) for r in before] == [tuple(r) for r in after]
    assert_agree(store, "after the cycle")


def test_the_kept_inbox_reads_no_table_and_sorts_no_lane(store: StoreFile) -> None:
    """Every statement of the unfiltered inbox goes through an index; the
    lanes' walks need no sort (only the archived items, the actor's own
    few, are sorted)."""
    ref = create(store, "t")
    store(observe.set_triage, "human", "alice", ref, "archive")
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        inbox_of(store, "human", "alice", 10, kept=True)
        inbox_of(store, "human", "alice", 10, kept=True, lane="archived")
    finally:
        store.conn.set_trace_callback(None)
    selects = [s for s in statements if s.startswith("SELECT")]
    assert len(selects) >= 7
    for sql in selects:
        plan = [r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
        assert "SCAN tasks" not in plan, (sql, plan)
        if "tasks_inbox" in sql:
            assert not any("TEMP B-TREE" in step for step in plan), (sql, plan)
            assert any("tasks_inbox" in step for step in plan), (sql, plan)


def test_a_triage_row_deleted_by_itself_leaves_the_counts_right(store: StoreFile) -> None:
    """No store path deletes a triage row alone today (a task's go with it),
    but the counts must not depend on that."""
    ref = create(store, "t")
    store(observe.set_triage, "human", "alice", ref, "dismiss")
    store(observe.set_triage, "human", "bob", ref, "archive")
    assert_agree(store, "triaged")
    store.conn.execute("DELETE FROM task_triage WHERE actor_ref = 'alice'")
    assert_agree(store, "alice's row deleted")
    store.conn.execute("DELETE FROM task_triage")
    assert_agree(store, "every row deleted")
    assert store.value("SELECT count(*) FROM inbox_triaged WHERE out_n != 0 OR seen_n != 0") == 0


def test_a_triage_change_reads_only_its_own_row(store: StoreFile) -> None:
    """The triage triggers filter the contributions view by the row's key:
    SQLite must push that into the view, or each triage action would read
    every triage row of a big hub."""
    for where in (
        "actor_kind = 'human' AND actor_ref = 'alice' AND task_id = 'task_x'",
        "task_id = 'task_x'",
    ):
        plan = [
            r[3]
            for r in store.conn.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM inbox_contributions WHERE {where}"
            )
        ]
        assert all("SCAN" not in step for step in plan), (where, plan)
