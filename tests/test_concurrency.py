"""Many agents at once: every run done exactly once, never two holders."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from agh import errors
from agh import protocol as p
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon

N_RUNS = 2000
N_AGENTS = 16
BATCH = 200


def _create_queued(path: str, n: int) -> dict[str, str]:
    """Create ``n`` started tasks in batches; return run id -> task id."""
    conn = RawConn(path, timeout=60)
    runs: dict[str, str] = {}
    try:
        for start in range(0, n, BATCH):
            batch = [
                {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "tasks.create",
                    "params": {"title": f"bulk {i}", "start": True},
                }
                for i in range(start, min(n, start + BATCH))
            ]
            conn.send(json.dumps(batch) + "\n")
            replies = conn.recv()
            assert isinstance(replies, list) and len(replies) == len(batch)
            assert {r["id"] for r in replies} == {b["id"] for b in batch}
            for r in replies:
                assert "result" in r, r
                run = r["result"]["run"]
                assert run["status"] == "queued"
                runs[run["id"]] = r["result"]["task"]["id"]
    finally:
        conn.close()
    assert len(runs) == n
    return runs


def _all_tasks(c: Client, **filters: Any) -> list[Any]:
    out: list[Any] = []
    cursor = None
    while True:
        page = c.tasks_list(limit=1000, cursor=cursor, **filters)
        out.extend(page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            return out


def test_many_agents_complete_every_run_exactly_once(daemon: ThreadDaemon) -> None:
    runs = _create_queued(daemon.socket, N_RUNS)
    lock = threading.Lock()
    holders: dict[str, str] = {}  # run id -> agent currently holding it
    claims: Counter[str] = Counter()
    completions: Counter[str] = Counter()
    per_agent: Counter[str] = Counter()
    violations: list[str] = []
    failures: list[BaseException] = []
    start = threading.Barrier(N_AGENTS)

    def agent(name: str) -> None:
        try:
            with daemon.client(agent_name=name) as c:
                start.wait(30)
                while True:
                    claim = c.claim_next(lease_ms=120_000).claim
                    if claim is None:
                        return
                    rid = claim.run.id
                    with lock:
                        if rid in holders:
                            violations.append(f"{name} claimed {rid} held by {holders[rid]}")
                        holders[rid] = name
                        claims[rid] += 1
                    if claim.run.attempt != 1:
                        violations.append(f"{rid} claimed with attempt {claim.run.attempt}")
                    done = c.complete(rid, claim.claim_token, result={"by": name})
                    if done.lease.status != "completed":
                        violations.append(f"{rid} completed as {done.lease.status}")
                    # Only now may anyone else hold it (a completed run never can).
                    with lock:
                        if holders.get(rid) == name:
                            del holders[rid]
                        completions[rid] += 1
                        per_agent[name] += 1
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=agent, args=(f"agent-{i}",)) for i in range(N_AGENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads), "agents did not finish"
    assert failures == []
    assert violations == []
    assert set(completions) == set(runs)
    assert all(n == 1 for n in completions.values())
    assert all(n == 1 for n in claims.values())
    assert sum(per_agent.values()) == N_RUNS
    assert len(per_agent) > 1, "one agent did all the work: no concurrency was exercised"

    with daemon.client() as c:
        done = _all_tasks(c, status="completed")
        assert len(done) == N_RUNS
        assert {t.id for t in done} == set(runs.values())
        assert _all_tasks(c, status="ready") == []
        assert _all_tasks(c, status="in_progress") == []
        assert c.claim_next().claim is None
        # Spot-check that each run records who finished it.
        for rid in list(runs)[:: N_RUNS // 20]:
            run = c.runs_get(rid).run.run
            assert run.status == "completed" and run.attempt == 1
            assert run.result is not None and run.result["by"].startswith("agent-")
        # The dashboard agrees, both from the run indexes (unfiltered) and
        # from the per-task tallies the completions kept (filtered).
        for board in (
            c.call("observe.dashboard", {}, p.DashboardResult).dashboard,
            c.call("observe.dashboard", {"scope": "global"}, p.DashboardResult).dashboard,
        ):
            assert (board.totals.completed_tasks, board.totals.completed_runs) == (N_RUNS, N_RUNS)
            assert board.totals.runs_total == N_RUNS and board.queue.total == 0


def test_racing_runs_claim_exactly_one_wins(daemon: ThreadDaemon) -> None:
    with daemon.client() as setup:
        run_ids = []
        for i in range(20):
            run = setup.tasks_create(f"race {i}", start=True).run
            assert run is not None
            run_ids.append(run.id)

    clients = [daemon.client(), daemon.client()]
    try:
        for rid in run_ids:
            barrier = threading.Barrier(2)
            outcomes: list[Any] = [None, None]

            def racer(
                i: int,
                rid: str = rid,
                barrier: threading.Barrier = barrier,
                outcomes: list[Any] = outcomes,
            ) -> None:
                barrier.wait(10)
                try:
                    outcomes[i] = clients[i].runs_claim(rid)
                except errors.AghError as exc:
                    outcomes[i] = exc

            threads = [threading.Thread(target=racer, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            wins = [o for o in outcomes if not isinstance(o, BaseException)]
            losses = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(wins) == 1 and len(losses) == 1, outcomes
            assert isinstance(losses[0], errors.Conflict), losses
            assert wins[0].run.id == rid and wins[0].run.attempt == 1
        with daemon.client() as c:
            for rid in run_ids:
                assert c.runs_get(rid).run.run.status == "claimed"
    finally:
        for cl in clients:
            cl.close()


def test_racing_claim_next_on_one_run(daemon: ThreadDaemon) -> None:
    """Eight agents long-poll; one run appears; exactly one gets it."""
    results: list[Any] = []
    lock = threading.Lock()
    ready = threading.Barrier(9)

    def waiter(i: int) -> None:
        with daemon.client(agent_name=f"w{i}") as c:
            ready.wait(10)
            claim = c.claim_next(wait_ms=1500).claim
            with lock:
                results.append(claim)

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    ready.wait(10)
    with daemon.client() as c:
        run = c.tasks_create("the only one", start=True).run
        assert run is not None
    for t in threads:
        t.join(10)
    got = [r for r in results if r is not None]
    assert len(results) == 8
    assert len(got) == 1 and got[0].run.id == run.id
