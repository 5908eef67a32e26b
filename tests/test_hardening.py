"""Regressions for the first code review's findings: each test failed before
its fix."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh import errors
from aghd.store import claims, leases
from aghd.store.db import Caller, Tx, open_connection
from aghd.store.models import ClaimFilters, NewTask
from aghd.store.schema import LATEST
from aghd.store.tasks import create_task
from aghd.store.workflows import start_task_or_workflow
from tests.helpers.daemons import ThreadDaemon, spawn_daemon, wait_run_status

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.wire import RawConn


def test_requests_pipelined_behind_hello_run_as_its_session(raw: RawConn, client: Client) -> None:
    client.tasks_create("for the agent", start=True)
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "session.hello",
        "params": {"agent_name": "piped", "session_id": "ses_piped"},
    }
    claim = {"jsonrpc": "2.0", "id": 2, "method": "agent.claim_next", "params": {}}
    raw.send(json.dumps(hello) + "\n" + json.dumps(claim) + "\n")
    replies = {r["id"]: r for r in (raw.recv(), raw.recv())}
    got = replies[2]["result"]["claim"]
    assert got["run"]["session_id"] == "ses_piped"
    assert got["run"]["claimed_by"] == {"kind": "agent_session", "ref": "ses_piped"}


def test_fractional_id_is_echoed(raw: RawConn) -> None:
    raw.send('{"jsonrpc":"2.0","id":1.5,"method":"server.info"}\n')
    reply = raw.recv()
    assert reply["id"] == 1.5 and "result" in reply


def test_unknown_param_names_the_field(raw: RawConn) -> None:
    raw.request("tasks.create", {"title": "x", "titel": "typo"})
    reply = raw.recv()
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["details"]["field"] == "$.params.titel"


def test_wrong_version_without_id_is_answered(raw: RawConn) -> None:
    raw.send('{"jsonrpc":"1.0","method":"server.info"}\n')
    reply = raw.recv()
    assert reply["error"]["code"] == -32600 and reply["id"] is None


def test_oversized_batch_is_refused(raw: RawConn) -> None:
    raw.send(
        json.dumps([{"jsonrpc": "2.0", "id": i, "method": "server.info"} for i in range(1001)])
        + "\n"
    )
    reply = raw.recv()
    assert isinstance(reply, dict) and reply["error"]["code"] == -32600
    raw.request("server.info", id=7)
    assert raw.recv()["id"] == 7


def test_runs_claim_key_is_scoped_to_the_claimant(daemon: ThreadDaemon, client: Client) -> None:
    created = client.tasks_create("keyed", start=True)
    assert created.run is not None
    with (
        daemon.client(agent_name="a", session_id="ses_a") as a,
        daemon.client(agent_name="b", session_id="ses_b") as b,
    ):
        a.runs_claim(created.run.id, idempotency_key="k")
        with pytest.raises(errors.Conflict):
            b.runs_claim(created.run.id, idempotency_key="k")


def test_expired_lease_is_fenced_before_the_reaper_runs(short_dir: str) -> None:
    conn = open_connection(os.path.join(short_dir, "f.db"))
    me = Caller("agent_session", "s", "agent_session")
    new = NewTask(title="t", owner_kind="human", owner_ref="me", origin_kind="cli")
    tx = Tx(conn, 1_000_000)
    task = create_task(tx, me, new)
    start_task_or_workflow(tx, me, task["id"], idempotency_key=None, input_value=None)
    claimed = claims.claim_next_run(
        tx,
        me,
        session_id=None,
        filters=ClaimFilters(),
        lease_ms=1000,
        token_hash="h",
        idempotency_key=None,
        max_claims_per_session=0,
    )
    assert claimed is not None
    later = Tx(conn, 1_000_000 + 1500)  # past lease_until, reaper not run
    with pytest.raises(errors.LeaseLost):
        leases.heartbeat(later, me, claimed.run["id"], "h", None)
    with pytest.raises(errors.LeaseLost):
        leases.complete_run(later, me, claimed.run["id"], "h", None)


def test_reaper_survives_a_locked_database(make_daemon: Any) -> None:
    d = make_daemon()
    with d.client(agent_name="sleepy") as agent:
        agent.tasks_create("locked out", start=True, max_attempts=2)
        claim = agent.claim_next(lease_ms=1000).claim
        assert claim is not None
    # Another program holds the write lock longer than aghd's busy timeout (5 s)
    # just as the lease runs out: the reaper's write fails; aghd must live on.
    other = sqlite3.connect(d.config.db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Timer(6.5, lambda: other.execute("ROLLBACK"))
    released.start()
    try:
        time.sleep(7)
    finally:
        released.join()
        other.close()
    with d.client() as c:
        assert c.server_info().pid == os.getpid()
        assert wait_run_status(c, claim.run.id, "queued", timeout=5).status == "queued"


def test_newer_database_is_a_clean_startup_error(short_dir: str) -> None:
    db = os.path.join(short_dir, "new.db")
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    proc = spawn_daemon(os.path.join(short_dir, "n.sock"), db, wait=False)
    _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert b"newer" in err and b"Traceback" not in err
