"""Timeline, live streams, run logs and input to running agents, against a
real daemon: replay → live hand-over, overflow, keepalive, cleanup, and the
send / question / answer round trip."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

from agh import errors
from agh.client import Client
from tests.helpers.daemons import ThreadDaemon, spawn_daemon


def _stored_sequences(daemon: ThreadDaemon, after: int) -> list[int]:
    with sqlite3.connect(daemon.config.db_path) as db:
        return [
            r[0] for r in db.execute("SELECT seq FROM events WHERE seq > ? ORDER BY seq", (after,))
        ]


def _claim(daemon: ThreadDaemon, name: str, title: str = "job") -> tuple[Client, Any]:
    agent = daemon.client(agent_name=name)
    creator = daemon.client()
    created = creator.tasks_create(title, start=True)
    creator.close()
    claim = agent.claim_next().claim
    assert claim is not None and claim.task.id == created.task.id
    return agent, claim


# -- timeline -----------------------------------------------------------------------


def test_timeline_lists_a_tasks_events_in_order(daemon: ThreadDaemon, client: Client) -> None:
    agent, claim = _claim(daemon, "w")
    with agent:
        agent.complete(claim.run.id, claim.claim_token, result={"ok": True})
    items = client.tasks_timeline(claim.task.identifier).timeline
    types = [i.event_type for i in items]
    assert types == ["task.created", "run.queued", "run.claimed", "run.completed"]
    sequences = [i.sequence for i in items]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    last = items[-1]
    assert last.task is not None and last.task.status == "completed"
    assert last.run is not None and last.run.id == claim.run.id
    assert last.event_id.startswith("evt_") and last.actor is not None
    page = client.tasks_timeline(claim.task.id, after_sequence=sequences[1], limit=1).timeline
    assert [i.sequence for i in page] == [sequences[2]]


# -- streams ------------------------------------------------------------------------


def test_stream_handoff_has_no_gap_and_no_duplicate(daemon: ThreadDaemon, client: Client) -> None:
    """Subscribe mid-way while another client writes continuously: every
    stored event after the cursor arrives exactly once, in order."""
    for i in range(50):
        client.tasks_create(f"before {i}")
    start = _stored_sequences(daemon, 0)[-1] - 20  # part replay, part live
    stop = threading.Event()

    def writer() -> None:
        with daemon.client() as w:
            n = 0
            while not stop.is_set():
                w.tasks_create(f"during {n}")
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.05)
        with daemon.client() as sub:
            sid = sub.events_subscribe(after_sequence=start).subscription
            time.sleep(0.3)
            stop.set()
            thread.join(10)
            final = _stored_sequences(daemon, 0)[-1]
            seen: list[int] = []
            while not seen or seen[-1] < final:
                event = sub.next_event(timeout=5)
                assert event.subscription == sid and event.type == "timeline"
                assert event.timeline is not None and event.timeline.sequence == event.sequence
                seen.append(event.sequence)
    finally:
        stop.set()
        thread.join(10)
    assert seen == _stored_sequences(daemon, start)  # the set, in order, once each
    assert len(seen) > 40


def test_task_stream_replays_history_then_goes_live(daemon: ThreadDaemon, client: Client) -> None:
    task = client.tasks_create("watched").task
    other = client.tasks_create("other").task
    with daemon.client() as watcher:
        watcher.tasks_stream(task.identifier)
        first = watcher.next_event(timeout=5)
        assert first.timeline is not None and first.timeline.event_type == "task.created"
        client.tasks_start(other.id)  # not this task's: never delivered
        client.tasks_start(task.id)
        live = watcher.next_event(timeout=5)
        assert live.timeline is not None and live.timeline.event_type == "run.queued"
        assert live.timeline.task is not None and live.timeline.task.id == task.id
        assert live.sequence > first.sequence


def test_filtered_subscription_by_channel(daemon: ThreadDaemon, client: Client) -> None:
    with daemon.client() as sub:
        sub.events_subscribe(network_channel="gpu")
        client.tasks_create("cpu work", network_channel="cpu")
        wanted = client.tasks_create("gpu work", network_channel="gpu").task
        event = sub.next_event(timeout=5)
        assert event.timeline is not None and event.timeline.task is not None
        assert event.timeline.task.id == wanted.id


def test_subscription_to_a_workspace_that_does_not_exist_yet(
    daemon: ThreadDaemon, client: Client
) -> None:
    """Watching a project before its first task: the workspace is created
    with that task, and its events (the very first included) arrive."""
    with daemon.client() as sub:
        sub.events_subscribe(workspace="/w/fresh")
        client.tasks_create("elsewhere", workspace="/w/other")
        first = client.tasks_create("first here", workspace="/w/fresh", start=True).task
        seen = [sub.next_event(timeout=5) for _ in range(2)]
        assert [e.timeline.event_type for e in seen if e.timeline] == ["task.created", "run.queued"]
        assert all(e.timeline and e.timeline.task and e.timeline.task.id == first.id for e in seen)


def test_slow_subscriber_is_dropped_with_overflow(make_daemon: Any) -> None:
    daemon = make_daemon(stream_max_backlog_bytes=64 * 1024)
    hub = daemon.daemon.streams
    with daemon.client() as slow, daemon.client() as writer:
        slow.events_subscribe()  # ...and never reads
        worst = 0.0
        for i in range(2500):
            t0 = time.perf_counter()
            writer.tasks_create(f"noise {i}", description="x" * 200)
            worst = max(worst, time.perf_counter() - t0)
            if not hub.subs:
                break
        assert not hub.subs, "the subscriber that never reads was not dropped"
        # Other clients were never held up by the slow one (generous bound).
        assert worst < 1.0
        # Reading now: its stream ends with a final overflow notification.
        last = None
        while True:
            try:
                last = slow.next_event(timeout=1)
            except TimeoutError:
                break
        assert last is not None and last.type == "overflow"


def test_keepalive_and_cancel(make_daemon: Any) -> None:
    daemon = make_daemon(stream_keepalive_s=0.2)
    with daemon.client() as sub:
        sid = sub.events_subscribe().subscription
        event = sub.next_event(timeout=5)
        assert event.type == "keepalive" and event.subscription == sid
        sub.subscriptions_cancel(sid)
        assert sid not in daemon.daemon.streams.subs
        with pytest.raises(errors.NotFound):
            sub.subscriptions_cancel(sid)


def test_closing_the_connection_ends_its_subscriptions(daemon: ThreadDaemon) -> None:
    sub = daemon.client()
    sub.events_subscribe()
    sub.events_subscribe(network_channel="x")
    assert len(daemon.daemon.streams.subs) == 2
    sub.close()
    deadline = time.monotonic() + 5
    while daemon.daemon.streams.subs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert daemon.daemon.streams.subs == {}


def test_another_connection_cannot_cancel_a_subscription(daemon: ThreadDaemon) -> None:
    with daemon.client() as owner, daemon.client() as other:
        sid = owner.events_subscribe().subscription
        with pytest.raises(errors.NotFound):
            other.subscriptions_cancel(sid)


# -- run logs ------------------------------------------------------------------------


def test_agent_logs_are_read_back_and_streamed(daemon: ThreadDaemon, client: Client) -> None:
    agent, claim = _claim(daemon, "logger")
    with agent, daemon.client() as follower:
        follower.tasks_stream(claim.task.id)
        lines = [
            {"level": "debug", "message": "starting", "step": 1},
            {"level": "info", "message": "working", "step": 1},
            {"level": "error", "message": "oops", "step": 2, "metadata": {"code": 7}},
        ]
        accepted = agent.agent_log(claim.run.id, claim.claim_token, lines)
        assert accepted.accepted == 3
        everything = client.runs_logs(claim.run.id).logs
        assert [x.message for x in everything] == ["starting", "working", "oops"]
        assert everything[2].metadata == {"code": 7}
        assert [x.message for x in client.runs_logs(claim.task.identifier, level="info").logs] == [
            "working",
            "oops",
        ]
        assert [x.message for x in client.runs_logs(claim.run.id, step=2).logs] == ["oops"]
        after = client.runs_logs(claim.run.id, after=everything[0].id, limit=1)
        assert [x.message for x in after.logs] == ["working"] and after.next_after == everything[
            1
        ].id
        # The log lines reach stream subscribers with their event.
        while True:
            event = follower.next_event(timeout=5)
            if event.timeline is not None and event.timeline.event_type == "run.log":
                break
        assert event.logs is not None and [x.message for x in event.logs] == [
            "starting",
            "working",
            "oops",
        ]
        client.runs_cancel(claim.run.id)
        with pytest.raises(errors.LeaseLost):
            agent.agent_log(claim.run.id, claim.claim_token, [{"message": "too late"}])


def test_log_retention_is_bounded(make_daemon: Any) -> None:
    daemon = make_daemon(log_retention_lines=5)
    agent, claim = _claim(daemon, "chatty")
    with agent, daemon.client() as reader:
        for batch in range(4):
            agent.agent_log(
                claim.run.id,
                claim.claim_token,
                [{"message": f"{batch}.{i}"} for i in range(3)],
            )
        kept = [x.message for x in reader.runs_logs(claim.run.id).logs]
    assert kept == ["2.1", "2.2", "3.0", "3.1", "3.2"]


def test_bad_log_line_names_the_field(daemon: ThreadDaemon, client: Client) -> None:
    with pytest.raises(errors.InvalidParams) as bad:
        client.call(
            "agent.log",
            {"run_id": "run_x", "claim_token": "t", "lines": [{"level": "loud", "message": "x"}]},
            dict,
        )
    assert bad.value.details["field"] == "$.params.lines[0].level"


# -- input to a running agent ------------------------------------------------------------


def test_send_question_answer_round_trip(daemon: ThreadDaemon, client: Client) -> None:
    agent, claim = _claim(daemon, "asker")
    with agent:
        agent.events_subscribe(task_id=claim.task.id)  # live events from now on
        sent = client.tasks_send(claim.task.identifier, "please also update the docs")
        assert sent.delivered and sent.message.run_id == claim.run.id
        event = agent.next_event(timeout=5)
        assert event.timeline is not None and event.timeline.event_type == "message.sent"
        assert event.timeline.payload["message"] == "please also update the docs"
        inbox = agent.agent_messages(claim.run.id, claim.claim_token)
        assert [m.message for m in inbox.messages] == ["please also update the docs"]
        agent.agent_send(claim.run.id, claim.claim_token, "which docs?", kind="question")
        task = client.tasks_get(claim.task.id).task.task
        assert task.status == "in_progress"
        assert task.blocking_reason == "awaiting input: which docs?"
        client.tasks_send(claim.task.id, "the README")
        assert client.tasks_get(claim.task.id).task.task.blocking_reason is None
        more = agent.agent_messages(claim.run.id, claim.claim_token, after=inbox.next_after)
        assert [m.message for m in more.messages] == ["the README"]
        assert more.messages[0].actor is not None and more.messages[0].actor.kind == "human"


def test_input_sent_before_a_run_waits_for_it(daemon: ThreadDaemon, client: Client) -> None:
    task = client.tasks_create("later").task
    sent = client.tasks_send(task.id, "context for whoever picks this up")
    assert sent.delivered is False and sent.message.run_id is None
    client.tasks_start(task.id)
    with daemon.client(agent_name="picker") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        got = agent.agent_messages(claim.run.id, claim.claim_token).messages
        assert [m.message for m in got] == ["context for whoever picks this up"]
        assert got[0].run_id == claim.run.id
        with pytest.raises(errors.Forbidden):
            agent.agent_messages(claim.run.id, "not-the-token")


def test_keepalive_reaches_a_quiet_subscriber_of_a_busy_daemon(make_daemon: Any) -> None:
    """Other tasks' events do not stand in for this subscriber's keepalives."""
    daemon = make_daemon(stream_keepalive_s=0.3)
    with daemon.client() as sub, daemon.client() as busy:
        sid = sub.events_subscribe(network_channel="quiet").subscription
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            busy.tasks_create("noise")
        event = sub.next_event(timeout=0.5)  # already buffered by now
        assert event.type == "keepalive" and event.subscription == sid


def test_question_is_cleared_when_the_run_ends(daemon: ThreadDaemon, client: Client) -> None:
    agent, claim = _claim(daemon, "asker")
    with agent:
        agent.agent_send(claim.run.id, claim.claim_token, "which branch?", kind="question")
        agent.complete(claim.run.id, claim.claim_token)
    task = client.tasks_get(claim.task.id).task.task
    assert task.status == "completed" and task.blocking_reason is None


def test_aghd_set_tunes_the_daemon(short_dir: str, procs: list[Any]) -> None:
    """`aghd --set NAME=VALUE` reaches the running daemon; a bad name is a usage error."""
    sock, db = f"{short_dir}/s.sock", f"{short_dir}/a.db"
    bad = spawn_daemon(sock, db, "--set", "keepalive=1", wait=False)
    procs.append(bad)
    assert bad.wait(20) == 2
    procs.append(spawn_daemon(sock, db, "--set", "stream_keepalive_s=0.2"))
    with Client(sock) as sub:
        sub.events_subscribe()
        assert sub.next_event(timeout=5).type == "keepalive"
