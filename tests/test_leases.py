"""Leases: expiry by the reaper, fencing of stale tokens, and start-up recovery
of leases that ran out while the daemon was down (PROTOCOL.md §6, §8)."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import pytest

from agh import errors
from agh.client import Client
from tests.helpers.daemons import ThreadDaemon, spawn_daemon, stop_process, wait_run_status

if TYPE_CHECKING:
    import subprocess


def test_expired_lease_requeues_run(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("expiring", start=True, max_attempts=2)
    assert created.run is not None
    with daemon.client(agent_name="sleepy") as agent:
        claim = agent.claim_next(lease_ms=1000).claim
        assert claim is not None and claim.run.attempt == 1
        claimed_at = time.monotonic()
        run = wait_run_status(client, claim.run.id, "queued")
        # Promised: within one second of the lease running out.
        assert run.status == "queued", run
        assert time.monotonic() - claimed_at < 3.0
        assert run.lease_until is None
        assert run.claimed_by is None
        assert run.error == "lease expired"
        assert client.tasks_get(created.task.id).task.task.status == "ready"

        # The stale holder is fenced off, whatever it tries.
        with pytest.raises(errors.LeaseLost):
            agent.heartbeat(claim.run.id, claim.claim_token)
        with pytest.raises(errors.LeaseLost):
            agent.complete(claim.run.id, claim.claim_token, result={"late": True})
        with pytest.raises(errors.LeaseLost):
            agent.fail(claim.run.id, claim.claim_token, "late")
        with pytest.raises(errors.LeaseLost):
            agent.release(claim.run.id, claim.claim_token)
        # A made-up token is not a lost lease: it never was one.
        with pytest.raises(errors.Forbidden):
            agent.heartbeat(claim.run.id, "made-up-token")

        # The lost claim no longer counts against the session.
        again = agent.claim_next(lease_ms=60_000).claim
        assert again is not None and again.run.id == claim.run.id
        assert again.run.attempt == 2
        # The earlier token stays fenced while the new holder works.
        with pytest.raises(errors.LeaseLost):
            agent.heartbeat(claim.run.id, claim.claim_token)
        assert agent.complete(again.run.id, again.claim_token).lease.status == "completed"
    assert client.runs_get(created.run.id).run.run.result is None


def test_expired_lease_without_attempts_left_fails(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("one shot", start=True, max_attempts=1)
    assert created.run is not None
    claim = client.runs_claim(created.run.id, lease_ms=1000)
    run = wait_run_status(client, created.run.id, "failed")
    assert run.status == "failed", run
    assert run.error == "lease expired"
    assert run.ended_at is not None
    task = client.tasks_get(created.task.id).task.task
    assert task.status == "failed"
    with pytest.raises(errors.LeaseLost):
        client.complete(created.run.id, claim.claim_token)
    assert client.claim_next().claim is None


def test_heartbeat_keeps_lease_alive(client: Client) -> None:
    created = client.tasks_create("kept alive", start=True)
    assert created.run is not None
    claim = client.runs_claim(created.run.id, lease_ms=1000)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        lease = client.heartbeat(created.run.id, claim.claim_token).lease
        assert lease.status == "running"
        time.sleep(0.3)
    assert client.runs_get(created.run.id).run.run.status == "running"
    # Once the heartbeats stop, the (short) lease runs out again.
    run = wait_run_status(client, created.run.id, "failed")
    assert run.status == "failed" and run.error == "lease expired"


def test_heartbeat_can_extend_lease(client: Client) -> None:
    created = client.tasks_create("extend", start=True)
    assert created.run is not None
    claim = client.runs_claim(created.run.id, lease_ms=1000)
    client.heartbeat(created.run.id, claim.claim_token, lease_ms=60_000)
    time.sleep(2.2)
    assert client.runs_get(created.run.id).run.run.status == "running"
    assert client.complete(created.run.id, claim.claim_token).lease.status == "completed"


def test_every_expired_lease_is_handled(daemon: ThreadDaemon, client: Client) -> None:
    runs = []
    for i in range(20):
        r = client.tasks_create(f"many {i}", start=True, max_attempts=3).run
        assert r is not None
        runs.append(r.id)
    for rid in runs:
        client.runs_claim(rid, lease_ms=1000)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        statuses = {client.runs_get(rid).run.run.status for rid in runs}
        if statuses == {"queued"}:
            break
        time.sleep(0.1)
    assert statuses == {"queued"}


def test_lease_ms_bounds(client: Client) -> None:
    created = client.tasks_create("bounds", start=True)
    assert created.run is not None
    with pytest.raises(errors.InvalidParams):
        client.runs_claim(created.run.id, lease_ms=999)
    with pytest.raises(errors.InvalidParams):
        client.claim_next(lease_ms=86_400_001)
    assert client.runs_get(created.run.id).run.run.status == "queued"


@pytest.mark.slow
def test_startup_recovers_leases_that_expired_while_down(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    sock = os.path.join(short_dir, "rec.sock")
    db = os.path.join(short_dir, "rec.db")
    procs.append(spawn_daemon(sock, db))
    with Client(sock) as c:
        retry = c.tasks_create("will requeue", start=True, max_attempts=2).run
        final = c.tasks_create("will fail", start=True, max_attempts=1).run
        untouched = c.tasks_create("long lease", start=True).run
        assert retry is not None and final is not None and untouched is not None
        retry_claim = c.runs_claim(retry.id, lease_ms=1000)
        final_claim = c.runs_claim(final.id, lease_ms=1000)
        long_claim = c.runs_claim(untouched.id, lease_ms=600_000)
    stop_process(procs[0], signal.SIGKILL)
    time.sleep(1.5)
    procs.append(spawn_daemon(sock, db))
    with Client(sock) as c:
        # Straight after start-up, before any reaper tick could matter.
        r1 = c.runs_get(retry.id).run.run
        r2 = c.runs_get(final.id).run.run
        r3 = c.runs_get(untouched.id).run.run
        assert r1.status == "queued" and r1.error == "lease expired", r1
        assert r2.status == "failed" and r2.error == "lease expired", r2
        assert r3.status == "claimed", r3
        assert c.tasks_get(final.task_id).task.task.status == "failed"
        assert c.tasks_get(retry.task_id).task.task.status == "ready"
        with pytest.raises(errors.LeaseLost):
            c.heartbeat(retry.id, retry_claim.claim_token)
        with pytest.raises(errors.LeaseLost):
            c.complete(final.id, final_claim.claim_token)
        # The unexpired claim survived the crash and its token still works.
        assert c.heartbeat(untouched.id, long_claim.claim_token).lease.status == "running"
        again = c.runs_claim(retry.id)
        assert again.run.attempt == 2
    assert stop_process(procs[1]) == 0
