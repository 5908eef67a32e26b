"""Idempotency keys: a repeated request returns the same run (PROTOCOL.md §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agh import errors

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon


def test_enqueue_same_key_returns_same_run(client: Client) -> None:
    task = client.tasks_create("idem enqueue").task
    first = client.tasks_runs_enqueue(task.id, idempotency_key="k-1", input={"n": 1})
    assert first.run is not None and first.run.status == "queued"
    assert first.run.idempotency_key == "k-1"
    second = client.tasks_runs_enqueue(task.id, idempotency_key="k-1", input={"n": 1})
    assert second.run is not None and second.run.id == first.run.id
    via_start = client.tasks_start(task.identifier, idempotency_key="k-1")
    assert via_start.run is not None and via_start.run.id == first.run.id
    runs = client.tasks_runs_list(task.id).runs
    assert [r.id for r in runs] == [first.run.id]
    # A different key is a different request: the task already has an open run.
    with pytest.raises(errors.Conflict) as info:
        client.tasks_runs_enqueue(task.id, idempotency_key="k-2")
    assert first.run.id in info.value.message
    assert len(client.tasks_runs_list(task.id).runs) == 1


def test_start_same_key_after_create_with_start(client: Client) -> None:
    created = client.tasks_create("idem create", start=True, idempotency_key="boot")
    assert created.run is not None
    again = client.tasks_start(created.task.id, idempotency_key="boot")
    assert again.run is not None and again.run.id == created.run.id


def test_enqueue_key_replay_after_run_finished(client: Client) -> None:
    task = client.tasks_create("idem finished").task
    first = client.tasks_runs_enqueue(task.id, idempotency_key="once")
    assert first.run is not None
    claim = client.runs_claim(first.run.id)
    client.complete(first.run.id, claim.claim_token)
    replay = client.tasks_runs_enqueue(task.id, idempotency_key="once")
    assert replay.run is not None and replay.run.id == first.run.id
    assert replay.run.status == "completed"
    assert len(client.tasks_runs_list(task.id).runs) == 1
    # Without the key it is a manual retry: a new run.
    fresh = client.tasks_runs_enqueue(task.id)
    assert fresh.run is not None and fresh.run.id != first.run.id


def test_same_key_on_different_tasks_is_independent(client: Client) -> None:
    a = client.tasks_create("a").task
    b = client.tasks_create("b").task
    ra = client.tasks_runs_enqueue(a.id, idempotency_key="shared").run
    rb = client.tasks_runs_enqueue(b.id, idempotency_key="shared").run
    assert ra is not None and rb is not None and ra.id != rb.id
    assert (ra.task_id, rb.task_id) == (a.id, b.id)


def test_runs_claim_same_key_fresh_token(client: Client) -> None:
    run = client.tasks_create("idem claim", start=True).run
    assert run is not None
    first = client.runs_claim(run.id, idempotency_key="c-1", lease_ms=60_000)
    second = client.runs_claim(run.id, idempotency_key="c-1", lease_ms=60_000)
    assert second.run.id == first.run.id == run.id
    assert second.run.attempt == first.run.attempt == 1
    assert second.claim_token != first.claim_token
    # The replaced token is an earlier token of this run: lease_lost (PROTOCOL
    # §6), so its holder stops; a token never handed out stays forbidden.
    for call in (client.heartbeat, client.complete):
        with pytest.raises(errors.LeaseLost) as lost:
            call(run.id, first.claim_token)
        assert lost.value.details["reason"] == "replaced"
    with pytest.raises(errors.Forbidden):
        client.heartbeat(run.id, "not-a-token-of-this-run")
    assert client.heartbeat(run.id, second.claim_token).lease.status == "running"
    assert client.complete(run.id, second.claim_token).lease.status == "completed"
    # Still one claim of the run, never two.
    assert client.runs_get(run.id).run.run.attempt == 1


def test_runs_claim_without_key_twice_is_conflict(client: Client) -> None:
    run = client.tasks_create("claim twice", start=True).run
    assert run is not None
    client.runs_claim(run.id)
    with pytest.raises(errors.Conflict) as info:
        client.runs_claim(run.id)
    assert "claimed" in info.value.message


def test_claim_next_same_key_same_session(daemon: ThreadDaemon, client: Client) -> None:
    run = client.tasks_create("idem claim_next", start=True).run
    other = client.tasks_create("another", start=True).run
    assert run is not None and other is not None
    with daemon.client(agent_name="retrier") as agent:
        first = agent.claim_next(idempotency_key="n-1").claim
        second = agent.claim_next(idempotency_key="n-1").claim
        assert first is not None and second is not None
        assert first.run.id == second.run.id == run.id
        assert second.claim_token != first.claim_token
        assert second.run.attempt == 1
        with pytest.raises(errors.LeaseLost) as lost:
            agent.heartbeat(run.id, first.claim_token)
        assert lost.value.details["reason"] == "replaced"
        assert agent.heartbeat(run.id, second.claim_token).lease.status == "running"
        # Even after the run ended, the replaced token is still "lost".
        assert agent.complete(run.id, second.claim_token).lease.status == "completed"
        with pytest.raises(errors.LeaseLost):
            agent.complete(run.id, first.claim_token)
        # The other run was not touched by the replay.
        assert client.runs_get(other.id).run.run.status == "queued"


def test_claim_next_key_from_other_session_is_independent(
    daemon: ThreadDaemon, client: Client
) -> None:
    r1 = client.tasks_create("one", start=True).run
    r2 = client.tasks_create("two", start=True).run
    assert r1 is not None and r2 is not None
    with daemon.client(agent_name="s1") as a1, daemon.client(agent_name="s2") as a2:
        c1 = a1.claim_next(idempotency_key="same").claim
        c2 = a2.claim_next(idempotency_key="same").claim
        assert c1 is not None and c2 is not None
        assert {c1.run.id, c2.run.id} == {r1.id, r2.id}


def test_complete_retry_after_success(client: Client) -> None:
    run = client.tasks_create("complete twice", start=True).run
    assert run is not None
    claim = client.runs_claim(run.id)
    done = client.complete(run.id, claim.claim_token, result={"v": 1})
    again = client.complete(run.id, claim.claim_token, result={"v": 1})
    assert done.lease.status == again.lease.status == "completed"
    assert again.lease.run_id == run.id
    detail = client.runs_get(run.id).run.run
    assert detail.status == "completed" and detail.result == {"v": 1}
    completed_events = [
        e
        for e in client.tasks_get(run.task_id).task.events
        if "complete" in e.event_type and e.run_id == run.id
    ]
    assert len(completed_events) == 1
    # But it cannot be turned into a failure afterwards.
    with pytest.raises(errors.LeaseLost):
        client.fail(run.id, claim.claim_token, "too late", retry=False)


def test_fail_retry_after_final_failure(client: Client) -> None:
    run = client.tasks_create("fail twice", start=True).run
    assert run is not None
    claim = client.runs_claim(run.id)
    first = client.fail(run.id, claim.claim_token, "broken", retry=False)
    again = client.fail(run.id, claim.claim_token, "broken", retry=False)
    assert first.lease.status == again.lease.status == "failed"
    with pytest.raises(errors.LeaseLost):
        client.complete(run.id, claim.claim_token)


def test_tasks_create_repeated_with_key_returns_the_same_task_and_run(client: Client) -> None:
    first = client.tasks_create("once", start=True, idempotency_key="create-1")
    again = client.tasks_create("once", start=True, idempotency_key="create-1")
    assert again.task.id == first.task.id
    assert first.run is not None and again.run is not None and again.run.id == first.run.id
    other = client.tasks_create("once", start=True, idempotency_key="create-2")
    assert other.task.id != first.task.id
    assert len(client.tasks_list(query="once").tasks) == 2
