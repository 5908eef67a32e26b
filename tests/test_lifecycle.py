"""Run and task lifecycle through the client (PROTOCOL.md §5, §6)."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh import errors

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon


def _agent(daemon: ThreadDaemon, name: str) -> Client:
    return daemon.client(agent_name=name)


# -- the happy path ------------------------------------------------------------------------


def test_create_claim_heartbeat_complete(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("happy", start=True)
    assert created.task.status == "ready"
    assert created.run is not None and created.run.status == "queued"
    assert created.run.task_id == created.task.id
    assert created.run.id.startswith("run_") and created.task.id.startswith("task_")
    assert client.tasks_get(created.task.id).task.task.status == "ready"

    with _agent(daemon, "worker") as agent:
        claim = agent.claim_next(lease_ms=60_000).claim
        assert claim is not None
        assert claim.run.id == created.run.id
        assert claim.run.status == "claimed"
        assert claim.run.attempt == 1
        assert claim.lease.status == "claimed"
        assert claim.task.id == created.task.id
        assert claim.claim_token
        assert claim.run.claimed_by is not None
        assert claim.run.claimed_by.kind == "agent_session"
        assert claim.run.lease_until is not None
        # The token itself is never stored or echoed, only its hash.
        assert claim.run.claim_token_hash != claim.claim_token
        assert client.tasks_get(created.task.id).task.task.status == "in_progress"

        beat = agent.heartbeat(claim.run.id, claim.claim_token)
        assert beat.lease.status == "running"
        assert client.runs_get(claim.run.id).run.run.status == "running"
        assert client.tasks_get(created.task.id).task.task.status == "in_progress"

        done = agent.complete(claim.run.id, claim.claim_token, result={"answer": 42})
        assert done.lease.status == "completed"

    run = client.runs_get(created.run.id).run.run
    assert run.status == "completed"
    assert run.result == {"answer": 42}
    assert run.ended_at is not None
    task = client.tasks_get(created.task.id).task.task
    assert task.status == "completed"
    assert task.closed_at is not None


def test_runs_start_claimed_to_starting_then_running(daemon: ThreadDaemon, client: Client) -> None:
    run = client.tasks_create("starter", start=True).run
    assert run is not None
    with _agent(daemon, "starter") as agent:
        claim = agent.claim_next().claim
        assert claim is not None and claim.run.id == run.id
        started = client.runs_start(run.id)
        assert started.run.status == "starting"
        assert client.runs_get(run.id).run.run.status == "starting"
        assert agent.heartbeat(run.id, claim.claim_token).lease.status == "running"
        # A running run cannot be "started" again.
        with pytest.raises(errors.Conflict):
            client.runs_start(run.id)
        assert agent.complete(run.id, claim.claim_token).lease.status == "completed"


def test_complete_from_claimed_and_starting(daemon: ThreadDaemon, client: Client) -> None:
    a = client.tasks_create("a", start=True).run
    b = client.tasks_create("b", start=True).run
    assert a is not None and b is not None
    ca = client.runs_claim(a.id)
    assert client.complete(a.id, ca.claim_token).lease.status == "completed"
    cb = client.runs_claim(b.id)
    client.runs_start(b.id)
    assert client.complete(b.id, cb.claim_token).lease.status == "completed"


def test_completed_run_cannot_be_completed_again_by_operator(client: Client) -> None:
    run = client.tasks_create("done", start=True).run
    assert run is not None
    claimed = client.runs_claim(run.id)
    client.complete(run.id, claimed.claim_token)
    with pytest.raises(errors.Conflict) as info:
        client.runs_complete(run.id)
    assert "completed" in info.value.message


# -- failures and retries -------------------------------------------------------------------


def test_fail_with_retry_requeues_then_fails(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("flaky", start=True, max_attempts=2)
    assert created.task.max_attempts == 2
    run_id = created.run.id if created.run else ""
    with _agent(daemon, "flaky-agent") as agent:
        first = agent.claim_next().claim
        assert first is not None and first.run.id == run_id and first.run.attempt == 1
        failed = agent.fail(run_id, first.claim_token, "transient", retry=True)
        assert failed.lease.status == "queued"
        run = client.runs_get(run_id).run.run
        assert run.status == "queued"
        assert run.attempt == 1
        assert run.error == "transient"
        assert client.tasks_get(created.task.id).task.task.status == "ready"
        # The old token is dead now.
        with pytest.raises(errors.LeaseLost):
            agent.heartbeat(run_id, first.claim_token)

        # Claimable again after the (50 ms) backoff.
        started = time.monotonic()
        second = agent.claim_next(wait_ms=3000).claim
        assert second is not None, "the retried run never became claimable"
        assert time.monotonic() - started < 2
        assert second.run.id == run_id
        assert second.run.attempt == 2
        assert second.claim_token != first.claim_token

        final = agent.fail(run_id, second.claim_token, "permanent", retry=True)
        assert final.lease.status == "failed"
    run = client.runs_get(run_id).run.run
    assert run.status == "failed" and run.error == "permanent" and run.attempt == 2
    assert client.tasks_get(created.task.id).task.task.status == "failed"
    with _agent(daemon, "late") as late:
        assert late.claim_next().claim is None


def test_fail_without_retry_is_final(client: Client) -> None:
    created = client.tasks_create("no retry", start=True, max_attempts=5)
    assert created.run is not None
    claim = client.runs_claim(created.run.id)
    assert client.fail(created.run.id, claim.claim_token, "fatal", retry=False).lease.status == (
        "failed"
    )
    assert client.tasks_get(created.task.id).task.task.status == "failed"


def test_retry_waits_for_backoff(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(retry_backoff_base_ms=800, retry_backoff_cap_ms=800)
    with d.client() as c, d.client(agent_name="patient") as agent:
        run = c.tasks_create("backoff", start=True, max_attempts=3).run
        assert run is not None
        first = agent.claim_next().claim
        assert first is not None
        agent.fail(run.id, first.claim_token, "later")
        failed_at = time.monotonic()
        assert agent.claim_next().claim is None, "claimable before its backoff ran out"
        second = agent.claim_next(wait_ms=5000).claim
        waited = time.monotonic() - failed_at
        assert second is not None and second.run.id == run.id
        assert 0.6 <= waited < 2.5, waited


def test_manual_retry_after_failure_makes_new_run(client: Client) -> None:
    created = client.tasks_create("retry me", start=True)
    assert created.run is not None
    claim = client.runs_claim(created.run.id)
    client.fail(created.run.id, claim.claim_token, "boom", retry=False)
    again = client.tasks_runs_enqueue(created.task.id)
    assert again.run is not None and again.run.id != created.run.id
    assert again.run.status == "queued"
    assert client.tasks_get(created.task.id).task.task.status == "ready"
    runs = client.tasks_runs_list(created.task.id).runs
    assert {r.id for r in runs} == {created.run.id, again.run.id}


# -- release and cancel ---------------------------------------------------------------------


def test_release_requeues_with_same_attempt(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("hot potato", start=True)
    assert created.run is not None
    with _agent(daemon, "r1") as a1, _agent(daemon, "r2") as a2:
        first = a1.claim_next().claim
        assert first is not None
        released = a1.release(first.run.id, first.claim_token, reason="not mine")
        assert released.lease.status == "queued"
        assert client.runs_get(first.run.id).run.run.status == "queued"
        assert client.tasks_get(created.task.id).task.task.status == "ready"
        with pytest.raises(errors.LeaseLost):
            a1.complete(first.run.id, first.claim_token)
        second = a2.claim_next().claim
        assert second is not None and second.run.id == first.run.id
        assert second.run.attempt == first.run.attempt
        # The releasing session is free to claim again.
        other = client.tasks_create("next one", start=True).run
        assert other is not None
        third = a1.claim_next().claim
        assert third is not None and third.run.id == other.id


def test_release_does_not_use_up_attempts(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("release loop", start=True, max_attempts=1)
    assert created.run is not None
    with _agent(daemon, "looper") as agent:
        for _ in range(3):
            claim = agent.claim_next().claim
            assert claim is not None and claim.run.attempt == 1
            agent.release(claim.run.id, claim.claim_token)
        claim = agent.claim_next().claim
        assert claim is not None
        assert agent.complete(claim.run.id, claim.claim_token).lease.status == "completed"


def test_cancel_active_run_fences_holder(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("cancel me", start=True)
    assert created.run is not None
    with _agent(daemon, "victim") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        agent.heartbeat(claim.run.id, claim.claim_token)
        canceled = client.runs_cancel(claim.run.id, reason="changed my mind")
        assert canceled.run.status == "canceled"
        with pytest.raises(errors.LeaseLost):
            agent.heartbeat(claim.run.id, claim.claim_token)
        with pytest.raises(errors.LeaseLost):
            agent.complete(claim.run.id, claim.claim_token)
        assert client.runs_get(claim.run.id).run.run.status == "canceled"
        assert client.tasks_get(created.task.id).task.task.status == "canceled"
        # The session's claim ended with the cancel: it may claim again.
        other = client.tasks_create("after cancel", start=True).run
        assert other is not None
        nxt = agent.claim_next().claim
        assert nxt is not None and nxt.run.id == other.id


def test_cancel_queued_run(client: Client) -> None:
    run = client.tasks_create("cancel queued", start=True).run
    assert run is not None
    assert client.runs_cancel(run.id).run.status == "canceled"
    with pytest.raises(errors.Conflict):
        client.runs_claim(run.id)
    with pytest.raises(errors.Conflict):
        client.runs_cancel(run.id)


# -- claim rules ---------------------------------------------------------------------------


def test_one_active_claim_per_session(daemon: ThreadDaemon, client: Client) -> None:
    first_run = client.tasks_create("one", start=True).run
    client.tasks_create("two", start=True)
    assert first_run is not None
    with _agent(daemon, "greedy") as agent:
        held = agent.claim_next().claim
        assert held is not None and held.run.id == first_run.id
        with pytest.raises(errors.Conflict) as info:
            agent.claim_next()
        assert held.run.id in info.value.message
        # After completing, the session may claim the next one.
        agent.complete(held.run.id, held.claim_token)
        nxt = agent.claim_next().claim
        assert nxt is not None and nxt.run.id != held.run.id


def test_priority_then_age_order(client: Client) -> None:
    order = ["low", "medium", "urgent", "high", "urgent", "low", "high"]
    made: list[tuple[str, str]] = []
    for i, prio in enumerate(order):
        run = client.tasks_create(f"p{i}", priority=prio, start=True).run
        assert run is not None
        made.append((prio, run.id))
        time.sleep(0.002)
    rank = {"urgent": 0, "high": 1, "medium": 2, "low": 3}
    expected = [rid for _, rid in sorted(made, key=lambda m: (rank[m[0]], made.index(m)))]
    got = []
    for _ in made:
        claim = client.claim_next().claim
        assert claim is not None
        got.append(claim.run.id)
        client.complete(claim.run.id, claim.claim_token)
    assert got == expected
    assert client.claim_next().claim is None


def test_update_priority_changes_claim_order(client: Client) -> None:
    first = client.tasks_create("first low", priority="low", start=True)
    second = client.tasks_create("second medium", priority="medium", start=True)
    updated = client.tasks_update(first.task.id, priority="urgent")
    assert updated.task.priority == "urgent"
    assert client.tasks_get(first.task.id).task.task.priority == "urgent"
    claim = client.claim_next().claim
    assert claim is not None
    assert claim.run.id == (first.run.id if first.run else None)
    assert second.run is not None


def test_network_channel_filter(client: Client) -> None:
    plain = client.tasks_create("plain", start=True).run
    gpu = client.tasks_create("gpu work", network_channel="gpu", start=True).run
    assert plain is not None and gpu is not None
    assert client.claim_next(network_channel="tpu").claim is None
    claim = client.claim_next(network_channel="gpu").claim
    assert claim is not None and claim.run.id == gpu.id
    assert claim.run.network_channel == "gpu"
    assert client.claim_next(network_channel="gpu").claim is None
    any_claim = client.claim_next().claim
    assert any_claim is not None and any_claim.run.id == plain.id


def test_draft_and_pending_tasks_are_not_claimable(client: Client) -> None:
    draft = client.tasks_create("draft", draft=True)
    assert draft.task.status == "draft" and draft.run is None
    pending = client.tasks_create("pending")
    assert pending.task.status == "pending" and pending.run is None
    assert client.claim_next().claim is None


# -- long-poll -------------------------------------------------------------------------------


def test_long_poll_wakes_on_enqueue(daemon: ThreadDaemon, client: Client) -> None:
    result: dict[str, Any] = {}

    def waiter() -> None:
        with _agent(daemon, "poller") as agent:
            result["claim"] = agent.claim_next(wait_ms=5000).claim
            result["at"] = time.monotonic()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.4)
    assert t.is_alive(), "claim_next returned before any work existed"
    run = client.tasks_create("wake up", start=True).run
    enqueued_at = time.monotonic()
    t.join(6)
    assert not t.is_alive()
    assert result["claim"] is not None and result["claim"].run.id == (run.id if run else None)
    assert result["at"] - enqueued_at < 2


def test_long_poll_times_out_with_no_claim(client: Client) -> None:
    started = time.monotonic()
    assert client.claim_next(wait_ms=300).claim is None
    elapsed = time.monotonic() - started
    assert 0.28 <= elapsed < 2, elapsed


def test_long_poll_ignores_non_matching_work(daemon: ThreadDaemon, client: Client) -> None:
    result: dict[str, Any] = {}

    def waiter() -> None:
        with _agent(daemon, "gpu-poller") as agent:
            result["claim"] = agent.claim_next(wait_ms=3000, network_channel="gpu").claim

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    client.tasks_create("cpu only", network_channel="cpu", start=True)
    time.sleep(0.3)
    assert t.is_alive(), "a non-matching run must not end the wait"
    gpu = client.tasks_create("gpu", network_channel="gpu", start=True).run
    t.join(5)
    assert not t.is_alive()
    assert result["claim"] is not None and result["claim"].run.id == (gpu.id if gpu else None)


# -- tasks: list, update, delete, identifiers ------------------------------------------------


def test_tasks_list_filters(client: Client) -> None:
    a = client.tasks_create("alpha build", priority="high", start=True).task
    b = client.tasks_create("beta deploy", priority="low").task
    c = client.tasks_create("gamma build", priority="low", start=True).task
    ready = {t.id for t in client.tasks_list(status="ready").tasks}
    assert ready == {a.id, c.id}
    assert {t.id for t in client.tasks_list(status="pending").tasks} == {b.id}
    assert {t.id for t in client.tasks_list(priority="low").tasks} == {b.id, c.id}
    assert {t.id for t in client.tasks_list(query="build").tasks} == {a.id, c.id}
    assert {t.id for t in client.tasks_list(query="build", priority="low").tasks} == {c.id}
    assert {t.id for t in client.tasks_list(query=b.identifier).tasks} == {b.id}
    assert client.tasks_list(query="nothing like this").tasks == []
    items = {t.id: t for t in client.tasks_list().tasks}
    assert set(items) == {a.id, b.id, c.id}
    active = items[a.id].active_run
    assert active is not None and active.status == "queued"
    assert items[b.id].active_run is None


def test_tasks_list_query_is_literal(client: Client) -> None:
    client.tasks_create("100% done")
    client.tasks_create("1000 done")
    assert [t.title for t in client.tasks_list(query="100%").tasks] == ["100% done"]
    assert client.tasks_list(query="_").tasks == []


def test_tasks_list_pagination(client: Client) -> None:
    ids = {client.tasks_create(f"page {i}").task.id for i in range(5)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = client.tasks_list(limit=2, cursor=cursor)
        pages += 1
        assert len(page.tasks) <= 2
        seen.extend(t.id for t in page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 10
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 5
    assert pages == 3


def test_tasks_update_fields(client: Client) -> None:
    task = client.tasks_create("old title", description="d").task
    updated = client.tasks_update(task.id, title="new title", priority="high", description=None)
    assert updated.task.title == "new title"
    assert updated.task.priority == "high"
    assert updated.task.description is None
    got = client.tasks_get(task.identifier).task.task
    assert (got.title, got.priority, got.description) == ("new title", "high", None)
    with pytest.raises(errors.NotFound):
        client.tasks_update("T-9999", priority="low")


def test_tasks_delete(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("delete me", start=True)
    assert created.run is not None
    claim = client.runs_claim(created.run.id)
    with pytest.raises(errors.Conflict):
        client.tasks_delete(created.task.id)
    assert client.tasks_get(created.task.id).task.task.status == "in_progress"
    client.complete(created.run.id, claim.claim_token)
    assert client.tasks_delete(created.task.id) is not None
    with pytest.raises(errors.NotFound):
        client.tasks_get(created.task.id)
    with pytest.raises(errors.NotFound):
        client.tasks_get(created.task.identifier)
    with pytest.raises(errors.NotFound):
        client.runs_get(created.run.id)
    with pytest.raises(errors.NotFound):
        client.tasks_delete(created.task.id)


def test_tasks_delete_with_queued_run(client: Client) -> None:
    created = client.tasks_create("queued delete", start=True)
    client.tasks_delete(created.task.identifier)
    with pytest.raises(errors.NotFound):
        client.tasks_get(created.task.id)
    assert client.claim_next().claim is None


def test_identifiers_and_lookup(client: Client) -> None:
    t1 = client.tasks_create("first").task
    t2 = client.tasks_create("second").task
    assert (t1.identifier, t2.identifier) == ("T-1", "T-2")
    assert client.tasks_get("T-1").task.task.id == t1.id
    assert client.tasks_get("T-2").task.task.id == t2.id
    assert client.tasks_get(t2.id).task.task.identifier == "T-2"
    started = client.tasks_start("T-1")
    assert started.run is not None and started.run.task_id == t1.id
    assert client.tasks_runs_list("T-1").runs[0].id == started.run.id
    # Numbers are never reused, even after a delete.
    client.tasks_delete("T-2")
    assert client.tasks_create("third").task.identifier == "T-3"


def test_workspace_identifiers(short_dir: str, client: Client) -> None:
    ws = os.path.join(short_dir, "myproj")
    a = client.tasks_create("in ws", workspace=ws).task
    b = client.tasks_create("in ws too", workspace=ws).task
    g = client.tasks_create("global").task
    assert a.scope == "workspace" and a.workspace_id is not None
    assert a.workspace_id.startswith("ws_")
    key, _, num = a.identifier.rpartition("-")
    assert key == "MYPROJ" and num == "1"
    assert b.identifier == f"{key}-2"
    assert g.identifier == "T-1" and g.scope == "global"
    assert client.tasks_get(b.identifier).task.task.id == b.id
    assert {t.id for t in client.tasks_list(workspace=ws).tasks} == {a.id, b.id}
    other = client.tasks_create("elsewhere", workspace=os.path.join(short_dir, "other")).task
    assert other.identifier.endswith("-1") and not other.identifier.startswith(key + "-")


def test_workspace_claim_filter(short_dir: str, client: Client) -> None:
    ws = os.path.join(short_dir, "wsclaim")
    client.tasks_create("global", start=True)
    inside = client.tasks_create("inside", workspace=ws, start=True).run
    assert inside is not None
    claim = client.claim_next(workspace=ws).claim
    assert claim is not None and claim.run.id == inside.id
    assert client.claim_next(workspace=os.path.join(short_dir, "unknown")).claim is None


def test_repeated_retries_come_due_promptly(make_daemon: Any) -> None:
    """Each retry backoff must wake a long-polling claimer when it runs out,
    however the fail lines up with the daemon's own timers."""
    d: ThreadDaemon = make_daemon(retry_backoff_base_ms=10, retry_backoff_cap_ms=10)
    with d.client() as c, d.client(agent_name="looper") as agent:
        run = c.tasks_create("again and again", start=True, max_attempts=1000).run
        assert run is not None
        slow: list[tuple[int, float]] = []
        for i in range(150):
            started = time.monotonic()
            claim = agent.claim_next(wait_ms=2000).claim
            elapsed = time.monotonic() - started
            assert claim is not None, f"iteration {i}: retried run never became claimable"
            assert claim.run.attempt == i + 1
            if elapsed > 1.0:
                slow.append((i, round(elapsed, 2)))
                break
            agent.fail(run.id, claim.claim_token, "again")
        assert slow == [], f"claim_next slept through the backoff (iteration, seconds): {slow}"


