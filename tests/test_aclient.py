"""``agh.AsyncClient`` (agh/aclient.py) against a real in-process daemon:
the same methods and errors as the sync client, many tasks on one
connection, events, and ``claim()`` finishing however its block ends."""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import subprocess
import sys
import time
from typing import Any

import anyio
import pytest

from agh import _gen_async, errors
from agh.aclient import AsyncClient
from agh.client import Client
from tests.helpers.cli import clean_environ
from tests.helpers.daemons import ThreadDaemon, chained_claims, wait_run_status

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the same API as the sync client ----------------------------------------------------


def test_every_public_method_of_client_exists_with_the_same_parameters() -> None:
    names = [n for n, _ in inspect.getmembers(Client, inspect.isfunction) if not n.startswith("_")]
    names.remove("close")  # the async client closes at the end of `async with`
    names.remove("shutdown_write")  # an async caller cancels the waiting task instead
    assert len(names) > 40
    for name in [*names, "__init__"]:
        sync, async_ = getattr(Client, name), getattr(AsyncClient, name, None)
        assert async_ is not None, f"AsyncClient has no {name}"
        assert inspect.signature(async_).parameters == inspect.signature(sync).parameters, name
        if name == "claims":  # an async generator: `async for`
            assert inspect.isasyncgenfunction(async_), "AsyncClient.claims is not `async for`"
        elif name not in ("__init__", "claim"):
            assert inspect.iscoroutinefunction(async_), f"AsyncClient.{name} is not async"


def test_the_generated_methods_are_up_to_date() -> None:
    # Stale after any change to agh/client.py: run `python -m agh._gen_async`.
    assert _gen_async.render() == _gen_async.TARGET.read_text()


def test_the_generator_awaits_a_call_used_inside_an_expression() -> None:
    source = (
        "class Client:\n"
        "    def call(self): ...\n"
        "    def a(self) -> int:\n"
        "        return self.call().x + self.b()[0]\n"
        "    def b(self) -> list[int]:\n"
        "        return self.call()\n"
        "    def close(self) -> None:\n"
        "        self._sock.close()\n"
    )
    section = _gen_async.generated_section(source)
    assert "async def a(self) -> int:" in section and "async def b(self)" in section
    assert "return (await self.call()).x + (await self.b())[0]" in section
    assert "close" not in section  # no RPC in it


def test_import_agh_loads_neither_client_nor_anyio_nor_msgspec() -> None:
    code = (
        "import sys, agh; "
        "print(sorted(m for m in ('anyio', 'msgspec', 'agh.client', 'agh.aclient') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_environ()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_both_clients_import_from_agh() -> None:
    import agh
    from agh import AsyncClient as A
    from agh import Client as C

    assert (AsyncClient, Client) == (A, C) and agh.__version__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        agh.Nope  # noqa: B018


# -- calls ------------------------------------------------------------------------------


async def test_create_list_get_round_trip(daemon: ThreadDaemon) -> None:
    async with AsyncClient(daemon.socket) as c:
        created = await c.tasks_create("async round trip", description="d")
        listed = await c.tasks_list()
        got = await c.tasks_get(created.task.id)
    assert created.task.id in [t.id for t in listed.tasks]
    assert got.task.task.title == "async round trip"
    assert got.task.task.description == "d"


async def test_fifty_concurrent_calls_on_one_client_get_their_own_replies(
    daemon: ThreadDaemon,
) -> None:
    titles: dict[int, str] = {}
    async with AsyncClient(daemon.socket, agent_name="waiter") as c:
        waited: list[float] = []

        async def long_poll() -> None:
            # Its reply comes last: the 100 calls below overtake it.
            started = time.monotonic()
            assert (await c.claim_next(network_channel="nobody", wait_ms=1000)).claim is None
            waited.append(time.monotonic() - started)

        async def create_then_get(i: int) -> None:
            created = await c.tasks_create(f"task {i}")
            titles[i] = (await c.tasks_get(created.task.id)).task.task.title

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_poll)
            for i in range(50):
                tg.start_soon(create_then_get, i)
            with anyio.fail_after(10):
                while len(titles) < 50:
                    await anyio.sleep(0.01)
            assert not waited  # the long poll, sent first, held up none of them
    assert titles == {i: f"task {i}" for i in range(50)}
    assert waited[0] >= 1.0


