"""Group commit: a failing job is undone alone, its batch-mates commit."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from agh.errors import Conflict, InternalError
from aghd.committer import Committer

if TYPE_CHECKING:
    from aghd.store.db import Tx


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _insert(tx: Tx, key: str, fail: BaseException | None = None) -> str:
    tx.execute("INSERT INTO meta (key, value) VALUES (?, 1)", (key,))
    if fail is not None:
        raise fail
    return key


@pytest.mark.anyio
async def test_failing_job_is_rolled_back_alone(short_dir: str) -> None:
    path = os.path.join(short_dir, "c.db")
    committer = Committer(path)
    results: dict[str, object] = {}

    async def write(key: str, fail: BaseException | None = None) -> None:
        try:
            results[key] = await committer.write(_insert, key, fail)
        except Exception as exc:
            results[key] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        async with anyio.create_task_group() as writers:
            # Queued together, so they share one batch.
            writers.start_soon(write, "a")
            writers.start_soon(write, "bad", Conflict("no"))
            writers.start_soon(write, "b")
            writers.start_soon(write, "bug", ValueError("boom"))
            writers.start_soon(write, "c")
        committer.close()
    committer.shutdown()

    assert results["a"] == "a" and results["b"] == "b" and results["c"] == "c"
    assert isinstance(results["bad"], Conflict)
    assert isinstance(results["bug"], InternalError)  # a non-agh exception is a bug
    keys = {r[0] for r in sqlite3.connect(path).execute("SELECT key FROM meta")}
    assert {"a", "b", "c"} <= keys and not {"bad", "bug"} & keys
    assert committer.batches <= 2  # the five jobs really were grouped
    assert committer.reruns >= 1  # "bad" and "bug" failed after writing


def _refuse(tx: Tx) -> None:
    raise Conflict("checked before writing")


@pytest.mark.anyio
async def test_job_failing_before_any_write_does_not_rerun_the_batch(short_dir: str) -> None:
    path = os.path.join(short_dir, "r.db")
    committer = Committer(path)
    outcomes: list[object] = []

    async def write(fn: object, *args: object) -> None:
        try:
            outcomes.append(await committer.write(fn, *args))  # type: ignore[arg-type]
        except Conflict as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(committer.run)
        async with anyio.create_task_group() as writers:
            writers.start_soon(write, _insert, "x")
            writers.start_soon(write, _refuse)
            writers.start_soon(write, _insert, "y")
        committer.close()
    committer.shutdown()
    assert "x" in outcomes and "y" in outcomes
    assert any(isinstance(o, Conflict) for o in outcomes)
    assert committer.reruns == 0


@pytest.mark.anyio
async def test_a_long_read_does_not_hold_up_another(short_dir: str) -> None:
    """Two read connections: while one read is stuck (a big dashboard),
    another read is answered."""
    committer = Committer(os.path.join(short_dir, "reads.db"), readers=2)
    release = threading.Event()
    order: list[str] = []

    def long_read(tx: Tx) -> str:
        assert release.wait(10), "the short read never got through"
        return "long"

    def short_read(tx: Tx) -> str:
        order.append("short")
        release.set()
        return str(tx.scalar("SELECT count(*) FROM meta"))

    async def read(fn: Any) -> None:
        order.append(await committer.read(fn))

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, long_read)
                await anyio.sleep(0.05)  # the long read holds a connection
                tg.start_soon(read, short_read)
    finally:
        committer.shutdown()
    # The short read ran while the long one held its connection (with one
    # connection it would wait for it, and the long read waits for it).
    assert order[0] == "short" and sorted(order[1:]) == ["1", "long"]
