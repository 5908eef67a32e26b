"""The crash harness (bench/crash.py) in short: a real ``python -m aghd``
under load from 16 agents, SIGKILLed 6 times, every acknowledged reply
checked against the database and the socket (PROTOCOL.md §6-§8).

The checks are the harness's own, imported from its file; the second test
feeds them fabricated acknowledgements to prove they can fail."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

pytestmark = pytest.mark.slow

CRASH_PY = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "crash.py")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agh_bench_crash", CRASH_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


crash = _load()


@pytest.fixture(scope="module")
def harness() -> Iterator[Any]:
    workdir = tempfile.mkdtemp(prefix="aghch", dir="/tmp")
    opts = crash.Options(
        kills=6,
        seed=20261201,
        agents=16,
        min_uptime=0.4,
        max_uptime=0.9,
        startup_kill_fraction=0.2,
        workdir=workdir,
    )
    h = crash.Harness(opts)
    h.run()
    yield h
    shutil.rmtree(workdir, ignore_errors=True)


def test_six_kills_lose_nothing_acknowledged(harness: Any) -> None:
    r = harness.report
    assert r.violations == [], "\n".join(crash.summary(r))
    assert r.kills == 6 and r.clean_exit_code == 0
    assert r.restarts == 6 - r.startup_kills + 1  # the final restart too
    # The load really exercised every kind of write the checks cover.
    for kind in (
        "create",
        "claim",
        "heartbeat",
        "complete",
        "fail",
        "release",
        "cancel",
        "send",
        "compose",
    ):
        assert r.acknowledged_writes.get(kind, 0) > 0, (kind, r.acknowledged_writes)
        assert r.checks_by_kind.get(kind, 0) >= r.acknowledged_writes[kind], kind
    assert r.claims > 100 and r.socket_checks > 0
    # The subscriber resumed after every restart and saw the log from 1.
    assert r.subscriptions >= r.restarts
    assert r.events_streamed > 500 and r.events_in_db >= r.events_streamed


def test_checks_flag_fabricated_acknowledgements(harness: Any) -> None:
    """The same checks, fed lies: a create that never happened, a second
    agent's claim inside a live lease, a stream that skipped an event."""
    checker = harness.checker
    shared = harness.shared
    real = next(
        c
        for c in shared.claims.values()
        if c.finish_acked and c.finish_sent is not None and c.finish_sent > c.claimed_at
    )
    shared.acks.append(
        crash.Ack(
            agent=0,
            incarnation=1,
            op="create",
            t_send=0.0,
            t_ack=0.0,
            outcome="ok",
            retried=False,
            req={"title": "never"},
            res={"task_id": "task_fabricated", "run_id": None},
        )
    )
    shared.claims["fabricated"] = crash.ClaimRecord(
        agent=real.agent + 1,
        incarnation=1,
        run_id=real.run_id,
        task_id=real.task_id,
        token_hash="fabricated",
        session_id="ses_nobody",
        attempt=real.attempt,
        max_attempts=real.max_attempts,
        claimed_at=real.claimed_at,
        lease_until=real.lease_until,
        lease_ms=1000,
    )
    received = harness.subscriber.received
    del received[len(received) // 2]
    view = crash.DbView(harness.db_path, checker.mirror)
    problems = "\n".join(checker.check_db(view, 99, None, crash.now_ms()))
    assert "acknowledged create of task_fabricated is lost" in problems
    assert f"acknowledged claim of {real.run_id}" in problems  # no such claim row
    assert f"run {real.run_id}: agent" in problems  # overlapping leases
    assert "stream: gap" in problems