async def test_large_requests_from_many_tasks_are_never_interleaved(daemon: ThreadDaemon) -> None:
    # Each line is larger than the socket's buffer, so sends wait for room
    # while other tasks want to send too.
    got: dict[int, tuple[str, int]] = {}
    async with AsyncClient(daemon.socket) as c:

        async def create(i: int) -> None:
            task = (await c.tasks_create(f"big {i}", description=str(i) * 300_000)).task
            got[i] = (task.title, len(task.description or ""))

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(create, i)
    assert got == {i: (f"big {i}", 300_000) for i in range(10)}


async def test_daemon_errors_come_back_as_the_same_classes(daemon: ThreadDaemon) -> None:
    async with AsyncClient(daemon.socket) as c:
        with pytest.raises(errors.NotFound) as caught:
            await c.tasks_get("tsk_does_not_exist")
        with pytest.raises(errors.InvalidParams):
            await c.tasks_list(status="no such status")
        # The connection is still good after an error.
        assert (await c.server_info()).version
    assert caught.value.code == errors.NotFound.code


async def test_no_daemon_is_unreachable_with_its_cause(short_dir: str) -> None:
    missing = os.path.join(short_dir, "none.sock")
    with pytest.raises(errors.DaemonUnreachable) as caught:
        async with AsyncClient(missing):
            pass
    assert caught.value.details == {"cause": "not_running"}
    assert missing in caught.value.message and "Start it with `aghd`" in caught.value.message

    stale = os.path.join(short_dir, "stale.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(stale)  # a socket file that nobody listens on
    with pytest.raises(errors.DaemonUnreachable) as caught:
        async with AsyncClient(stale):
            pass
    assert caught.value.details == {"cause": "not_running"}


async def test_a_daemon_of_another_uid_is_refused_before_sending(
    daemon: ThreadDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGH_DAEMON_UID", str(os.getuid() + 1))
    with pytest.raises(errors.DaemonUnreachable) as caught:
        async with AsyncClient(daemon.socket, agent_name="would-leak"):
            pass
    assert caught.value.details == {"cause": "impostor"}
    monkeypatch.delenv("AGH_DAEMON_UID")
    with daemon.client() as c:
        assert "would-leak" not in [s.agent_name for s in c.sessions_list().sessions]


async def test_a_silent_daemon_is_no_answer_after_the_timeout(short_dir: str) -> None:
    path = os.path.join(short_dir, "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)  # accepted by the kernel, never answered
        async with AsyncClient(path, timeout=0.3) as c:
            started = time.monotonic()
            with pytest.raises(errors.DaemonUnreachable) as caught:
                await c.server_info()
    assert 0.3 <= time.monotonic() - started < 2
    assert caught.value.details == {"cause": "no_answer"}
    assert "did not answer within 0.3 seconds" in caught.value.message


async def test_idle_connection_closed_by_aghd_reconnects_as_the_same_session(
    make_daemon: Any,
) -> None:
    d: ThreadDaemon = make_daemon(idle_timeout_s=0.3)
    async with AsyncClient(d.socket, agent_name="sleepy", session_id="ses_async") as c:
        first = c._conn
        await anyio.sleep(1.5)  # aghd closes the idle connection meanwhile
        assert first is not None and first.lost is not None
        sessions = {s.session_id: s for s in (await c.sessions_list()).sessions}
    assert c._conn is not first
    assert sessions["ses_async"].state == "connected"


async def test_an_exception_in_the_block_is_not_wrapped(daemon: ThreadDaemon) -> None:
    # A ValueError, not an ExceptionGroup from the client's task group.
    with pytest.raises(ValueError, match=r"^mine$"):
        async with AsyncClient(daemon.socket):
            raise ValueError("mine")


async def test_a_call_outside_async_with_says_how_to_use_it(daemon: ThreadDaemon) -> None:
    with pytest.raises(RuntimeError, match="async with AsyncClient"):
        await AsyncClient(daemon.socket).server_info()


# -- events -----------------------------------------------------------------------------


async def test_events_subscribe_then_next_event_receives_the_event(daemon: ThreadDaemon) -> None:
    async with AsyncClient(daemon.socket) as watcher:
        sub = await watcher.events_subscribe(network_channel="evt")
        with pytest.raises(TimeoutError):
            await watcher.next_event(timeout=0.2)
        with daemon.client() as writer:
            created = writer.tasks_create("seen", network_channel="evt")
        event = await watcher.next_event(timeout=5)
    assert event.subscription == sub.subscription and event.type == "timeline"
    assert event.timeline is not None and event.timeline.task is not None
    assert event.timeline.task.id == created.task.id


# -- claim() ----------------------------------------------------------------------------


async def test_claim_with_a_short_lease_held_long_stays_alive_and_completes(
    daemon: ThreadDaemon,
) -> None:
    with daemon.client() as c:
        created = c.tasks_create("long job", start=True)
    assert created.run is not None
    async with (
        AsyncClient(daemon.socket, agent_name="worker") as agent,
        agent.claim(lease_ms=1500) as work,
    ):
        assert work is not None and work.run.id == created.run.id
        await anyio.sleep(4)  # over twice the lease, no manual heartbeat
        assert work.lost is None
        work.result = {"ok": True}
    with daemon.client() as c:
        run = c.runs_get(created.run.id).run.run
    assert run.status == "completed" and run.result == {"ok": True}
    assert run.attempt == 1  # never expired and re-claimed


async def test_claim_fails_the_run_with_the_exceptions_text(daemon: ThreadDaemon) -> None:
    with daemon.client() as c:
        created = c.tasks_create("doomed", start=True)
    assert created.run is not None
    async with AsyncClient(daemon.socket, agent_name="worker") as agent:
        with pytest.raises(ValueError, match="boom"):
            async with agent.claim() as work:
                assert work is not None
                raise ValueError("boom")
    with daemon.client() as c:
        run = c.runs_get(created.run.id).run.run
    assert run.status == "failed"
    assert run.error is not None and "ValueError: boom" in run.error


async def _hold_until_stopped(client: AsyncClient, how: str) -> None:
    async with client.claim(lease_ms=300_000) as work:
        assert work is not None
        if how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        await anyio.sleep(30)


@pytest.mark.parametrize("how", ["cancelled", "cancelled around the client", "KeyboardInterrupt"])
async def test_claim_releases_the_run_when_cancelled_or_interrupted(
    daemon: ThreadDaemon, how: str
) -> None:
    with daemon.client() as c:
        created = c.tasks_create(f"interrupted: {how}", start=True)
    assert created.run is not None
    if how == "cancelled around the client":
        # The client's own reader is inside the cancelled scope too: the
        # release must still get its reply.
        with anyio.move_on_after(0.3) as scope:
            async with AsyncClient(daemon.socket, agent_name="first") as first:
                await _hold_until_stopped(first, how)
        assert scope.cancelled_caught
    else:
        async with AsyncClient(daemon.socket, agent_name="first") as first:
            if how == "cancelled":
                with anyio.move_on_after(0.3) as scope:
                    await _hold_until_stopped(first, how)
                assert scope.cancelled_caught
            else:
                with pytest.raises(KeyboardInterrupt):
                    await _hold_until_stopped(first, how)
    with daemon.client() as c, daemon.client(agent_name="second") as second:
        # Released at once, not after the 300 s lease.
        assert wait_run_status(c, created.run.id, "queued", timeout=1).status == "queued"
        again = second.claim_next().claim
    assert again is not None and again.run.id == created.run.id
    assert again.run.attempt == 1  # a release keeps the attempt


async def test_claim_yields_none_when_nothing_is_claimable(daemon: ThreadDaemon) -> None:
    async with AsyncClient(daemon.socket, agent_name="idle", timeout=0.5) as agent:
        started = time.monotonic()
        # wait_ms lengthens the call's timeout, as in the sync client.
        async with agent.claim(wait_ms=800) as work:
            assert work is None
    assert time.monotonic() - started >= 0.8


async def test_a_lost_lease_makes_the_exit_raise(daemon: ThreadDaemon) -> None:
    noticed: errors.AghError | None = None
    with daemon.client() as c:
        created = c.tasks_create("taken away", start=True)
    async with AsyncClient(daemon.socket, agent_name="worker") as agent:
        with pytest.raises(errors.LeaseLost):
            async with agent.claim(lease_ms=1200) as work:
                assert work is not None
                await agent.tasks_cancel(created.task.id)
                with anyio.fail_after(5):
                    while work.lost is None:
                        await anyio.sleep(0.05)
                noticed = work.lost
    assert isinstance(noticed, errors.LeaseLost)


async def test_work_logs_asks_and_reads_messages(daemon: ThreadDaemon) -> None:
    with daemon.client() as c:
        created = c.tasks_create("chatty", start=True)
    assert created.run is not None
    async with AsyncClient(daemon.socket, agent_name="worker") as agent:
        async with agent.claim() as work:
            assert work is not None
            await work.log("halfway", level="warn", step=2)
            await work.ask("which branch?")
            await agent.tasks_send(created.task.id, "main")
            assert [m.message for m in await work.messages()] == ["main"]
        logs = (await agent.runs_logs(created.run.id)).logs
        run = (await agent.runs_get(created.run.id)).run.run
    assert [(line.level, line.message, line.step) for line in logs] == [("warn", "halfway", 2)]
    assert run.status == "completed"


async def test_a_claim_whose_caller_gave_up_is_released_not_left_held(
    daemon: ThreadDaemon,
) -> None:
    async with AsyncClient(daemon.socket, agent_name="impatient") as client:
        with anyio.move_on_after(0.3):
            await client.claim_next(wait_ms=5_000)  # still long-polling in aghd
        # Work arrives after the caller left: aghd's long poll claims it and
        # the late reply is given back at once.
        made = await client.tasks_create("late work", start=True)
        assert made.run is not None
        with anyio.fail_after(10):
            while True:
                events = (await client.tasks_timeline(made.task.id)).timeline
                released = [e for e in events if e.event_type == "run.released"]
                if released:
                    break
                await anyio.sleep(0.05)
        # It was claimed for the caller that left, then given back.
        assert [e.event_type for e in events][-2:] == ["run.claimed", "run.released"]
        run = (await client.runs_get(made.run.id)).run.run
        assert run.status == "queued"
        assert released and released[0].payload["reason"] == "claim abandoned by its caller"


async def test_the_claims_loop_makes_one_call_per_run_and_gives_back_what_it_claimed_ahead(
    daemon: ThreadDaemon,
) -> None:
    with daemon.client() as c:
        runs = [c.tasks_create(f"job {i}", start=True, input={"n": i}).run for i in range(4)]
    ids = [r.id for r in runs if r is not None]
    seen: list[int] = []
    async with AsyncClient(daemon.socket, agent_name="async-looper") as agent:
        async with contextlib.aclosing(agent.claims(wait_ms=1000)) as loop:
            async for block in loop:
                async with block as work:
                    work.result = {"n": work.input["n"]}
                    seen.append(work.input["n"])
                if len(seen) == 3:
                    break  # the third complete claimed job 3 ahead
        with daemon.client() as c:
            statuses = [c.runs_get(i).run.run.status for i in ids]
    assert seen == [0, 1, 2]
    assert statuses == ["completed", "completed", "completed", "queued"]
    assert chained_claims(daemon.config.db_path) == 3  # runs 1, 2 and 3 came with a finish


async def test_a_run_claimed_ahead_is_given_back_when_the_client_closes(
    daemon: ThreadDaemon,
) -> None:
    with daemon.client() as c:
        first = c.tasks_create("first", start=True).run
        second = c.tasks_create("second", start=True).run
    assert first is not None and second is not None
    async with AsyncClient(daemon.socket, agent_name="leaver") as agent:
        loop = agent.claims(wait_ms=1000)
        block = await loop.__anext__()
        async with block as work:
            assert work.run.id == first.id
        # The loop is left as it is, never closed: the client's exit releases.
    with daemon.client() as c:
        assert wait_run_status(c, second.id, "queued").attempt == 0
