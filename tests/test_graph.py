"""The task graph against a real daemon: dependencies (order, cycles,
failure), approval gates, trees, subtree cancel and delete."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from agh import errors

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon


def _ids(client: Client, *titles: str, **fields: Any) -> list[str]:
    return [client.tasks_create(t, **fields).task.id for t in titles]


def _status(client: Client, ref: str) -> tuple[str, str | None]:
    task = client.tasks_get(ref).task.task
    return task.status, task.blocking_reason


# -- dependencies -------------------------------------------------------------------


def test_three_level_dag_runs_in_dependency_order_under_concurrent_claimers(
    daemon: ThreadDaemon, client: Client
) -> None:
    """Ten DAGs (a → b1, b2 → c) and four agents: every task runs once, and
    no task is ever claimable before all its dependencies completed."""
    dags = []
    for n in range(10):
        a = client.tasks_create(f"a{n}", start=True).task.id
        b1 = client.tasks_create(f"b1-{n}", depends_on=[a], start=True).task.id
        b2 = client.tasks_create(f"b2-{n}", depends_on=[a], start=True).task.id
        c = client.tasks_create(f"c{n}", depends_on=[b1, b2], start=True).task.id
        dags.append((a, b1, b2, c))
    all_ids = {t for dag in dags for t in dag}
    total = len(all_ids)
    done: list[str] = []
    early: list[str] = []
    errors_seen: list[BaseException] = []
    lock = threading.Lock()

    def agent(name: str) -> None:
        try:
            with daemon.client(agent_name=name) as c:
                while True:
                    with lock:
                        if len(done) == total:
                            return
                    claim = c.claim_next(wait_ms=200).claim
                    if claim is None:
                        continue
                    # Read the dependencies from the daemon itself at claim time.
                    detail = c.tasks_get(claim.task.id).task
                    for ref in detail.dependency_references:
                        assert ref.depends_on is not None
                        if ref.depends_on.status != "completed":
                            early.append(claim.task.id)
                    c.complete(claim.run.id, claim.claim_token)
                    with lock:
                        done.append(claim.task.id)
        except BaseException as exc:  # surfaced by the main thread
            errors_seen.append(exc)

    threads = [threading.Thread(target=agent, args=(f"dag-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors_seen, errors_seen
    assert early == []
    assert sorted(done) == sorted(all_ids)  # each exactly once
    for a, b1, b2, c in dags:
        assert done.index(a) < done.index(b1) < done.index(c)
        assert done.index(b2) < done.index(c)


def test_dependent_is_blocked_then_enqueued_when_last_dependency_completes(
    daemon: ThreadDaemon, client: Client
) -> None:
    a, b = _ids(client, "a", "b")
    c = client.tasks_create("c", depends_on=[a, b], start=True)
    assert c.run is None and c.task.status == "blocked"
    assert c.task.blocking_reason is not None and "waiting on" in c.task.blocking_reason
    listed = {t.id: t for t in client.tasks_list().tasks}
    assert listed[c.task.id].dependency_count == 2
    with daemon.client(agent_name="worker") as agent:
        for ref in (a, b):
            client.tasks_start(ref)
            claim = agent.claim_next().claim
            assert claim is not None and claim.task.id == ref  # c is never offered
            agent.complete(claim.run.id, claim.claim_token)
        detail = client.tasks_get(c.task.id).task
        assert detail.task.status == "ready" and detail.task.blocking_reason is None
        assert {d.depends_on_task_id for d in detail.dependencies} == {a, b}
        # The run was queued in the completion's transaction: it is there already.
        claim = agent.claim_next().claim
        assert claim is not None and claim.task.id == c.task.id


def test_failed_dependency_leaves_dependent_blocked_with_reason(
    daemon: ThreadDaemon, client: Client
) -> None:
    dep = client.tasks_create("flaky", start=True).task
    after = client.tasks_create("after", depends_on=[dep.id], start=True).task
    with daemon.client(agent_name="worker") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        agent.fail(claim.run.id, claim.claim_token, "boom", retry=False)
        status, reason = _status(client, after.id)
        assert status == "blocked"
        assert reason is not None and f"{dep.identifier} failed" in reason
        assert agent.claim_next().claim is None  # never silently runnable
        # A manual retry of the dependency puts the dependent back to waiting...
        client.tasks_runs_enqueue(dep.id)
        status, reason = _status(client, after.id)
        assert status == "blocked" and reason == f"waiting on {dep.identifier}"
        claim = agent.claim_next().claim
        assert claim is not None and claim.task.id == dep.id
        agent.complete(claim.run.id, claim.claim_token)
        # ...and its completion finally runs it.
        claim = agent.claim_next().claim
        assert claim is not None and claim.task.id == after.id


def test_canceled_dependency_blocks_dependent(client: Client) -> None:
    dep = client.tasks_create("doomed").task
    after = client.tasks_create("after", depends_on=[dep.id], start=True).task
    client.tasks_cancel(dep.id, reason="not needed")
    status, reason = _status(client, after.id)
    assert status == "blocked" and reason is not None and "canceled" in reason


def test_direct_cycle_is_refused_and_named(client: Client) -> None:
    a = client.tasks_create("a").task
    b = client.tasks_create("b", depends_on=[a.id]).task
    with pytest.raises(errors.Conflict) as refused:
        client.tasks_dependencies_add(a.id, b.identifier)
    assert refused.value.details["cycle"] == [a.identifier, b.identifier, a.identifier]
    assert f"{a.identifier} -> {b.identifier} -> {a.identifier}" in str(refused.value)
    with pytest.raises(errors.Conflict, match="cycle"):
        client.tasks_dependencies_add(a.id, a.id)
    assert client.tasks_get(a.id).task.dependencies == []


def test_indirect_cycle_is_refused_and_named(client: Client) -> None:
    a, b, c, d = (client.tasks_create(t).task for t in "abcd")
    client.tasks_dependencies_add(b.id, a.id)  # b waits for a
    client.tasks_dependencies_add(c.id, b.id)
    client.tasks_dependencies_add(d.id, c.id)
    with pytest.raises(errors.Conflict) as refused:
        client.tasks_dependencies_add(a.id, d.id)  # a -> d -> c -> b -> a
    cycle = [a.identifier, d.identifier, c.identifier, b.identifier, a.identifier]
    assert refused.value.details["cycle"] == cycle
    assert " -> ".join(cycle) in str(refused.value)
    # A diamond is not a cycle.
    client.tasks_dependencies_add(d.id, a.id)


def test_removing_the_last_dependency_enqueues_the_requested_run(client: Client) -> None:
    dep = client.tasks_create("dep").task
    task = client.tasks_create("task", depends_on=[dep.id], start=True, input={"x": 1}).task
    assert task.status == "blocked"
    detail = client.tasks_dependencies_remove(task.id, dep.identifier).task
    assert detail.task.status == "ready" and detail.dependencies == []
    assert detail.summary.active_run is not None
    assert detail.summary.active_run.input == {"x": 1}
    with pytest.raises(errors.NotFound, match="does not depend"):
        client.tasks_dependencies_remove(task.id, dep.id)


def test_dependency_cannot_be_added_to_a_task_with_a_queued_run(client: Client) -> None:
    dep = client.tasks_create("dep").task
    task = client.tasks_create("task", start=True).task
    with pytest.raises(errors.Conflict, match="already has run"):
        client.tasks_dependencies_add(task.id, dep.id)


def test_published_draft_with_unmet_dependency_waits(client: Client) -> None:
    dep = client.tasks_create("dep").task
    draft = client.tasks_create("draft", draft=True, depends_on=[dep.id]).task
    assert draft.status == "draft"
    published = client.tasks_publish(draft.id)
    assert published.run is None and published.task.status == "blocked"


# -- approval ------------------------------------------------------------------------


def test_approval_gate(daemon: ThreadDaemon, client: Client) -> None:
    gated = client.tasks_create("deploy", approval_policy="manual", start=True, input={"v": 2})
    assert gated.run is None
    assert gated.task.status == "blocked" and gated.task.approval_state == "pending"
    assert gated.task.blocking_reason == "awaiting approval"
    pending = client.tasks_list(approval_state="pending").tasks
    assert [t.id for t in pending] == [gated.task.id]
    with daemon.client(agent_name="eager") as agent:
        assert agent.claim_next().claim is None
        approved = client.tasks_approve(gated.task.identifier, comment="ship it")
        assert approved.task.approval_state == "approved"
        assert approved.task.approved_by is not None
        assert approved.run is not None and approved.run.input == {"v": 2}
        claim = agent.claim_next().claim
        assert claim is not None and claim.run.id == approved.run.id
    with pytest.raises(errors.Conflict, match="already approved"):
        client.tasks_approve(gated.task.id)
    events = [
        e for e in client.tasks_get(gated.task.id).task.events if e.event_type == "task.approved"
    ]
    assert events and events[0].payload == {"comment": "ship it"}


def test_reject_closes_the_task(daemon: ThreadDaemon, client: Client) -> None:
    gated = client.tasks_create("risky", approval_policy="manual", start=True).task
    rejected = client.tasks_reject(gated.id, reason="too risky").task
    assert rejected.status == "canceled" and rejected.approval_state == "rejected"
    assert rejected.closed_reason == "rejected: too risky"
    with daemon.client(agent_name="eager") as agent:
        assert agent.claim_next().claim is None
    with pytest.raises(errors.Conflict, match="rejected"):
        client.tasks_approve(gated.id)


def test_approving_a_task_that_needs_no_approval_is_a_conflict(client: Client) -> None:
    plain = client.tasks_create("plain").task
    with pytest.raises(errors.Conflict, match="needs no approval"):
        client.tasks_approve(plain.id)
    with pytest.raises(errors.Conflict, match="needs no approval"):
        client.tasks_reject(plain.id)


def test_approved_task_still_waits_for_dependencies(client: Client) -> None:
    dep = client.tasks_create("dep").task
    gated = client.tasks_create("gated", approval_policy="manual", depends_on=[dep.id]).task
    assert gated.blocking_reason == f"awaiting approval; waiting on {dep.identifier}"
    approved = client.tasks_approve(gated.id)
    assert approved.run is None and approved.task.status == "blocked"
    assert approved.task.blocking_reason == f"waiting on {dep.identifier}"


def test_rerunning_a_finished_manual_task_needs_a_new_approval(
    daemon: ThreadDaemon, client: Client
) -> None:
    gated = client.tasks_create("gated", approval_policy="manual", start=True).task
    client.tasks_approve(gated.id)
    with daemon.client(agent_name="w") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        agent.complete(claim.run.id, claim.claim_token)
    again = client.tasks_start(gated.id)
    assert again.run is None and again.task.approval_state == "pending"


def test_approval_policy_can_be_changed_while_no_run_is_queued(client: Client) -> None:
    task = client.tasks_create("t").task
    gated = client.tasks_update(task.id, approval_policy="manual").task
    assert gated.approval_state == "pending" and gated.status == "blocked"
    plain = client.tasks_update(task.id, approval_policy="none").task
    assert plain.approval_state == "not_required" and plain.status == "pending"
    client.tasks_start(task.id)
    with pytest.raises(errors.Conflict, match="approval policy"):
        client.tasks_update(task.id, approval_policy="manual")


# -- trees ------------------------------------------------------------------------------


def test_tree_lists_descendants_depth_first(client: Client) -> None:
    root = client.tasks_create("plan").task
    first = client.tasks_children_create(root.id, "first").task
    grandchild = client.tasks_children_create(first.identifier, "first.a", start=True).task
    second = client.tasks_children_create(root.id, "second").task
    assert first.parent_task_id == root.id
    tree = client.tasks_tree(root.identifier).tree
    assert tree.root.task.id == root.id and tree.root.depth == 0
    assert tree.root.child_count == 2
    order = [(n.task.id, n.depth) for n in tree.descendants]
    assert order == [(first.id, 1), (grandchild.id, 2), (second.id, 1)]
    node = tree.descendants[1]
    assert node.active_run is not None and node.active_run.status == "queued"
    assert node.parent_task_id == first.id
    assert client.tasks_get(root.id).task.summary.child_count == 2
    with pytest.raises(errors.InvalidParams):
        client.call(
            "tasks.children.create",
            {"id": root.id, "title": "x", "parent_task_id": first.id},
            dict,
        )


def test_cancel_subtree_while_an_agent_holds_a_run(daemon: ThreadDaemon, client: Client) -> None:
    root = client.tasks_create("epic").task
    held = client.tasks_children_create(root.id, "held", start=True).task
    queued = client.tasks_children_create(root.id, "queued", start=True).task
    waiting = client.tasks_children_create(
        held.id, "waiting", depends_on=[queued.id], start=True
    ).task
    outside = client.tasks_create("outside", depends_on=[held.id], start=True).task
    with daemon.client(agent_name="holder") as agent:
        claim = agent.claim_next().claim
        assert claim is not None and claim.task.id == held.id
        canceled = client.tasks_cancel(root.id, reason="scope cut").task
        assert canceled.status == "canceled"
        with pytest.raises(errors.LeaseLost):
            agent.heartbeat(claim.run.id, claim.claim_token)
        with pytest.raises(errors.LeaseLost):
            agent.complete(claim.run.id, claim.claim_token)
        for ref in (root.id, held.id, queued.id, waiting.id):
            assert _status(client, ref)[0] == "canceled"
        assert agent.claim_next().claim is None  # nothing in the subtree is runnable
    runs = client.tasks_runs_list(queued.id).runs
    assert [r.status for r in runs] == ["canceled"]
    status, reason = _status(client, outside.id)
    assert status == "blocked" and reason is not None and "canceled" in reason
    with pytest.raises(errors.Conflict, match="already closed"):
        client.tasks_cancel(root.id)


def test_delete_refuses_while_a_subtree_run_is_active(daemon: ThreadDaemon, client: Client) -> None:
    root = client.tasks_create("root").task
    child = client.tasks_children_create(root.id, "child", start=True).task
    after = client.tasks_create("after", depends_on=[child.id], start=True).task
    with daemon.client(agent_name="w") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        with pytest.raises(errors.Conflict, match="active run"):
            client.tasks_delete(root.id)
        agent.complete(claim.run.id, claim.claim_token)
    # A completed dependency already ran "after"; delete the subtree now.
    client.tasks_delete(root.id)
    for ref in (root.id, child.id):
        with pytest.raises(errors.NotFound):
            client.tasks_get(ref)
    assert client.tasks_get(after.id).task.dependencies == []
