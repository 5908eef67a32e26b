"""The watching commands of ``agh`` against a real daemon: timeline, watch,
logs, send and events, with their output, exit codes and stream handling.
Commands that must run while something else changes the task run as a
real subprocess (``python -m agh.cli``); the rest in-process."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import typing
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from agh import protocol as p
from agh.cli import main
from agh.cli.observe import format_dashboard
from agh.cli.options import INBOX_LANES, LOG_LEVELS
from agh.cli.output import duration
from agh.cli.streams import LogFollow, follow_logs, timeline_line
from tests.helpers.cli import CLEAN_ENV, Agh, clean_environ, ok_json

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon


class Spawned:
    """``agh --socket SOCK ARGS...`` as a subprocess, stdout read line by line."""

    def __init__(self, socket_path: str, *args: str) -> None:
        env = clean_environ()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agh.cli", "--socket", socket_path, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def line(self) -> str:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        assert text, f"agh exited early: {self.finish()}"
        return text.rstrip("\n")

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        """Wait for exit; return (code, rest of stdout, stderr). Reads through
        the same buffered stream as ``line`` (``communicate`` would skip what
        that buffer holds), in a thread so a stuck agh cannot hang the test."""
        stdout, stderr = self.proc.stdout, self.proc.stderr
        assert stdout is not None and stderr is not None
        rest: list[str] = []
        reader = threading.Thread(target=lambda: rest.append(stdout.read()))
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self.proc.kill()
            reader.join(10)
            raise AssertionError(f"agh still running after {timeout} s")
        code = self.proc.wait(timeout)
        return code, rest[0], stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=20)


@pytest.fixture
def spawn() -> Iterator[Any]:
    """``spawn(daemon, *args)``: a Spawned agh; killed at the end if still running."""
    started: list[Spawned] = []

    def factory(daemon: ThreadDaemon, *args: str) -> Spawned:
        s = Spawned(daemon.socket, *args)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.kill()


def claimed(daemon: ThreadDaemon, title: str = "job", **fields: Any) -> tuple[Client, p.Claim]:
    """A task with a run claimed by a fresh agent connection (caller closes it)."""
    with daemon.client() as c:
        c.tasks_create(title, start=True, **fields)
    agent = daemon.client(agent_name="worker")
    claim = agent.claim_next().claim
    assert claim is not None
    return agent, claim


def stored_sequences(daemon: ThreadDaemon, after: int, task_id: str | None = None) -> list[int]:
    sql = "SELECT seq FROM events WHERE seq > ?"
    args: list[Any] = [after]
    if task_id is not None:
        sql += " AND task_id = ?"
        args.append(task_id)
    with sqlite3.connect(daemon.config.db_path) as db:
        return [r[0] for r in db.execute(sql + " ORDER BY seq", args)]


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def line_sequences(text: str) -> list[int]:
    return [int(line.split()[0]) for line in text.splitlines()]


# -- timeline ---------------------------------------------------------------------------


def test_timeline_prints_one_line_per_event(agh: Agh, daemon: ThreadDaemon) -> None:
    agent, claim = claimed(daemon, "Ship it")
    with agent:
        agent.complete(claim.run.id, claim.claim_token)
    ident = claim.task.identifier

    result = agh("timeline", ident)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[2] for line in lines] == [
        "task.created",
        "run.queued",
        "run.claimed",
        "run.completed",
    ]
    seqs = line_sequences(result.stdout)
    assert seqs == stored_sequences(daemon, 0, claim.task.id)
    assert agent.session is not None
    assert lines[2].split()[3] == f"agent_session:{agent.session.session_id}"
    # The payload as compact JSON; "-" when there is none.
    assert lines[0].endswith(f'{{"identifier":"{ident}","title":"Ship it","status":"pending"}}')
    assert lines[1].endswith("  -")
    assert all(line.split()[1].endswith("Z") for line in lines)

    data = ok_json(agh("timeline", ident, "--json"))
    assert [i["sequence"] for i in data["timeline"]] == seqs
    assert data["timeline"][-1]["task"]["status"] == "completed"

    page = agh("timeline", claim.task.id, "--after", str(seqs[0]), "--limit", "2")
    assert page.exit_code == 0
    assert line_sequences(page.stdout) == seqs[1:3]
    assert f"more events: agh timeline {claim.task.id} --after {seqs[2]}" in page.stderr
    last = agh("timeline", ident, "--after", str(seqs[1]), "--limit", "2")
    assert line_sequences(last.stdout) == seqs[2:] and last.stderr == ""

    assert agh("timeline", "T-999").exit_code == 3


def test_timeline_line_cuts_a_long_payload() -> None:
    item = p.TimelineItem(
        event_id="evt_1",
        event_type="task.updated",
        sequence=12,
        timestamp="2026-01-01T00:00:00.000Z",
        actor=p.Actor("human", "ann"),
        payload={"description": "x" * 500},
    )
    line = timeline_line(item)
    assert line.split()[:4] == ["12", "2026-01-01T00:00:00.000Z", "task.updated", "human:ann"]
    assert line.endswith("…") and len(line) < 200 and "\n" not in line


# -- watch ---------------------------------------------------------------------------------


def test_watch_exits_0_when_an_agent_completes_the_task(
    daemon: ThreadDaemon, client: Client, spawn: Any
) -> None:
    task = client.tasks_create("watched", start=True).task
    watcher = spawn(daemon, "watch", task.identifier)
    assert watcher.line().split()[2] == "task.created"  # replayed
    assert watcher.line().split()[2] == "run.queued"
    with daemon.client(agent_name="w") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        agent.heartbeat(claim.run.id, claim.claim_token)
        assert watcher.proc.poll() is None  # still watching: the task is open
        agent.complete(claim.run.id, claim.claim_token)
    code, rest, err = watcher.finish()
    assert code == 0, err
    assert [line.split()[2] for line in rest.splitlines()][-1] == "run.completed"
    assert err == ""


def test_watch_exits_1_when_the_task_fails(
    daemon: ThreadDaemon, client: Client, spawn: Any
) -> None:
    task = client.tasks_create("doomed", start=True).task
    watcher = spawn(daemon, "watch", task.id, "--json")
    first = json.loads(watcher.line())
    assert first["type"] == "timeline" and first["timeline"]["event_type"] == "task.created"
    with daemon.client(agent_name="w") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        agent.fail(claim.run.id, claim.claim_token, "boom", retry=False)
    code, rest, err = watcher.finish()
    assert code == 1
    events = [json.loads(line) for line in rest.splitlines()]
    assert events[-1]["timeline"]["task"]["status"] == "failed"
    assert [first["sequence"], *(e["sequence"] for e in events)] == stored_sequences(
        daemon, 0, task.id
    )
    assert f"{task.id} is failed" in err


def test_watch_of_a_closed_task_replays_its_history_and_exits(
    agh: Agh, daemon: ThreadDaemon, client: Client
) -> None:
    agent, claim = claimed(daemon)
    with agent:
        agent.complete(claim.run.id, claim.claim_token)
    done = agh("watch", claim.task.identifier)
    assert done.exit_code == 0, done.stderr
    # Every item of the replay already shows the task completed: all are printed.
    assert line_sequences(done.stdout) == stored_sequences(daemon, 0, claim.task.id)

    other = client.tasks_create("dropped", start=True).task
    client.tasks_cancel(other.id, reason="not needed")
    canceled = agh("watch", other.identifier)
    assert canceled.exit_code == 1
    assert line_sequences(canceled.stdout) == stored_sequences(daemon, 0, other.id)
    assert canceled.stdout.splitlines()[-1].split()[2] == "task.canceled"


def test_watch_of_a_task_deleted_meanwhile_exits_1(
    daemon: ThreadDaemon, client: Client, spawn: Any
) -> None:
    task = client.tasks_create("short-lived").task
    watcher = spawn(daemon, "watch", task.identifier)
    assert watcher.line().split()[2] == "task.created"
    client.tasks_delete(task.id)
    code, rest, err = watcher.finish()
    assert code == 1
    assert rest.splitlines()[-1].split()[2] == "task.deleted"
    assert f"{task.identifier} is deleted" in err


def test_watch_resubscribes_after_an_overflow(
    make_daemon: Any, spawn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A watcher that stops reading (its stdout is not read) is dropped by
    aghd with an overflow notification; it resumes from the last event it
    printed and still prints every event exactly once."""
    daemon = make_daemon(stream_max_backlog_bytes=64 * 1024)
    agent, claim = claimed(daemon)
    watcher = spawn(daemon, "watch", claim.task.id, "--json")
    big = [{"message": "y" * 200, "step": 1} for _ in range(500)]
    with caplog.at_level(logging.INFO, logger="aghd.streams"), agent:
        wait_for(lambda: bool(daemon.daemon.streams.subs))  # the watcher listens
        deadline = time.monotonic() + 30
        while "overflowed" not in caplog.text and time.monotonic() < deadline:
            agent.agent_log(claim.run.id, claim.claim_token, big)
        assert "overflowed" in caplog.text
        agent.complete(claim.run.id, claim.claim_token)
    code, out, err = watcher.finish(timeout=60)
    assert code == 0, err
    seqs = [json.loads(line)["sequence"] for line in out.splitlines()]
    assert seqs == stored_sequences(daemon, 0, claim.task.id)


