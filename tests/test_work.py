"""``Client.claim()``: leased work that heartbeats by itself and finishes
however the ``with`` block ends (agh/work.py), against a real daemon."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from agh import errors
from tests.helpers.daemons import ThreadDaemon, chained_claims, wait_run_status

if TYPE_CHECKING:
    from agh.client import Client


def test_a_short_lease_held_long_stays_alive_and_completes(
    daemon: ThreadDaemon, client: Client
) -> None:
    created = client.tasks_create("long job", start=True)
    assert created.run is not None
    with daemon.client(agent_name="worker") as agent:
        with agent.claim(lease_ms=1500) as work:
            assert work is not None and work.run.id == created.run.id
            time.sleep(4)  # more than twice the lease, without a manual heartbeat
            assert work.lost is None
            work.result = {"ok": True}
        run = client.runs_get(created.run.id).run.run
    assert run.status == "completed" and run.result == {"ok": True}
    assert run.attempt == 1  # never expired and re-claimed


def test_an_exception_fails_the_run_with_its_text(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("doomed", start=True)
    assert created.run is not None
    with (
        daemon.client(agent_name="worker") as agent,
        pytest.raises(ValueError, match="boom"),
        agent.claim() as work,
    ):
        assert work is not None
        raise ValueError("boom")
    run = client.runs_get(created.run.id).run.run
    assert run.status == "failed"
    assert run.error is not None and "ValueError: boom" in run.error


def test_keyboard_interrupt_releases_the_run_for_the_next_agent(
    daemon: ThreadDaemon, client: Client
) -> None:
    created = client.tasks_create("interrupted", start=True)
    assert created.run is not None
    with (
        daemon.client(agent_name="first") as first,
        pytest.raises(KeyboardInterrupt),
        first.claim(lease_ms=300_000) as work,
    ):
        assert work is not None
        raise KeyboardInterrupt
    assert wait_run_status(client, created.run.id, "queued").status == "queued"
    with daemon.client(agent_name="second") as second:
        again = second.claim_next().claim
        assert again is not None and again.run.id == created.run.id
        assert again.run.attempt == 1  # a release keeps the attempt


def test_nothing_claimable_yields_none(daemon: ThreadDaemon) -> None:
    with daemon.client(agent_name="idle") as agent:
        started = time.monotonic()
        with agent.claim(wait_ms=200) as work:
            assert work is None
        assert time.monotonic() - started >= 0.2


def test_a_lost_lease_makes_the_finish_raise(daemon: ThreadDaemon, client: Client) -> None:
    noticed: errors.AghError | None = None
    created = client.tasks_create("taken away", start=True)
    with (
        daemon.client(agent_name="worker") as agent,
        pytest.raises(errors.LeaseLost),
        agent.claim(lease_ms=1200) as work,
    ):
        assert work is not None
        client.tasks_cancel(created.task.id)
        deadline = time.monotonic() + 5
        while work.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        noticed = work.lost
    # The heartbeat saw the loss during the block (the finish then raised it).
    assert isinstance(noticed, errors.LeaseLost)
    assert client.tasks_get(created.task.id).task.task.status == "canceled"


def test_work_logs_asks_and_reads_messages(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("chatty", start=True)
    assert created.run is not None
    with daemon.client(agent_name="worker") as agent, agent.claim() as work:
        assert work is not None
        work.log("halfway", level="warn", step=2)
        work.ask("which branch?")
        client.tasks_send(created.task.id, "main")
        assert [m.message for m in work.messages()] == ["main"]
    logs = client.runs_logs(created.run.id).logs
    assert [(line.level, line.message, line.step) for line in logs] == [("warn", "halfway", 2)]
    assert client.runs_get(created.run.id).run.run.status == "completed"


def test_the_claims_loop_makes_one_call_per_run(daemon: ThreadDaemon, client: Client) -> None:
    ids = [client.tasks_create(f"job {i}", start=True, input={"n": i}).run for i in range(5)]
    done: list[int] = []
    with daemon.client(agent_name="looper") as agent:
        for block in agent.claims(wait_ms=1000):
            try:
                with block as work:
                    if work.input["n"] == 2:
                        raise ValueError("two is bad")
                    work.result = {"double": work.input["n"] * 2}
                    done.append(work.input["n"])
            except ValueError:
                pass  # that run failed; the loop goes on
            if len(done) == 4:
                break
    assert done == [0, 1, 3, 4]
    runs = [client.runs_get(r.id).run.run for r in ids if r is not None]
    assert [r.status for r in runs] == [
        "completed",
        "completed",
        "failed",
        "completed",
        "completed",
    ]
    assert runs[4].result == {"double": 8}
    # The first run by claim_next; each of the other four by the finish before it.
    assert chained_claims(daemon.config.db_path) == 4


def test_a_run_claimed_ahead_is_released_when_the_loop_ends(
    daemon: ThreadDaemon, client: Client
) -> None:
    first = client.tasks_create("first", start=True).run
    second = client.tasks_create("second", start=True).run
    assert first is not None and second is not None
    with daemon.client(agent_name="quitter") as agent:
        for block in agent.claims(wait_ms=1000):
            with block as work:
                assert work.run.id == first.id
            break  # the complete already claimed "second" for this loop
    again = wait_run_status(client, second.id, "queued")
    assert again.attempt == 0  # released: no attempt spent
    events = [e.event_type for e in client.tasks_timeline(second.task_id).timeline]
    assert "run.released" in events


def test_an_item_never_entered_is_released(daemon: ThreadDaemon, client: Client) -> None:
    only = client.tasks_create("skipped", start=True).run
    assert only is not None
    with daemon.client(agent_name="skipper") as agent:
        loop = agent.claims(wait_ms=1000)
        next(loop)  # claimed, never entered
        with pytest.raises(RuntimeError):  # resuming the loop releases it, then
            # claims it again (the only run), entered twice here:
            block = next(loop)
            with block:
                pass
            with block:
                pass
        loop.close()
    assert wait_run_status(client, only.id, "completed").status == "completed"
