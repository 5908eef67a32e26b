"""One round trip per cycle (PROTOCOL §6): ``agent.complete``,
``agent.fail`` and ``agent.release`` with ``next`` finish the run and claim
the next one for the same session in one transaction — through a real
daemon and socket, alone and under 16 concurrent agents."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh import protocol as p
from agh.errors import Forbidden, LeaseLost
from tests.helpers.daemons import chained_claims
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from collections.abc import Callable

    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon

NEXT = p.NextClaimParams()


def claimed_runs(c: Client) -> set[str]:
    """Ids of the runs held right now (claimed, starting or running)."""
    return {
        item.active_run.id
        for item in c.tasks_list(limit=1000).tasks
        if item.active_run is not None and item.active_run.status != "queued"
    }


def first_claim(agent: Client) -> p.Claim:
    got = agent.claim_next().claim
    assert got is not None
    return got


def test_complete_with_next_claims_the_next_run_in_the_same_call(daemon: ThreadDaemon) -> None:
    with daemon.client() as c, daemon.client(agent_name="cycler") as agent:
        made = [c.tasks_create(f"t{i}", start=True).run for i in range(3)]
        ids = [r.id for r in made if r is not None]
        got = first_claim(agent)
        done = agent.complete(got.run.id, got.claim_token, {"n": 0}, next=NEXT)
        assert done.lease.status == "completed" and done.lease.run_id == got.run.id
        assert isinstance(done.next, p.Claim)
        assert done.next.run.id == ids[1] and done.next.claim_token != got.claim_token
        # For the same session, under its own lease and token.
        assert agent.session is not None
        assert done.next.run.session_id == agent.session.session_id
        assert done.next.lease.status == "claimed"
        agent.heartbeat(done.next.run.id, done.next.claim_token)
        last = agent.complete(done.next.run.id, done.next.claim_token, next=NEXT)
        assert isinstance(last.next, p.Claim) and last.next.run.id == ids[2]
        empty = agent.complete(last.next.run.id, last.next.claim_token, next=NEXT)
        assert empty.next is None
        assert [c.runs_get(i).run.run.status for i in ids] == ["completed"] * 3


def test_the_reply_gains_next_only_when_asked(daemon: ThreadDaemon) -> None:
    with daemon.client() as c, daemon.client(agent_name="raw") as agent:
        c.tasks_create("a", start=True)
        c.tasks_create("b", start=True)
        got = first_claim(agent)
        raw = RawConn(daemon.socket)
        try:
            raw.request(
                "agent.complete",
                {"run_id": got.run.id, "claim_token": got.claim_token, "next": {}},
            )
            reply = raw.recv()
            assert set(reply["result"]) == {"lease", "next"}
            chained = reply["result"]["next"]
            assert set(chained) == {"coordination_channel", "lease", "run", "task", "claim_token"}
            raw.request(
                "agent.complete",
                {"run_id": chained["run"]["id"], "claim_token": chained["claim_token"]},
                id=2,
            )
            assert set(raw.recv()["result"]) == {"lease"}  # as before: no "next" key
        finally:
            raw.close()


def test_fail_with_next_goes_on_and_release_never_gets_the_same_run(
    daemon: ThreadDaemon,
) -> None:
    with daemon.client() as c, daemon.client(agent_name="picky") as agent:
        a = c.tasks_create("a", start=True, max_attempts=3).run
        assert a is not None
        got = first_claim(agent)
        # The only run, released with next: never handed straight back.
        back = agent.release(got.run.id, got.claim_token, "not mine", next=NEXT)
        assert back.lease.status == "queued" and back.next is None
        b = c.tasks_create("b", start=True).run
        assert b is not None
        got = first_claim(agent)
        assert got.run.id == a.id
        released = agent.release(got.run.id, got.claim_token, next=NEXT)
        assert isinstance(released.next, p.Claim) and released.next.run.id == b.id
        failed = agent.fail(released.next.run.id, released.next.claim_token, "boom", next=NEXT)
        assert failed.lease.status == "failed"  # b had one attempt
        assert isinstance(failed.next, p.Claim) and failed.next.run.id == a.id


def test_a_fenced_finish_claims_nothing(daemon: ThreadDaemon) -> None:
    with (
        daemon.client() as c,
        daemon.client(agent_name="holder") as agent,
        daemon.client(agent_name="thief") as thief,
    ):
        for i in range(3):
            c.tasks_create(f"t{i}", start=True, max_attempts=3)
        got = first_claim(agent)
        before = claimed_runs(c)
        finishes: list[Callable[[], object]] = [
            lambda: thief.complete(got.run.id, "not-the-token", next=NEXT),
            lambda: thief.fail(got.run.id, "not-the-token", "x", next=NEXT),
            lambda: thief.release(got.run.id, "not-the-token", next=NEXT),
        ]
        for finish in finishes:
            with pytest.raises(Forbidden):
                finish()
        assert claimed_runs(c) == before
        # A stale token: an operator canceled the run meanwhile.
        c.runs_cancel(got.run.id, "operator says stop")
        with pytest.raises(LeaseLost):
            agent.complete(got.run.id, got.claim_token, next=NEXT)
        assert claimed_runs(c) == set()


def test_the_finished_run_frees_its_slot_before_the_next_claim(make_daemon: Any) -> None:
    daemon: ThreadDaemon = make_daemon(max_claims_per_session=1)
    with daemon.client() as c, daemon.client(agent_name="one-at-a-time") as agent:
        c.tasks_create("a", start=True)
        c.tasks_create("b", start=True)
        got = first_claim(agent)
        done = agent.complete(got.run.id, got.claim_token, next=NEXT)
        assert isinstance(done.next, p.Claim)  # not refused: the limit is 1


def test_a_retried_finish_hands_out_the_same_next_claim(daemon: ThreadDaemon) -> None:
    """The reply to a complete with next was lost; the agent sends it again:
    it gets the same next run under a fresh token, not a second run."""
    with daemon.client() as c, daemon.client(agent_name="retrier") as agent:
        for i in range(3):
            c.tasks_create(f"t{i}", start=True)
        got = first_claim(agent)
        first = agent.complete(got.run.id, got.claim_token, {"ok": 1}, next=NEXT)
        again = agent.complete(got.run.id, got.claim_token, {"ok": 1}, next=NEXT)
        assert isinstance(first.next, p.Claim) and isinstance(again.next, p.Claim)
        assert again.next.run.id == first.next.run.id
        assert again.next.claim_token != first.next.claim_token
        assert claimed_runs(c) == {first.next.run.id}
        with pytest.raises(LeaseLost) as lost:
            agent.heartbeat(first.next.run.id, first.next.claim_token)
        assert lost.value.details["reason"] == "replaced"
        agent.heartbeat(again.next.run.id, again.next.claim_token)


def test_a_waiting_next_claim_long_polls_after_the_finish_is_durable(
    daemon: ThreadDaemon,
) -> None:
    with daemon.client() as c, daemon.client(agent_name="poller") as agent:
        c.tasks_create("first", start=True)
        got = first_claim(agent)
        replies: list[p.FinishResult] = []
        waiting = threading.Thread(
            target=lambda: replies.append(
                agent.complete(got.run.id, got.claim_token, next=p.NextClaimParams(wait_ms=10_000))
            )
        )
        started = time.monotonic()
        waiting.start()
        # While the reply is held, the finish is already committed.
        deadline = time.monotonic() + 5
        while c.runs_get(got.run.id).run.run.status != "completed":
            assert time.monotonic() < deadline, "the finish was not durable during the poll"
            time.sleep(0.02)
        assert not replies
        time.sleep(0.2)
        late = c.tasks_create("late", start=True).run
        assert late is not None
        waiting.join(5)
        assert replies, "the long poll did not wake for the new run"
        assert time.monotonic() - started < 5
        assert isinstance(replies[0].next, p.Claim) and replies[0].next.run.id == late.id
        assert replies[0].lease.status == "completed"


def test_a_waiting_next_claim_times_out_with_null(daemon: ThreadDaemon) -> None:
    with daemon.client() as c, daemon.client(agent_name="patient") as agent:
        c.tasks_create("only", start=True)
        got = first_claim(agent)
        started = time.monotonic()
        done = agent.complete(got.run.id, got.claim_token, next=p.NextClaimParams(wait_ms=300))
        elapsed = time.monotonic() - started
        assert done.next is None and done.lease.status == "completed"
        assert 0.25 <= elapsed < 3


def test_sixteen_agents_one_call_per_cycle(daemon: ThreadDaemon) -> None:
    """16 agents, each its own connection and session, finishing with next
    while a producer queues work in waves: each finish long-polls for the
    next run. Now and then an agent retries a finish (as after a lost
    reply), releases instead of completing, or tries someone else's token.
    Every run is completed exactly once, no two agents ever hold the same
    run, a retried finish hands out the same next run, a fenced one claims
    nothing, nobody trips over the one-claim session limit, and nearly
    every cycle is one call."""
    waves, per_wave = 8, 60
    wait = p.NextClaimParams(wait_ms=1500)
    completed: list[str] = []
    held: dict[str, int] = {}
    problems: list[str] = []
    claim_calls = [0]
    lock = threading.Lock()

    def produce() -> None:
        with daemon.client() as c:
            for wave in range(waves):
                for i in range(per_wave):
                    c.tasks_create(f"w{wave}-{i}", start=True, max_attempts=3)
                time.sleep(0.05)

    def take(n: int, got: p.Claim) -> None:
        with lock:
            if got.run.id in held:
                problems.append(f"{got.run.id} held by agent {held[got.run.id]} and {n}")
            held[got.run.id] = n

    def agent(n: int) -> None:
        with daemon.client(agent_name=f"agent-{n}") as me:
            with lock:
                claim_calls[0] += 1
            got = me.claim_next(wait_ms=3000).claim
            k = 0
            while got is not None:
                take(n, got)
                k += 1
                run_id, token = got.run.id, got.claim_token
                if k % 11 == 0:
                    try:
                        me.complete(run_id, "someone-elses-token", next=wait)
                        problems.append(f"agent {n}: a wrong token finished {run_id}")
                    except Forbidden:
                        pass
                with lock:
                    del held[run_id]
                if k % 7 == 0:
                    done = me.release(run_id, token, "rotating", next=wait)
                    if done.next is not None and not isinstance(done.next, p.Claim):
                        problems.append("release: next missing")
                else:
                    done = me.complete(run_id, token, {"by": n}, next=wait)
                    if k % 5 == 0:  # the reply was "lost": the same call again
                        again = me.complete(run_id, token, {"by": n}, next=wait)
                        first, second = done.next, again.next
                        if isinstance(first, p.Claim) and (
                            not isinstance(second, p.Claim) or second.run.id != first.run.id
                        ):
                            problems.append(f"agent {n}: a retried finish claimed another run")
                        done = again
                    with lock:
                        completed.append(run_id)
                if done.lease.run_id != run_id:
                    problems.append(f"agent {n} finished {run_id}, got {done.lease.run_id}")
                got = done.next if isinstance(done.next, p.Claim) else None

    producer = threading.Thread(target=produce)
    agents = [threading.Thread(target=agent, args=(n,)) for n in range(16)]
    for t in [producer, *agents]:
        t.start()
    for t in [producer, *agents]:
        t.join(120)
    assert not any(t.is_alive() for t in [producer, *agents])
    assert problems == []
    total = waves * per_wave
    assert len(completed) == len(set(completed)) == total
    db = sqlite3.connect(f"file:{daemon.config.db_path}?mode=ro", uri=True)
    try:
        statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        open_claims = db.execute("SELECT count(*) FROM claims WHERE ended_at IS NULL").fetchone()
    finally:
        db.close()
    chained = chained_claims(daemon.config.db_path)
    assert statuses == {"completed": total}
    assert open_claims == (0,)
    # One claim_next per agent to start; every other claim came with a finish.
    assert claim_calls[0] == 16
    assert chained >= total - 16


def test_a_long_poll_after_a_finish_ends_with_null_when_aghd_stops(make_daemon: Any) -> None:
    """The finish is durable before the poll: a shutdown during the poll
    answers it (next null), never with an error that would hide it."""
    daemon: ThreadDaemon = make_daemon()
    with daemon.client() as c:
        c.tasks_create("only", start=True)
    agent = daemon.client(agent_name="draining")
    got = first_claim(agent)
    replies: list[p.FinishResult] = []
    waiting = threading.Thread(
        target=lambda: replies.append(
            agent.complete(got.run.id, got.claim_token, next=p.NextClaimParams(wait_ms=30_000))
        )
    )
    waiting.start()
    time.sleep(0.3)  # the finish committed, the claim is polling
    daemon.stop()
    waiting.join(10)
    agent.close()
    assert replies and replies[0].next is None
    assert replies[0].lease.status == "completed"