def test_watch_interrupted_exits_130_quietly(
    daemon: ThreadDaemon, client: Client, spawn: Any
) -> None:
    task = client.tasks_create("open").task
    watcher = spawn(daemon, "watch", task.identifier)
    watcher.line()
    watcher.proc.send_signal(signal.SIGINT)
    code, _, err = watcher.finish()
    assert code == 130 and err == ""


# -- logs -------------------------------------------------------------------------------------

LINES: list[dict[str, Any]] = [
    {"level": "debug", "message": "starting", "step": 1},
    {"level": "info", "message": "working", "step": 1},
    {"level": "warn", "message": "slow disk", "step": 2},
    {"level": "error", "message": "oops", "step": 2},
    {"level": "info", "message": "no step"},
]


def test_logs_prints_lines_with_filters(agh: Agh, daemon: ThreadDaemon) -> None:
    agent, claim = claimed(daemon)
    with agent:
        agent.agent_log(claim.run.id, claim.claim_token, LINES)
    every = agh("logs", claim.task.identifier)
    assert every.exit_code == 0, every.stderr
    lines = every.stdout.splitlines()
    assert [line.split(None, 2)[1] for line in lines] == [x["level"] for x in LINES]
    assert lines[0].endswith("debug  [1] starting")
    assert lines[4].endswith("info   no step")

    def messages(*args: str) -> list[str]:
        result = agh("logs", *args)
        assert result.exit_code == 0, result.stderr
        return [line.split(None, 2)[2] for line in result.stdout.splitlines()]

    assert messages(claim.run.id, "--level", "warn") == ["[2] slow disk", "[2] oops"]
    assert messages(claim.run.id, "--step", "1") == ["[1] starting", "[1] working"]
    assert messages(claim.run.id, "--step", "1", "--level", "info") == ["[1] working"]
    assert messages(claim.run.id, "--limit", "2") == ["[2] oops", "no step"]

    data = ok_json(agh("logs", claim.task.id, "--level", "error", "--json"))
    assert data["run_id"] == claim.run.id
    assert [x["message"] for x in data["logs"]] == ["oops"]
    assert data["next_after"] == data["logs"][0]["id"]

    assert agh("logs", claim.run.id, "--level", "loud").exit_code == 2