def test_stale_fail_replay_cannot_end_a_newer_claim(daemon: ThreadDaemon, client: Client) -> None:
    """Agent A fails with retry; B claims the re-queued run; A repeating its
    fail (say, after a lost reply) must get lease_lost and leave B's claim alone."""
    created = client.tasks_create("contested", start=True, max_attempts=3)
    assert created.run is not None
    run_id = created.run.id
    with _agent(daemon, "agent-a") as a, _agent(daemon, "agent-b") as b:
        first = a.claim_next().claim
        assert first is not None
        assert a.fail(run_id, first.claim_token, "oops").lease.status == "queued"
        # While nobody holds the run, the repeated fail is answered as a replay.
        assert a.fail(run_id, first.claim_token, "oops").lease.status == "queued"
        second = b.claim_next(wait_ms=3000).claim
        assert second is not None and second.run.id == run_id
        with pytest.raises(errors.LeaseLost):
            a.fail(run_id, first.claim_token, "oops")
        assert b.heartbeat(run_id, second.claim_token).lease.status == "running"
        assert b.complete(run_id, second.claim_token).lease.status == "completed"


def test_event_payload_times_are_rfc3339(client: Client) -> None:
    created = client.tasks_create("timed", start=True)
    assert created.run is not None
    claim = client.runs_claim(created.run.id, lease_ms=60_000)
    events = client.tasks_get(created.task.id).task.events
    claimed = next(e for e in events if e.event_type == "run.claimed")
    assert claimed.payload["lease_until"] == claim.lease.lease_until
    assert claimed.payload["lease_until"].endswith("Z") and "T" in claimed.payload["lease_until"]


def test_operator_complete_fences_the_holder(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("overridden", start=True)
    assert created.run is not None
    with _agent(daemon, "holder") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        client.runs_complete(created.run.id, result={"by": "operator"})
        with pytest.raises(errors.LeaseLost) as lost:
            agent.complete(created.run.id, claim.claim_token, result={"by": "agent"})
        assert lost.value.details["reason"] == "completed_by_operator"
    assert client.runs_get(created.run.id).run.run.result == {"by": "operator"}


def test_draft_is_unclaimable_until_published(daemon: ThreadDaemon, client: Client) -> None:
    draft = client.tasks_create("later", draft=True, start=True, input={"step": 1})
    assert draft.task.status == "draft" and draft.run is None
    with _agent(daemon, "eager") as agent:
        assert agent.claim_next().claim is None
        published = client.tasks_publish(draft.task.identifier)
        assert published.task.draft is False and published.task.status == "ready"
        assert published.run is not None and published.run.input == {"step": 1}
        claim = agent.claim_next().claim
        assert claim is not None and claim.run.id == published.run.id
    with pytest.raises(errors.Conflict, match="not a draft"):
        client.tasks_publish(draft.task.id)
