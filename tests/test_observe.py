"""observe.dashboard, observe.inbox and tasks.triage.* against a real daemon:
figures of a hand-built scenario, the health rules, lanes and triage across
two actors, and the index-only query plans that keep the dashboard fast."""

from __future__ import annotations

import datetime
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from agh import errors
from agh import protocol as p
from agh.client import Client
from aghd.handlers.observe import shares
from aghd.health import Thresholds
from aghd.store import observe as store
from aghd.store import tasks as tasks_store
from aghd.store.db import Caller, Tx, open_connection
from aghd.store.models import NewTask

if TYPE_CHECKING:
    from tests.helpers.daemons import ThreadDaemon

# -- helpers ----------------------------------------------------------------------------


def dashboard(c: Client, **filters: Any) -> p.Dashboard:
    return c.call("observe.dashboard", p.DashboardParams(**filters), p.DashboardResult).dashboard


def inbox(c: Client, **filters: Any) -> p.Inbox:
    return c.call("observe.inbox", p.InboxParams(**filters), p.InboxResult).inbox


def triage(c: Client, action: str, ref: str) -> p.Triage:
    return c.call(f"tasks.triage.{action}", p.IdParams(id=ref), p.TriageResult).triage


def ms(stamp: str | None) -> int:
    assert stamp is not None
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return round(parsed.timestamp() * 1000)


def lanes(box: p.Inbox) -> dict[str, list[str]]:
    return {g.lane: [i.task.identifier for i in g.items] for g in box.groups}