def test_logs_follow_prints_new_lines_until_the_run_ends(daemon: ThreadDaemon, spawn: Any) -> None:
    agent, claim = claimed(daemon)
    with agent:
        agent.agent_log(claim.run.id, claim.claim_token, [{"message": "before", "step": 1}])
        follower = spawn(daemon, "logs", claim.task.identifier, "--follow", "--level", "info")
        assert follower.line().endswith("info   [1] before")
        agent.agent_log(
            claim.run.id,
            claim.claim_token,
            [
                {"level": "debug", "message": "hidden by --level"},
                {"level": "warn", "message": "after", "step": 2},
            ],
        )
        assert follower.line().endswith("warn   [2] after")
        assert follower.proc.poll() is None  # the run is still going
        agent.agent_log(claim.run.id, claim.claim_token, [{"message": "last words"}])
        agent.complete(claim.run.id, claim.claim_token)
    code, rest, err = follower.finish()
    assert code == 0, err
    assert [line.split(None, 2)[2] for line in rest.splitlines()] == ["last words"]


def test_logs_follow_of_an_ended_run_exits_at_once(agh: Agh, daemon: ThreadDaemon) -> None:
    agent, claim = claimed(daemon)
    with agent:
        agent.agent_log(claim.run.id, claim.claim_token, [{"message": "done soon"}])
        agent.complete(claim.run.id, claim.claim_token)
    result = agh("logs", claim.run.id, "--follow", "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["message"] for line in result.stdout.splitlines()] == ["done soon"]


def test_following_logs_skips_lines_already_printed_and_reads_the_rest_at_the_end(
    daemon: ThreadDaemon, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replayed, every item already shows the run completed: the lines of
    the first run.log event were printed already and are skipped; the
    lines of the run.log events after it are still read."""
    agent, claim = claimed(daemon)
    with agent:
        for text in ("a", "b", "c"):
            agent.agent_log(claim.run.id, claim.claim_token, [{"message": text}])
        agent.complete(claim.run.id, claim.claim_token)
    printed = client.runs_logs(claim.run.id, limit=1).logs[0]
    assert printed.message == "a"
    first_log = next(
        i for i in client.tasks_timeline(claim.task.id).timeline if i.event_type == "run.log"
    )
    start = first_log.sequence - 1  # the stream begins with the event carrying "a"
    sub = client.events_subscribe(task_id=claim.task.id, after_sequence=start)
    state = LogFollow(claim.run.id, claim.task.id, sub.subscription, start, printed.id)
    capsys.readouterr()
    follow_logs(client, state, None, None, as_json=False)
    out = capsys.readouterr().out
    assert [line.split(None, 2)[2] for line in out.splitlines()] == ["b", "c"]


def test_log_levels_match_the_protocol() -> None:
    assert typing.get_args(p.LogLevel) == LOG_LEVELS


# -- send ------------------------------------------------------------------------------------


def test_send_delivers_to_the_running_agent_or_queues(
    agh: Agh, daemon: ThreadDaemon, client: Client
) -> None:
    agent, claim = claimed(daemon)
    with agent:
        sent = agh("send", claim.task.identifier, "also the docs")
        assert sent.exit_code == 0, sent.stderr
        assert sent.stdout == (
            f"{claim.task.identifier}: delivered to the running agent (run {claim.run.id})\n"
        )
        piped = agh("send", claim.task.id, "--stdin", "--json", input="line one\nline two\n")
        data = ok_json(piped)
        assert data["delivered"] is True and data["message"]["message"] == "line one\nline two"
        got = agent.agent_messages(claim.run.id, claim.claim_token).messages
        assert [m.message for m in got] == ["also the docs", "line one\nline two"]

    idle = client.tasks_create("not started").task
    queued = agh("send", idle.identifier, "for later")
    assert queued.exit_code == 0
    assert queued.stdout == f"{idle.identifier}: no run holds it now; queued for its next run\n"
    assert ok_json(agh("send", idle.id, "again", "--json"))["delivered"] is False


def test_question_and_answer_between_a_cli_user_and_an_agent(
    agh: Agh, daemon: ThreadDaemon, client: Client
) -> None:
    agent, claim = claimed(daemon)
    with agent:
        agent.agent_send(claim.run.id, claim.claim_token, "which database?", kind="question")
        shown = ok_json(agh("show", claim.task.identifier, "--json"))
        assert shown["task"]["task"]["blocking_reason"] == "awaiting input: which database?"
        blocked = ok_json(agh("inbox", "--lane", "blocked", "--json"))["inbox"]
        items = [i for g in blocked["groups"] for i in g["items"]]
        assert [i["task"]["id"] for i in items] == [claim.task.id]
        answered = agh("send", claim.task.identifier, "postgres")
        assert answered.exit_code == 0, answered.stderr
        got = agent.agent_messages(claim.run.id, claim.claim_token).messages
        assert [m.message for m in got] == ["postgres"]
        assert client.tasks_get(claim.task.id).task.task.blocking_reason is None


def test_send_needs_exactly_one_message(agh: Agh, client: Client) -> None:
    task = client.tasks_create("t").task
    assert agh("send", task.id).exit_code == 2
    assert agh("send", task.id, "x", "--stdin", input="y").exit_code == 2
    assert agh("send", task.id, "--stdin", input="\n").exit_code == 2
    assert agh("send", "T-999", "hello").exit_code == 3


# -- events ----------------------------------------------------------------------------------


def test_events_prints_exactly_the_stored_events_after_a_sequence(
    agh: Agh, daemon: ThreadDaemon, client: Client
) -> None:
    first = client.tasks_create("one", start=True).task
    mark = stored_sequences(daemon, 0)[-1]
    second = client.tasks_create("two", start=True, network_channel="gpu").task
    client.tasks_create("three")
    client.tasks_update(first.id, priority="high")
    client.tasks_create("four")

    started = time.monotonic()
    result = agh("events", "--after", str(mark))
    assert result.exit_code == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.splitlines()]
    assert [i["sequence"] for i in items] == stored_sequences(daemon, mark)
    assert items[0]["task"]["id"] == second.id and items[0]["event_type"] == "task.created"

    everything = agh("events", "--json")
    assert [json.loads(x)["sequence"] for x in everything.stdout.splitlines()] == (
        stored_sequences(daemon, 0)
    )
    # A task filter stops at the task's last event, not at the end of the log.
    only_first = agh("events", "--task", first.identifier)
    assert [json.loads(x)["sequence"] for x in only_first.stdout.splitlines()] == (
        stored_sequences(daemon, 0, first.id)
    )
    end = stored_sequences(daemon, 0)[-1]
    assert agh("events", "--after", str(end)).stdout == ""
    # None of these waited for a keepalive (15 s by default).
    assert time.monotonic() - started < 10


def test_events_with_a_channel_filter_stops_at_the_end(make_daemon: Any) -> None:
    daemon = make_daemon(stream_keepalive_s=0.2)
    with daemon.client() as c:
        gpu = c.tasks_create("gpu work", network_channel="gpu", start=True).task
        c.tasks_create("cpu work", network_channel="cpu", start=True)
    result = CliRunner().invoke(
        main, ["--socket", daemon.socket, "events", "--channel", "gpu"], env=dict(CLEAN_ENV)
    )
    assert result.exit_code == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.splitlines()]
    assert [i["sequence"] for i in items] == stored_sequences(daemon, 0, gpu.id)


def test_events_follow_streams_new_events_until_interrupted(
    daemon: ThreadDaemon, client: Client, spawn: Any
) -> None:
    client.tasks_create("old")
    follower = spawn(daemon, "events", "--follow")
    # Without --after it starts at the end: nothing old; wait until it listens.
    wait_for(lambda: bool(daemon.daemon.streams.subs))
    new = client.tasks_create("new").task
    item = json.loads(follower.line())
    assert item["task"]["id"] == new.id and item["event_type"] == "task.created"
    follower.proc.send_signal(signal.SIGINT)
    code, rest, err = follower.finish()
    assert code == 130 and err == "" and rest == ""


# -- dashboard and inbox ----------------------------------------------------------------------


def busy_hub(daemon: ThreadDaemon) -> tuple[dict[str, str], Client]:
    """A gated task, a failed one, a running one and a queued one on channel
    gpu; returns the interesting ids and the agent holding the running run
    (still connected: the caller closes it)."""
    agent = daemon.client(agent_name="w")
    with daemon.client() as c:
        gated = c.tasks_create("gated", approval_policy="manual", start=True).task
        failed = c.tasks_create("doomed", start=True).task
        claim = agent.claim_next().claim
        assert claim is not None
        agent.fail(claim.run.id, claim.claim_token, "tests do not pass", retry=False)
        running = c.tasks_create("busy", start=True).task
        claim = agent.claim_next().claim
        assert claim is not None and claim.task.id == running.id
        agent.heartbeat(claim.run.id, claim.claim_token)
        queued = c.tasks_create("gpu job", network_channel="gpu", start=True).task
    ids = {
        "gated": gated.identifier,
        "failed": failed.identifier,
        "running": running.identifier,
        "run": claim.run.id,
        "queued": queued.identifier,
    }
    return ids, agent


def test_dashboard_summarises_health_runs_queue_and_latency(agh: Agh, daemon: ThreadDaemon) -> None:
    ids, agent = busy_hub(daemon)
    with agent:
        result = agh("dashboard")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    fields = dict(line.split(":", 1) for line in out.split("\n\n")[0].splitlines() if ":" in line)
    assert fields["Health"].strip() == "ok"
    assert fields["Tasks"].strip().startswith("4 (")
    assert "failed 1 (25.0%)" in fields["Tasks"]
    assert (
        fields["Waiting"].strip() == "1 blocked task: 1 awaiting approval, 0 awaiting dependencies"
    )
    assert fields["Failed"].strip() == "1 task, 1 run (0 forced stops)"
    assert (
        fields["Runs"].strip().startswith("1 active (0 claimed, 0 starting, 1 running), 1 queued")
    )
    assert fields["Queue"].strip().startswith("1 queued, oldest waited ")
    assert "claim avg" in out and "(2 runs)" in out
    queue = out.split("Queue by channel:\n")[1].split("\n\n")[0].splitlines()
    assert queue[0].split() == ["CHANNEL", "QUEUED", "OLDEST"]
    assert queue[1].split()[:2] == ["gpu", "1"]
    active = out.split("Active runs:\n")[1].splitlines()
    assert active[0].split() == ["RUN", "TASK", "STATUS", "AGE", "HEALTH", "TITLE"]
    assert active[1].split()[:3] == [ids["run"], ids["running"], "running"]
    assert active[1].split()[4:] == ["ok", "busy"]

    data = ok_json(agh("dashboard", "--json"))["dashboard"]
    assert data["totals"]["tasks_total"] == 4
    gpu = ok_json(agh("dashboard", "--channel", "gpu", "--json"))["dashboard"]
    assert gpu["totals"]["tasks_total"] == 1 and gpu["queue"]["total"] == 1
    assert "Active runs: none" in agh("dashboard", "--channel", "gpu").stdout


def test_dashboard_names_orphaned_and_stuck_runs(agh: Agh, daemon: ThreadDaemon) -> None:
    ids, agent = busy_hub(daemon)
    agent.close()  # its session disconnects: nobody heartbeats the run now
    deadline = time.monotonic() + 10
    while True:
        out = agh("dashboard").stdout
        if not out.startswith("Health:                ok") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    # The only active run is orphaned: the in-progress work is all in trouble.
    assert out.splitlines()[0].split(None, 1)[1] == "critical (1 orphaned run)"
    row = out.split("Active runs:\n")[1].splitlines()[1]
    assert row.split()[1] == ids["running"] and "warning, orphaned  busy" in row

    with daemon.client() as client:
        raw = msgspec.to_builtins(client.observe_dashboard().dashboard)
    raw["health"].update(status="critical", stuck_runs=1)
    raw["active_runs"]["items"][0].update(stuck=True, health_status="critical", age_ms=3_723_000)
    text = format_dashboard(msgspec.convert(raw, p.Dashboard))
    assert text.splitlines()[0].split(None, 1)[1] == "critical (1 stuck run, 1 orphaned run)"
    assert "1h02m  critical, stuck, orphaned" in text.split("Active runs:\n")[1]


def test_duration() -> None:
    assert [duration(ms) for ms in (None, 0, 999, 1000, 59_999, 60_000, 3_599_000)] == [
        "-",
        "0ms",
        "999ms",
        "1s",
        "59s",
        "1m00s",
        "59m59s",
    ]
    assert duration(3_600_000) == "1h00m" and duration(90_000_000) == "1d01h"


def inbox_groups(text: str) -> dict[str, list[list[str]]]:
    """``lane: count ...`` blocks to {lane: [row cells...]} (header row dropped;
    the unread mark is its own cell, "" when read)."""
    groups: dict[str, list[list[str]]] = {}
    for block in text.split("\n\n")[1:]:
        head, *rows = block.splitlines()
        groups[head.split(":")[0]] = [[row[2].strip(), *row[3:].split()[:2]] for row in rows[1:]]
    return groups


def test_inbox_lists_lanes_and_triage_changes_them(agh: Agh, daemon: ThreadDaemon) -> None:
    ids, agent = busy_hub(daemon)
    agent.close()
    result = agh("inbox")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "4 items, 4 unread"
    groups = inbox_groups(result.stdout)
    assert list(groups) == ["my_work", "approvals", "failed_runs", "blocked"]
    assert groups["approvals"] == [["*", ids["gated"], "blocked"]]
    assert groups["failed_runs"] == [["*", ids["failed"], "failed"]]
    assert sorted(r[1] for r in groups["my_work"]) == sorted([ids["running"], ids["queued"]])
    assert groups["blocked"] == []
    assert "awaiting approval" in result.stdout and "run failed: tests do not pass" in result.stdout

    read = agh("inbox", "read", ids["failed"])
    assert read.exit_code == 0 and read.stdout == f"{ids['failed']}  read\n"
    after_read = agh("inbox")
    assert after_read.stdout.splitlines()[0] == "4 items, 3 unread"
    assert inbox_groups(after_read.stdout)["failed_runs"] == [["", ids["failed"], "failed"]]
    unread_only = inbox_groups(agh("inbox", "--unread").stdout)
    assert unread_only["failed_runs"] == []

    archived = ok_json(agh("inbox", "--json", "archive", ids["failed"]))
    assert archived["triage"]["archived"] is True
    assert agh("inbox", "dismiss", ids["gated"]).stdout == f"{ids['gated']}  read, dismissed\n"
    now = agh("inbox")
    assert now.stdout.splitlines()[0] == "2 items, 2 unread (1 archived)"
    assert inbox_groups(now.stdout)["approvals"] == []
    lane = agh("inbox", "--lane", "archived")
    assert list(inbox_groups(lane.stdout)) == ["archived"]
    assert inbox_groups(lane.stdout)["archived"] == [["", ids["failed"], "failed"]]
    assert (
        ok_json(agh("inbox", "unarchive", ids["failed"], "--json"))["triage"]["archived"] is False
    )

    data = ok_json(agh("inbox", "--lane", "my_work", "--json"))["inbox"]
    assert [g["lane"] for g in data["groups"]] == ["my_work"] and data["groups"][0]["count"] == 2
    assert agh("inbox", "read", "T-999").exit_code == 3
    assert agh("inbox", "--lane", "nope").exit_code == 2


def test_inbox_lanes_match_the_protocol() -> None:
    assert typing.get_args(p.InboxLane) == INBOX_LANES