def wait_for(check: Any, timeout: float = 4.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


# -- the dashboard --------------------------------------------------------------------


def test_dashboard_figures_match_a_hand_built_scenario(make_daemon: Any) -> None:
    """Tasks in every status, runs in every status, one forced stop, an
    orphaned run, stuck runs, and the latencies computed from the runs'
    own timestamps."""
    daemon: ThreadDaemon = make_daemon(
        stuck_after_ms=300, max_claims_per_session=0, backlog_threshold_ms=3_600_000
    )
    with daemon.client() as c, daemon.client(agent_name="worker") as agent:
        c.tasks_create("a draft", draft=True)
        pending = c.tasks_create("pending").task
        c.tasks_create("gated", approval_policy="manual", start=True)
        c.tasks_create("waits", depends_on=[pending.id], start=True)
        gpu = c.tasks_create("queued gpu", network_channel="gpu", start=True).run
        plain = c.tasks_create("queued plain", start=True).run
        assert gpu is not None and plain is not None
        runs = {
            name: c.tasks_create(name, start=True).run
            for name in ("claimed", "starting", "running", "done", "agent-failed", "op-failed")
        }
        canceled = c.tasks_create("canceled", start=True).task
        c.tasks_cancel(canceled.id)
        time.sleep(0.03)  # a measurable claim latency
        tokens = {}
        for name, run in runs.items():
            assert run is not None
            tokens[name] = agent.runs_claim(run.id).claim_token
        ids = {name: run.id for name, run in runs.items() if run is not None}
        c.runs_start(ids["starting"])
        agent.heartbeat(ids["running"], tokens["running"])
        agent.complete(ids["done"], tokens["done"])
        agent.fail(ids["agent-failed"], tokens["agent-failed"], "boom", retry=False)
        c.runs_fail(ids["op-failed"], "stopped by hand")
        # An agent that disconnects while holding a run leaves it orphaned.
        with daemon.client(agent_name="leaver") as leaver:
            orphan = c.tasks_create("orphan", start=True).run
            assert orphan is not None
            leaver.runs_claim(orphan.id)
        time.sleep(0.4)  # older than stuck_after_ms ...
        agent.heartbeat(ids["running"], tokens["running"])  # ... except this one

        board = wait_for(lambda: (b := dashboard(c)).health.active_orphan_runs == 1 and b)
        assert board, "the leaver's session was never marked disconnected"
        t = board.totals
        assert (t.draft_tasks, t.pending_tasks, t.blocked_tasks, t.ready_tasks) == (1, 1, 2, 2)
        assert (t.in_progress_tasks, t.completed_tasks, t.failed_tasks, t.canceled_tasks) == (
            4,
            1,
            2,
            1,
        )
        assert t.tasks_total == 14
        assert (t.awaiting_approval_tasks, t.dependency_blocked_tasks) == (1, 1)
        assert (t.queued_runs, t.claimed_runs, t.starting_runs, t.running_runs) == (2, 2, 1, 1)
        assert (t.active_runs, t.completed_runs, t.failed_runs, t.canceled_runs) == (4, 1, 2, 1)
        assert t.runs_total == 10

        shares_by_status = {s.status: s for s in board.status_breakdown}
        assert list(shares_by_status) == list(store.TASK_STATUSES)
        assert sum(round(s.share_percent * 10) for s in board.status_breakdown) == 1000
        assert shares_by_status["in_progress"].count == 4
        assert shares_by_status["in_progress"].share_percent == pytest.approx(28.6)

        a = board.active_runs
        assert (a.queued, a.claimed, a.starting, a.running, a.total) == (2, 2, 1, 1, 6)
        by_run = {item.run_id: item for item in a.items}
        assert set(by_run) == {ids["claimed"], ids["starting"], ids["running"], orphan.id}
        assert a.items[0].run_id == ids["running"]  # newest activity first
        assert not by_run[ids["running"]].stuck and by_run[ids["running"]].health_status == "ok"
        assert by_run[ids["claimed"]].stuck and by_run[ids["claimed"]].health_status == "warning"
        assert by_run[orphan.id].orphaned and by_run[orphan.id].stuck
        assert by_run[orphan.id].health_status == "critical"
        assert by_run[ids["starting"]].task_title == "starting"
        assert by_run[ids["starting"]].run_status == "starting"
        assert by_run[ids["claimed"]].age_ms >= 400

        assert board.health.stuck_runs == 3
        assert board.health.status == "warning"  # some, not all, active runs in trouble
        cards = board.cards
        assert cards.in_progress.health_status == "warning"
        assert (cards.in_progress.tasks, cards.in_progress.active_runs) == (4, 4)
        assert (cards.blocked.awaiting_approval, cards.blocked.awaiting_dependencies) == (1, 1)
        assert cards.blocked.health_status == "warning"
        assert (cards.failed.failed_runs, cards.failed.forced_stops, cards.failed.tasks) == (
            2,
            1,
            2,
        )
        assert cards.failed.health_status == "warning"

        # Latencies from the runs themselves: every claim of the window.
        claimed = [c.runs_get(r).run.run for r in [*ids.values(), orphan.id]]
        waits = [ms(r.claimed_at) - ms(r.queued_at) for r in claimed]
        starts = [ms(r.started_at) - ms(r.claimed_at) for r in claimed if r.started_at]
        lat = cards.latency
        assert lat.claim_latency_ms.samples == 7
        assert lat.claim_latency_ms.maximum_ms == max(waits) >= 30
        assert abs(lat.claim_latency_ms.average_ms - sum(waits) / len(waits)) <= 1
        assert lat.start_latency_ms.samples == len(starts) == 2
        assert lat.start_latency_ms.maximum_ms == max(starts)

        q = board.queue
        assert [(d.network_channel, d.count) for d in q.depth] == [(None, 1), ("gpu", 1)]
        assert q.depth[1].oldest_queued_at == gpu.queued_at
        assert q.oldest_queued_at == min(gpu.queued_at or "", plain.queued_at or "")
        assert q.total == 2 and not q.backlog_warning and q.backlog_status == "ok"
        assert board.freshness.has_live_work and not board.freshness.stale
        assert board.freshness.latest_activity_at is not None
        assert_filter_agrees(c, board)


def assert_filter_agrees(c: Client, board: p.Dashboard) -> None:
    """A filter that every task matches gives the unfiltered figures: the
    filtered path counts from ``tasks_facets`` and the tasks' run tallies,
    the unfiltered one from the run and claim indexes — two independent
    derivations. Both ways of finding a channel's oldest queued run too."""
    for few_queued in (store._FEW_QUEUED, 0):
        saved, store._FEW_QUEUED = store._FEW_QUEUED, few_queued
        try:
            every = dashboard(c, scope="global")
        finally:
            store._FEW_QUEUED = saved
        assert every.totals == board.totals
        assert [(d.network_channel, d.count, d.oldest_queued_at) for d in every.queue.depth] == [
            (d.network_channel, d.count, d.oldest_queued_at) for d in board.queue.depth
        ]
        assert every.cards.failed == board.cards.failed
        assert every.cards.blocked == board.cards.blocked
        assert every.cards.latency == board.cards.latency
        assert every.freshness.latest_activity_at == board.freshness.latest_activity_at
        assert {i.run_id for i in every.active_runs.items} == {
            i.run_id for i in board.active_runs.items
        }


def test_every_field_of_the_reference_is_on_the_wire(client: Client) -> None:
    """The reference's dashboard and inbox shapes, key for key (PROTOCOL §3)."""
    client.tasks_create("x", start=True)
    with client_agent(client) as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        raw = client.call("observe.dashboard", {}, msgspec.Raw)
        inbox_raw = client.call("observe.inbox", {}, msgspec.Raw)
    board = msgspec.json.decode(raw)["dashboard"]
    assert set(board) >= {
        "active_runs",
        "cards",
        "freshness",
        "health",
        "queue",
        "status_breakdown",
        "totals",
    }
    assert set(board["active_runs"]) >= {"claimed", "items", "queued", "running", "starting"}
    assert set(board["active_runs"]["items"][0]) >= {
        "age_ms",
        "attempt",
        "error",
        "health_status",
        "last_activity_at",
        "max_attempts",
        "network_channel",
        "run_id",
        "run_status",
        "scope",
        "session_id",
        "stuck",
        "task_id",
        "task_identifier",
        "task_owner",
        "task_priority",
        "task_status",
        "task_title",
        "workspace_id",
    }
    assert set(board["cards"]["blocked"]) >= {
        "awaiting_approval",
        "awaiting_dependencies",
        "health_status",
        "tasks",
    }
    assert set(board["cards"]["failed"]) >= {"failed_runs", "forced_stops", "health_status"}
    assert set(board["cards"]["in_progress"]) >= {
        "active_runs",
        "claimed_runs",
        "health_status",
        "queued_runs",
        "running_runs",
        "starting_runs",
        "tasks",
    }
    for stat in ("claim_latency_ms", "start_latency_ms"):
        assert set(board["cards"]["latency"][stat]) == {"average_ms", "maximum_ms", "samples"}
    assert set(board["freshness"]) >= {
        "age_ms",
        "has_live_work",
        "latest_activity_at",
        "observed_at",
        "stale",
        "stale_after_ms",
        "status",
    }
    assert set(board["health"]) >= {"active_orphan_runs", "queue_backlog", "status", "stuck_runs"}
    assert set(board["queue"]) >= {
        "backlog_status",
        "backlog_threshold_ms",
        "backlog_warning",
        "depth",
        "oldest_queue_age_ms",
        "oldest_queued_at",
        "total",
    }
    assert set(board["status_breakdown"][0]) == {"count", "share_percent", "status"}
    assert len(board["totals"]) == 20
    box = msgspec.json.decode(inbox_raw)["inbox"]
    assert set(box) == {"archived_total", "groups", "total", "unread_total"}
    group = next(g for g in box["groups"] if g["items"])
    assert set(group) == {"count", "items", "lane", "unread_count"}
    assert set(group["items"][0]) == {
        "approval_policy",
        "approval_state",
        "blocking_reason",
        "lane",
        "latest_activity_at",
        "run",
        "task",
        "triage",
    }
    assert set(group["items"][0]["triage"]) == {
        "actor",
        "archived",
        "dismissed",
        "last_seen_activity_at",
        "read",
        "task_id",
        "updated_at",
    }


def client_agent(c: Client) -> Client:
    return Client(c.socket_path, agent_name="shape-agent")


def test_empty_dashboard_is_all_zeros_and_ok(client: Client) -> None:
    board = dashboard(client)
    assert board.totals.tasks_total == 0 and board.totals.runs_total == 0
    assert [s.share_percent for s in board.status_breakdown] == [0.0] * 8
    assert board.health.status == "ok" and board.queue.backlog_status == "ok"
    assert board.queue.depth == [] and board.queue.oldest_queued_at is None
    assert board.freshness.latest_activity_at is None and not board.freshness.has_live_work
    assert board.cards.latency.claim_latency_ms.samples == 0


def test_backlog_warning_then_critical_and_staleness(make_daemon: Any) -> None:
    """Queue rule: past the threshold a warning, past four times it critical;
    live work with no activity for stale_after_ms is stale."""
    daemon = make_daemon(backlog_threshold_ms=250, stale_after_ms=250)
    with daemon.client() as c:
        c.tasks_create("waits", network_channel="cpu", start=True)
        board = dashboard(c)
        assert board.queue.backlog_status == "ok" and not board.health.queue_backlog
        assert board.freshness.status == "ok"
        time.sleep(0.4)
        board = dashboard(c)
        assert board.queue.oldest_queue_age_ms is not None
        assert 250 < board.queue.oldest_queue_age_ms <= 1000
        assert board.queue.backlog_warning and board.queue.backlog_status == "warning"
        assert board.queue.depth[0].oldest_queue_age_ms == board.queue.oldest_queue_age_ms
        assert board.health.queue_backlog and board.health.status == "warning"
        assert board.freshness.stale and board.freshness.status == "warning"
        time.sleep(0.8)
        board = dashboard(c)
        assert board.queue.backlog_status == "critical"
        assert board.health.status == "critical"


def test_latency_and_forced_stops_count_each_run_once(make_daemon: Any) -> None:
    """Claim latency runs from when a run became claimable (a retry's wait
    starts after its backoff) and counts only a run's standing claim; a
    forced stop is a failed run whose last claim expired or was ended by an
    operator — not an expiry that was re-queued, or followed by a claim."""
    daemon: ThreadDaemon = make_daemon(
        retry_backoff_base_ms=800, retry_backoff_cap_ms=800, max_claims_per_session=0
    )
    with daemon.client() as c, daemon.client(agent_name="retrier") as agent:
        retried = c.tasks_create("retried", max_attempts=2, start=True).run
        assert retried is not None
        token = agent.runs_claim(retried.id).claim_token
        agent.fail(retried.id, token, "flaky", retry=True)
        # The backoff, long enough that a claim made at once after it is well
        # inside it even on a loaded machine.
        time.sleep(0.85)
        agent.complete(retried.id, agent.runs_claim(retried.id).claim_token)
        runs = {
            name: c.tasks_create(name, max_attempts=attempts, start=True).run
            for name, attempts in (("released", 1), ("expiring", 1), ("requeued", 2), ("again", 2))
        }
        ids = {name: run.id for name, run in runs.items() if run is not None}
        agent.release(ids["released"], agent.runs_claim(ids["released"]).claim_token)
        c.tasks_cancel(agent.runs_get(ids["released"]).run.task.id)
        with daemon.client(agent_name="short-lease") as brief:
            for name in ("expiring", "requeued", "again"):
                brief.runs_claim(ids[name], lease_ms=1000)

        def status(name: str) -> str:
            return c.runs_get(ids[name]).run.run.status

        # The three leases end a few milliseconds apart (claimed one after
        # the other): wait for all three expiries, not just the first.
        assert wait_for(
            lambda: (
                [status(n) for n in ("expiring", "requeued", "again")]
                == ["failed", "queued", "queued"]
            ),
            timeout=6,
        )
        c.tasks_cancel(c.runs_get(ids["requeued"]).run.task.id)
        agent.fail(ids["again"], agent.runs_claim(ids["again"]).claim_token, "no", retry=False)
        run = c.runs_get(retried.id).run.run
        board = dashboard(c)
    lat = board.cards.latency.claim_latency_ms
    # retried (its second claim), expiring, again (its second claim); not
    # the released run (claim given back) nor the re-queued, canceled one.
    assert lat.samples == 3
    assert ms(run.claimed_at) - ms(run.queued_at) >= 800  # attempt 1 and the backoff ...
    assert lat.maximum_ms < 800  # ... are not claim latency
    assert board.cards.failed.forced_stops == 1
    t = board.totals
    assert (t.completed_runs, t.failed_runs, t.canceled_runs, t.runs_total) == (1, 2, 2, 5)
    with daemon.client() as c:
        assert_filter_agrees(c, board)


def test_all_active_runs_stuck_is_critical(make_daemon: Any) -> None:
    daemon = make_daemon(stuck_after_ms=100)
    with daemon.client() as c, daemon.client(agent_name="sleepy") as agent:
        c.tasks_create("one", start=True)
        assert agent.claim_next().claim is not None
        time.sleep(0.25)
        board = dashboard(c)
        assert board.health.stuck_runs == 1
        assert board.cards.in_progress.health_status == "critical"
        assert board.health.status == "critical"


def test_dashboard_filters(client: Client) -> None:
    """A workspace alone, a workspace with another filter, other filters
    (each a different access path in the store) and an unknown workspace."""
    a = client.tasks_create("a1", workspace="/w/alpha", network_channel="gpu", start=True).task
    client.tasks_create("a2", workspace="/w/alpha")
    client.tasks_create("b1", workspace="/w/beta", start=True)
    client.tasks_create("g1", owner={"kind": "automation", "ref": "cron"}, start=True)
    with client_agent(client) as agent:
        claim = agent.claim_next(workspace="/w/alpha").claim
        assert claim is not None and claim.task.id == a.id
        agent.complete(claim.run.id, claim.claim_token)
    alpha = dashboard(client, workspace="/w/alpha")
    assert alpha.totals.tasks_total == 2
    assert (alpha.totals.completed_tasks, alpha.totals.pending_tasks) == (1, 1)
    assert (alpha.totals.runs_total, alpha.totals.completed_runs) == (1, 1)
    assert alpha.queue.total == 0
    assert alpha.cards.latency.claim_latency_ms.samples == 1
    beta = dashboard(client, workspace="/w/beta")
    assert (beta.totals.tasks_total, beta.totals.ready_tasks, beta.queue.total) == (1, 1, 1)
    assert beta.cards.latency.claim_latency_ms.samples == 0
    both = dashboard(client, workspace="/w/alpha", network_channel="gpu")
    assert (both.totals.tasks_total, both.totals.completed_runs) == (1, 1)
    cron = dashboard(client, owner_kind="automation", owner_ref="cron")
    assert (cron.totals.tasks_total, cron.queue.total, cron.totals.runs_total) == (1, 1, 1)
    assert cron.queue.depth[0].network_channel is None
    assert dashboard(client, scope="workspace").totals.tasks_total == 3
    assert dashboard(client, origin_kind="web").totals.tasks_total == 0
    nowhere = dashboard(client, workspace="/w/nowhere")
    assert nowhere.totals.tasks_total == 0 and nowhere.totals.runs_total == 0
    everything = dashboard(client)
    assert (everything.totals.tasks_total, everything.totals.runs_total) == (4, 3)


def test_dashboard_params_are_strict(client: Client) -> None:
    with pytest.raises(errors.InvalidParams) as bad:
        client.call("observe.dashboard", {"workspce": "/x"}, p.DashboardResult)
    assert bad.value.details["field"] == "$.params.workspce"
    with pytest.raises(errors.InvalidParams):
        client.call("observe.inbox", {"lane": "someday"}, p.InboxResult)


def test_shares_add_up_to_exactly_100() -> None:
    assert shares({"a": 1, "b": 1, "c": 1}) == {"a": 33.4, "b": 33.3, "c": 33.3}
    assert shares({"a": 0, "b": 0}) == {"a": 0.0, "b": 0.0}
    assert shares({"a": 2, "b": 0}) == {"a": 100.0, "b": 0.0}
    for counts in ({"a": 1, "b": 2, "c": 4}, {"x": 7, "y": 7, "z": 7, "w": 1}, {"q": 997, "r": 3}):
        tenths = [round(v * 10) for v in shares(counts).values()]
        assert sum(tenths) == 1000
        for count, tenth in zip(counts.values(), tenths, strict=True):
            assert abs(tenth - count * 1000 / sum(counts.values())) < 1


# -- the inbox and triage ---------------------------------------------------------------


def test_inbox_lanes_unread_dismiss_archive_across_two_actors(make_daemon: Any) -> None:
    daemon = make_daemon(max_claims_per_session=0)
    with daemon.client() as human, daemon.client(agent_name="helper") as agent:
        mine = human.tasks_create("write the report").task
        human.tasks_create("a draft", draft=True)
        gated = human.tasks_create("deploy", approval_policy="manual", start=True).task
        flaky = human.tasks_create("flaky", start=True).task
        waits = human.tasks_create("after report", depends_on=[mine.id], start=True).task
        asks = human.tasks_create("ask me", start=True).task
        bobs = human.tasks_create("bob's", owner={"kind": "human", "ref": "bob"}).task
        done = human.tasks_create("done", start=True).task
        for ref, outcome in ((flaky.id, "fail"), (asks.id, "ask"), (done.id, "complete")):
            claim = agent.claim_next().claim
            assert claim is not None and claim.task.id == ref
            if outcome == "fail":
                agent.fail(claim.run.id, claim.claim_token, "broke", retry=False)
            elif outcome == "ask":
                agent.agent_send(claim.run.id, claim.claim_token, "which branch?", "question")
            else:
                agent.complete(claim.run.id, claim.claim_token)

        box = inbox(human)
        assert lanes(box) == {
            "my_work": [mine.identifier],
            "approvals": [gated.identifier],
            "failed_runs": [flaky.identifier],
            "blocked": [asks.identifier, waits.identifier],  # newest activity first
        }
        assert box.total == 5 and box.unread_total == 5 and box.archived_total == 0
        item = box.groups[3].items[0]
        assert item.blocking_reason is not None and "which branch?" in item.blocking_reason
        assert item.run is not None and item.run.status == "claimed"
        assert box.groups[2].items[0].run is not None
        assert box.groups[2].items[0].run.status == "failed"  # the latest run
        assert box.groups[1].items[0].approval_state == "pending"
        assert box.groups[0].items[0].triage == p.Triage(
            actor=p.Actor("human", os_user()), task_id=mine.id
        )
        assert lanes(inbox(human, owner_kind="human", owner_ref="bob"))["my_work"] == [
            bobs.identifier
        ]

        # read: unread for this actor only.
        seen = triage(human, "read", mine.identifier)
        assert seen.read and not seen.dismissed and seen.last_seen_activity_at is not None
        assert seen.actor == p.Actor("human", os_user())
        box = inbox(human)
        assert box.unread_total == 4 and box.groups[0].unread_count == 0
        assert box.groups[0].items[0].triage.read
        assert [i.task.identifier for g in inbox(human, unread=True).groups for i in g.items] == [
            gated.identifier,
            flaky.identifier,
            asks.identifier,
            waits.identifier,
        ]

        # dismiss: hidden for the human, untouched for the agent...
        triage(human, "dismiss", gated.id)
        assert lanes(inbox(human))["approvals"] == []
        agents = inbox(agent)
        assert lanes(agents)["approvals"] == [gated.identifier]
        assert lanes(agents)["my_work"] == []  # the agent owns nothing
        assert not agents.groups[1].items[0].triage.dismissed
        assert agents.groups[1].unread_count == 1
        # ... until newer activity: back, unread, no longer dismissed.
        time.sleep(0.005)
        human.tasks_update(gated.id, title="deploy (v2)")
        back = inbox(human).groups[1]
        assert [i.task.title for i in back.items] == ["deploy (v2)"]
        assert back.unread_count == 1 and not back.items[0].triage.dismissed

        # archive: only in the archived lane, for this actor only.
        archived = triage(human, "archive", flaky.identifier)
        assert archived.archived and archived.read
        box = inbox(human)
        assert lanes(box)["failed_runs"] == [] and box.archived_total == 1
        assert box.total == 4
        assert lanes(inbox(human, lane="archived")) == {"archived": [flaky.identifier]}
        time.sleep(0.005)
        human.tasks_runs_enqueue(flaky.id)  # activity does not bring an archived task back
        assert lanes(inbox(human))["my_work"] == [mine.identifier]
        assert inbox(human).archived_total == 1
        assert lanes(inbox(agent))["my_work"] == []
        assert all(flaky.identifier not in ids for ids in lanes(inbox(human)).values())
        triage(human, "unarchive", flaky.id)
        assert flaky.identifier in lanes(inbox(human))["my_work"]  # now ready, and mine

        # query, lane and limit
        hits = inbox(human, query="REPORT")
        assert {i.task.identifier for g in hits.groups for i in g.items} == {
            mine.identifier,
            waits.identifier,
        }
        assert lanes(inbox(human, query=asks.identifier.lower()))["blocked"] == [asks.identifier]
        limited = inbox(human, limit=1)
        assert limited.groups[3].count == 2 and len(limited.groups[3].items) == 1
        assert [g.lane for g in inbox(human, lane="blocked").groups] == ["blocked"]


def test_triage_of_unknown_task_is_not_found(client: Client) -> None:
    with pytest.raises(errors.NotFound):
        triage(client, "read", "T-999")


def test_actor_without_ref_is_null_on_the_wire(client: Client) -> None:
    client.tasks_create("nightly", owner={"kind": "automation"})
    box = inbox(client, owner_kind="automation")
    (item,) = box.groups[0].items
    assert item.triage.actor == p.Actor("automation", None)


def os_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


# -- speed: the plans ---------------------------------------------------------------------


def test_dashboard_reads_only_through_indexes(short_dir: str) -> None:
    """Unfiltered and with every filter, no statement of the dashboard
    scans a table, and the events table is read at its end only (a filter
    whose tasks none of the newest events touched reads their rows: not
    tested here)."""
    conn = open_connection(os.path.join(short_dir, "plans.db"))
    caller = Caller("human", "me", "cli")
    conn.execute("BEGIN")
    new = NewTask(
        "t", "human", "me", "cli", workspace="/w", network_channel="gpu", scope="workspace"
    )
    tasks_store.create_task(Tx(conn, 1_000), caller, new)
    conn.execute("COMMIT")
    # Statistics of a large hub (as bench/dashboard.py's ANALYZE wrote them):
    # with them SQLite is tempted to skip-scan tasks_facets.
    conn.execute("ANALYZE")
    conn.execute("DELETE FROM sqlite_stat1")
    conn.execute(
        "INSERT INTO sqlite_stat1 VALUES ('tasks', 'tasks_facets',"
        " '100000 12500 2084 1 1 1 1 1 1 1 1 1 1 1'),"
        " ('tasks', 'tasks_status', '100000 12500 1'),"
        " ('tasks', 'tasks_workspace', '100000 16667 1')"
    )
    conn.execute("ANALYZE sqlite_schema")  # reload them
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        for filters in (
            store.Filters(),
            store.Filters(workspace="/w"),
            store.Filters(network_channel="gpu"),
            store.Filters(owner_kind="human", owner_ref="me"),
            store.Filters(workspace="/w", network_channel="gpu", origin_kind="cli"),
            store.Filters(scope="workspace"),
        ):
            statements.clear()
            conn.execute("BEGIN")
            store.dashboard(Tx(conn, 1_000), filters, Thresholds())
            conn.execute("COMMIT")
            conn.set_trace_callback(None)
            assert sum(sql.startswith("SELECT") for sql in statements) >= 10
            for sql in statements:
                if not sql.startswith("SELECT"):
                    continue
                plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
                assert not _full_scan(plan), f"{sql}\n  -> {plan}"
            conn.set_trace_callback(statements.append)
    finally:
        conn.close()


def _full_scan(plan: str) -> bool:
    """A step that reads a whole table, or any scan of the events table
    (index scans of other tables are fine: the partial and covering ones
    read no row, which EXPLAIN QUERY PLAN does not always say), or a skip-scan
    (``ANY(column)``: one seek per distinct value of the skipped columns).
    ``status_counts`` is whole by design: a row per tally and status."""
    if "ANY(" in plan:
        return True
    for step in plan.split(" | "):
        words = step.split()
        if words[:2] == ["SCAN", "status_counts"]:
            continue
        if words[:1] == ["SCAN"] and (len(words) == 2 or words[1] == "events"):
            return True
    return False


def test_migration_4_keeps_the_claim_plan(short_dir: str) -> None:
    conn = sqlite3.connect(os.path.join(short_dir, "m4.db"))
    try:
        from aghd.store.claims import claim_query
        from aghd.store.models import ClaimFilters
        from aghd.store.schema import migrate

        migrate(conn)
        for filters in (ClaimFilters(), ClaimFilters(network_channel="gpu")):
            sql, args = claim_query(filters, 0)
            plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
            assert "runs_claim" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        conn.close()
