"""The async client, on anyio: the sync ``agh.client.Client``'s methods,
awaitable, and safe to call from many tasks at once over one connection.

    from agh import AsyncClient

    async with AsyncClient(agent_name="coder-1") as client:
        task = await client.tasks_get("tsk_1")
        async with client.claim(wait_ms=30_000) as work:
            if work is not None:
                await work.log("starting")
                work.result = {"ok": True}

The RPC methods are not written here by hand: ``python -m agh._gen_async``
copies each one from ``agh.client.Client`` (the source text, docstring and
comments included), turning ``def`` into ``async def`` and putting ``await``
before ``self.call(...)``, between the two "generated" markers below. To add
or change an RPC, edit ``agh/client.py`` and run the generator;
``tests/test_aclient.py`` fails while this file is stale. Everything outside
the markers is this module's own: the connection, the reader task, events
and ``claim()``.

How it works: ``async with`` connects (with the same peer-uid check and the
same ``DaemonUnreachable`` causes as the sync client, from ``agh.transport``)
and starts a reader task that hands each reply to the call waiting for its id
and buffers ``stream.event`` notifications for ``next_event()``. A call
writes its line under a lock, so several tasks may call at once; replies come
back in whatever order aghd finishes them. As the sync client does, a send
that finds the connection closed by aghd (it closes idle ones) goes again on
a new connection, bound to the same session.

Owns: the async transport and async leased work. Must not: describe an RPC
(``agh.client`` does), or be imported by ``import agh`` (anyio is heavy).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from agh import protocol as p
from agh.errors import AghError, DaemonUnreachable, LeaseLost, ProtocolError
from agh.settings import client_socket_path
from agh.transport import (
    CONNECT_ERRORS,
    CONNECT_RETRY_S,
    check_daemon_uid,
    connect_error,
    connection_lost,
    hello_fields,
    long_poll_timeout,
    no_answer,
)
from agh.work import Held, beat_interval, pass_on_next

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

R = TypeVar("R")

_encoder = msgspec.json.Encoder()


class _NotSent(Exception):
    """The connection was closed before this request's line went out: aghd
    never saw it, so it is safe to send again on a new connection."""


class _Waiter:
    """One request waiting for its reply, or for its connection's end."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._reply: p.Reply | None = None
        self._error: AghError | None = None

    def resolve(self, reply: p.Reply) -> None:
        self._reply = reply
        self._done.set()

    def fail(self, error: AghError) -> None:
        self._error = error
        self._done.set()

    async def wait(self) -> p.Reply:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        return self._reply


class _Connection:
    """One socket to aghd and the requests waiting for a reply on it. Its
    reader (``AsyncClient._read``) is the only one that receives."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.waiters: dict[int, _Waiter] = {}
        # Claims whose caller gave up (cancelled, timed out) after sending:
        # a claim their late reply carries is released, not left held.
        self.abandoned_claims: set[int] = set()
        # Why the connection ended (a fresh error each time: one exception
        # object must not be raised in several tasks); None while it is open.
        self.lost: Callable[[], AghError] | None = None
        # Shielded: a cancellation around the client must not stop the reader
        # while a shielded call (claim()'s release) still waits for a reply.
        self.reader = anyio.CancelScope(shield=True)
        self._send_lock = anyio.Lock()

    async def send(self, line: bytes, path: str) -> None:
        """Write one whole request line. Raises _NotSent when the connection
        turned out to be closed before the line went out."""
        if self.lost is not None:
            raise _NotSent
        async with self._send_lock:
            # Shielded up to the call's deadline: a cancellation in the middle
            # of a line would leave half a request for aghd to misread.
            deadline = anyio.current_effective_deadline()
            with anyio.CancelScope(deadline=deadline, shield=True) as scope:
                try:
                    await self.stream.send(line)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    await self.close(
                        functools.partial(connection_lost, path, "the daemon closed the connection")
                    )
                    raise _NotSent from None
        if scope.cancelled_caught:
            # Out of time with the line perhaps half sent: nothing more can
            # go on this connection.
            await self.close(functools.partial(no_answer, path, None))
            await anyio.lowlevel.checkpoint()  # the expired deadline raises here
            raise no_answer(path, None)

    async def close(self, why: Callable[[], AghError]) -> None:
        """Mark the connection lost (so the next call opens a new one) and
        close the socket; the reader then ends and fails the waiters."""
        if self.lost is None:
            self.lost = why
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


# Calls whose reply may hand us a claim (see _Connection.abandoned_claims):
# a finish does when it was given ``next``.
_CLAIMING_METHODS = frozenset(
    {"agent.claim_next", "runs.claim", "agent.complete", "agent.fail", "agent.release"}
)


def _claimed(reply: p.Reply) -> tuple[str, str] | None:
    """(run id, token) of the claim a claim_next, runs.claim or finish (its
    ``next``) reply holds."""
    if isinstance(reply.result, msgspec.UnsetType):
        return None
    try:
        result = msgspec.json.decode(reply.result)
    except msgspec.DecodeError:
        return None
    held = result.get("claim", result.get("next", result)) if isinstance(result, dict) else None
    if not isinstance(held, dict) or not isinstance(held.get("run"), dict):
        return None
    run_id, token = held["run"].get("id"), held.get("claim_token")
    return (run_id, token) if isinstance(run_id, str) and isinstance(token, str) else None


class AsyncClient:
    """One connection to aghd, shared by every task that calls on it.

    Use it as ``async with AsyncClient(...) as client:`` (the reader task
    lives in that block); a call outside the block raises RuntimeError.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout: float | None = 60.0,
        agent_name: str | None = None,
        session_id: str | None = None,
        channel: str | None = None,
        workspace: str | None = None,
        origin_kind: str | None = None,
    ) -> None:
        """Nothing is sent until ``async with``: it connects and, if
        ``agent_name``, ``session_id`` or ``origin_kind`` is given, sends
        ``session.hello`` first; it raises DaemonUnreachable."""
        self.socket_path = socket_path or client_socket_path()
        self.timeout = timeout
        self._ids = itertools.count(1)
        # stream.event params not yet taken by next_event(), oldest first.
        self.notifications: list[Any] = []
        self.session: p.Session | None = None
        # Kept to bind a new connection to the same session after aghd
        # closed this one for being idle (set by hello()).
        self._hello: dict[str, Any] | None = None
        self._first_hello = hello_fields(
            agent_name=agent_name,
            session_id=session_id,
            channel=channel,
            workspace=workspace,
            origin_kind=origin_kind,
        )
        self._tg: anyio.abc.TaskGroup | None = None
        # Per claims() loop: the runs its finishes claimed, not yet worked on.
        self._ahead: list[list[p.Claim]] = []
        self._conn: _Connection | None = None
        self._connecting = anyio.Lock()
        self._arrived = anyio.Event()

    async def __aenter__(self) -> AsyncClient:
        if self._tg is not None:
            raise RuntimeError("this AsyncClient is already open")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            self._conn = await self._open()
            if self._first_hello is not None:
                await self.hello(**self._first_hello)
        except BaseException:
            await self._shut()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._shut()

    async def _shut(self) -> None:
        if self._conn is not None and self._conn.lost is None:
            await self._release_ahead()  # a claims() loop left unfinished
        tg, self._tg = self._tg, None
        conn, self._conn = self._conn, None
        if tg is None:
            return
        if conn is not None:
            conn.reader.cancel()
        tg.cancel_scope.cancel()  # heartbeats of claim() blocks left open
        # The task group holds only our own tasks: the caller's exception,
        # if any, goes on by itself rather than wrapped in an ExceptionGroup.
        await tg.__aexit__(None, None, None)

    # -- transport ------------------------------------------------------------

    async def call(
        self, method: str, params: Any, result_type: type[R], *, timeout: float | None = None
    ) -> R:
        """Send one request and wait for its reply; raise its error if any.
        Tasks may call concurrently; each waits for its own reply only."""
        payload = params if isinstance(params, msgspec.Raw) else params or {}
        wait = timeout if timeout is not None else self.timeout
        try:
            with anyio.fail_after(wait):
                try:
                    reply = await self._exchange(await self._connection(), method, payload)
                except _NotSent:
                    # aghd closed the connection (idle) before our line went
                    # out: it never ran the request, so send it again.
                    reply = await self._exchange_or_lost(await self._connection(), method, payload)
        except TimeoutError:
            raise no_answer(self.socket_path, wait) from None
        return _decode(reply, result_type)

    async def _exchange(self, conn: _Connection, method: str, payload: Any) -> p.Reply:
        rid = next(self._ids)
        line = _encoder.encode({"jsonrpc": "2.0", "id": rid, "method": method, "params": payload})
        waiter = _Waiter()
        conn.waiters[rid] = waiter  # before sending: the reply may be quick
        sent = False
        try:
            await conn.send(line + b"\n", self.socket_path)
            sent = True
            return await waiter.wait()
        except BaseException:
            if sent and method in _CLAIMING_METHODS:
                conn.abandoned_claims.add(rid)
            raise
        finally:
            conn.waiters.pop(rid, None)

    async def _exchange_or_lost(self, conn: _Connection, method: str, payload: Any) -> p.Reply:
        try:
            return await self._exchange(conn, method, payload)
        except _NotSent:
            raise connection_lost(self.socket_path, "the daemon closed the connection") from None

    async def _connection(self) -> _Connection:
        """The open connection, or a new one bound to our session."""
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._tg is None:
            raise RuntimeError("use the client inside `async with AsyncClient(...) as client:`")
        async with self._connecting:
            if self._conn is None or self._conn.lost is not None:
                conn = await self._open()
                try:
                    if self._hello is not None:
                        # Before anyone else may send on it, as the same session.
                        hello = p.HelloParams(**self._hello)
                        reply = await self._exchange_or_lost(conn, "session.hello", hello)
                        self.session = _decode(reply, p.HelloResult).session
                except BaseException:
                    await conn.close(_closed)
                    raise
                self._conn = conn
            return self._conn

    async def _open(self) -> _Connection:
        assert self._tg is not None
        # A Unix connect() either succeeds at once or, while aghd's accept
        # backlog is full, is retried (by anyio) for this long.
        limit = CONNECT_RETRY_S if self.timeout is None else min(self.timeout, CONNECT_RETRY_S)
        try:
            with anyio.fail_after(limit):
                stream = await anyio.connect_unix(self.socket_path)
        except CONNECT_ERRORS as exc:
            raise connect_error(self.socket_path, exc, self.timeout) from None
        try:
            check_daemon_uid(stream.extra(anyio.abc.SocketAttribute.raw_socket), self.socket_path)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        conn = _Connection(stream)
        self._tg.start_soon(self._read, conn)
        return conn

    async def _read(self, conn: _Connection) -> None:
        """Hand each reply to its waiter and buffer notifications until the
        connection ends; then fail whoever still waits on it."""
        path = self.socket_path
        lost: Callable[[], AghError] = _closed
        buffer = bytearray()
        with conn.reader:
            try:
                while True:
                    buffer += await conn.stream.receive(65536)
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        self._dispatch(conn, p.reply_decoder.decode(line))
            except anyio.EndOfStream:
                lost = functools.partial(connection_lost, path, "the daemon closed the connection")
            except (anyio.BrokenResourceError, OSError) as exc:
                reason = f"connection lost: {exc.__cause__ or exc}"
                lost = functools.partial(connection_lost, path, reason)
            except anyio.ClosedResourceError:
                pass  # closed by us, who said why in conn.lost
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                lost = functools.partial(ProtocolError, f"daemon sent an invalid reply: {exc}")
        if conn.lost is None:
            conn.lost = lost
        for waiter in conn.waiters.values():
            waiter.fail(conn.lost())
        self._notify()  # next_event() must not wait on a dead connection
        with anyio.CancelScope(shield=True):
            await conn.stream.aclose()

    def _dispatch(self, conn: _Connection, reply: p.Reply) -> None:
        if reply.method is not msgspec.UNSET:
            if reply.method == "stream.event":
                self.notifications.append(reply.params)
                self._notify()
            return
        waiter = conn.waiters.get(reply.id) if isinstance(reply.id, int) else None
        if waiter is not None:
            waiter.resolve(reply)
        elif reply.id in conn.abandoned_claims:
            conn.abandoned_claims.discard(reply.id)
            held = _claimed(reply)
            if held is not None and self._tg is not None:
                self._tg.start_soon(self._release_abandoned, *held)

    async def _release_abandoned(self, run_id: str, token: str) -> None:
        """Give back a run claimed for a caller that stopped waiting."""
        with anyio.CancelScope(shield=True), contextlib.suppress(AghError):
            await self.release(run_id, token, reason="claim abandoned by its caller")

    def _notify(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()

    # -- generated from agh/client.py by `python -m agh._gen_async`: do not edit --

    # -- sessions and server ----------------------------------------------------

    async def hello(self, **fields: Any) -> p.HelloResult:
        result = await self.call("session.hello", p.HelloParams(**fields), p.HelloResult)
        # Kept to bind a new connection to the same session after aghd
        # closed this one for being idle.
        self._hello = {**fields, "session_id": result.session.session_id}
        self.session = result.session
        return result

    async def sessions_list(self, **fields: Any) -> p.SessionsListResult:
        return await self.call(
            "sessions.list", p.SessionsListParams(**fields), p.SessionsListResult
        )

    async def server_info(self) -> p.ServerInfoResult:
        return await self.call("server.info", p.EmptyParams(), p.ServerInfoResult)

    async def server_backup(self, path: str, *, force: bool = False) -> p.ServerBackupResult:
        """Have aghd copy its database to ``path`` (absolute, as aghd sees
        it), online; ``force`` replaces an existing file. Waits up to an
        hour (or the client's longer timeout): a copy of a big hub takes
        longer than the usual reply."""
        timeout = None if self.timeout is None else max(self.timeout, 3600.0)
        return await self.call(
            "server.backup",
            p.ServerBackupParams(path=path, force=force),
            p.ServerBackupResult,
            timeout=timeout,
        )

    async def server_config(self) -> p.ServerConfigResult:
        """The daemon's effective settings and where each came from."""
        return await self.call("server.config", p.EmptyParams(), p.ServerConfigResult)

    # -- tasks --------------------------------------------------------------------

    async def tasks_create(self, title: str, **fields: Any) -> p.TaskRunResult:
        return await self.call(
            "tasks.create", p.TasksCreateParams(title=title, **fields), p.TaskRunResult
        )

    async def tasks_get(self, id: str) -> p.TaskDetailResult:
        return await self.call("tasks.get", p.IdParams(id=id), p.TaskDetailResult)

    async def tasks_list(self, **filters: Any) -> p.TasksListResult:
        return await self.call("tasks.list", p.TasksListParams(**filters), p.TasksListResult)

    async def tasks_update(self, id: str, **changes: Any) -> p.TaskResult:
        return await self.call("tasks.update", p.TasksUpdateParams(id=id, **changes), p.TaskResult)

    async def tasks_delete(self, id: str) -> p.EmptyResult:
        return await self.call("tasks.delete", p.IdParams(id=id), p.EmptyResult)

    async def tasks_start(self, id: str, **fields: Any) -> p.TaskRunResult:
        return await self.call("tasks.start", p.TasksStartParams(id=id, **fields), p.TaskRunResult)

    async def tasks_publish(self, id: str) -> p.TaskRunResult:
        return await self.call("tasks.publish", p.IdParams(id=id), p.TaskRunResult)

    async def tasks_runs_enqueue(self, id: str, **fields: Any) -> p.TaskRunResult:
        return await self.call(
            "tasks.runs.enqueue", p.TasksStartParams(id=id, **fields), p.TaskRunResult
        )

    async def tasks_runs_list(self, id: str, **filters: Any) -> p.RunsListResult:
        return await self.call(
            "tasks.runs.list", p.TasksRunsListParams(id=id, **filters), p.RunsListResult
        )

    # -- task graph -------------------------------------------------------------------

    async def tasks_children_create(self, id: str, title: str, **fields: Any) -> p.TaskRunResult:
        params = p.TasksChildrenCreateParams(id=id, title=title, **fields)
        return await self.call("tasks.children.create", params, p.TaskRunResult)

    async def tasks_approve(self, id: str, comment: str | None = None) -> p.TaskRunResult:
        params = p.TasksApproveParams(id=id, comment=comment)
        return await self.call("tasks.approve", params, p.TaskRunResult)

    async def tasks_reject(self, id: str, reason: str | None = None) -> p.TaskResult:
        return await self.call(
            "tasks.reject", p.TasksRejectParams(id=id, reason=reason), p.TaskResult
        )

    async def tasks_cancel(self, id: str, reason: str | None = None) -> p.TaskResult:
        return await self.call(
            "tasks.cancel", p.TasksCancelParams(id=id, reason=reason), p.TaskResult
        )

    async def tasks_dependencies_add(self, id: str, depends_on_task_id: str) -> p.TaskDetailResult:
        params = p.DependencyAddParams(id=id, depends_on_task_id=depends_on_task_id)
        return await self.call("tasks.dependencies.add", params, p.TaskDetailResult)

    async def tasks_dependencies_remove(self, id: str, depends_on_id: str) -> p.TaskDetailResult:
        params = p.DependencyRemoveParams(id=id, depends_on_id=depends_on_id)
        return await self.call("tasks.dependencies.remove", params, p.TaskDetailResult)

    async def tasks_tree(self, id: str) -> p.TaskTreeResult:
        return await self.call("tasks.tree", p.IdParams(id=id), p.TaskTreeResult)

    async def workflows_compose(self, yaml: str, **fields: Any) -> p.ComposeResult:
        params = p.WorkflowsComposeParams(yaml=yaml, **fields)
        return await self.call("workflows.compose", params, p.ComposeResult)

    # -- timeline, streams, logs, messages ------------------------------------------

    async def tasks_timeline(self, id: str, **fields: Any) -> p.TimelineResult:
        return await self.call(
            "tasks.timeline", p.TimelineParams(id=id, **fields), p.TimelineResult
        )

    async def tasks_stream(self, id: str, after_sequence: int | None = None) -> p.SubscribeResult:
        params = p.TaskStreamParams(id=id, after_sequence=after_sequence)
        return await self.call("tasks.stream", params, p.SubscribeResult)

    async def events_subscribe(self, **filters: Any) -> p.SubscribeResult:
        params = p.EventsSubscribeParams(**filters)
        return await self.call("events.subscribe", params, p.SubscribeResult)

    async def subscriptions_cancel(self, subscription: str) -> p.EmptyResult:
        params = p.SubscriptionCancelParams(subscription=subscription)
        return await self.call("subscriptions.cancel", params, p.EmptyResult)

    async def agent_log(self, run_id: str, claim_token: str, lines: list[Any]) -> p.AgentLogResult:
        params = msgspec.convert(
            {"run_id": run_id, "claim_token": claim_token, "lines": lines}, p.AgentLogParams
        )
        return await self.call("agent.log", params, p.AgentLogResult)

    async def runs_logs(self, id: str, **filters: Any) -> p.RunsLogsResult:
        return await self.call("runs.logs", p.RunsLogsParams(id=id, **filters), p.RunsLogsResult)

    async def tasks_send(self, id: str, message: str) -> p.MessageResult:
        return await self.call(
            "tasks.send", p.TasksSendParams(id=id, message=message), p.MessageResult
        )

    async def agent_send(
        self, run_id: str, claim_token: str, message: str, kind: str = "status"
    ) -> p.MessageResult:
        params = p.AgentSendParams(
            run_id=run_id,
            claim_token=claim_token,
            message=message,
            kind=kind,  # type: ignore[arg-type]
        )
        return await self.call("agent.send", params, p.MessageResult)

    async def agent_messages(
        self, run_id: str, claim_token: str, after: int = 0
    ) -> p.MessagesResult:
        params = p.AgentMessagesParams(run_id=run_id, claim_token=claim_token, after=after)
        return await self.call("agent.messages", params, p.MessagesResult)

    # -- runs (operator) ------------------------------------------------------------

    async def runs_get(self, id: str) -> p.RunDetailResult:
        return await self.call("runs.get", p.IdParams(id=id), p.RunDetailResult)

    async def runs_claim(self, id: str, **fields: Any) -> p.RunClaimResult:
        return await self.call("runs.claim", p.RunsClaimParams(id=id, **fields), p.RunClaimResult)

    async def runs_start(self, id: str, **fields: Any) -> p.RunResult:
        return await self.call("runs.start", p.RunsStartParams(id=id, **fields), p.RunResult)

    async def runs_attach_session(self, id: str, session_id: str) -> p.RunResult:
        params = p.RunsAttachSessionParams(id=id, session_id=session_id)
        return await self.call("runs.attach_session", params, p.RunResult)

    async def runs_complete(self, id: str, result: Any = None) -> p.RunResult:
        return await self.call(
            "runs.complete", p.RunsCompleteParams(id=id, result=result), p.RunResult
        )

    async def runs_fail(self, id: str, error: str | None = None) -> p.RunResult:
        return await self.call("runs.fail", p.RunsFailParams(id=id, error=error), p.RunResult)

    async def runs_cancel(self, id: str, reason: str | None = None) -> p.RunResult:
        return await self.call("runs.cancel", p.RunsCancelParams(id=id, reason=reason), p.RunResult)

    # -- agent ------------------------------------------------------------------------

    async def claim_next(self, **fields: Any) -> p.ClaimNextResult:
        params = p.ClaimNextParams(**fields)
        timeout = long_poll_timeout(self.timeout, params.wait_ms)
        return await self.call("agent.claim_next", params, p.ClaimNextResult, timeout=timeout)

    async def heartbeat(
        self, run_id: str, claim_token: str, lease_ms: int | None = None
    ) -> p.LeaseResult:
        params = p.HeartbeatParams(run_id=run_id, claim_token=claim_token, lease_ms=lease_ms)
        return await self.call("agent.heartbeat", params, p.LeaseResult)

    async def complete(
        self,
        run_id: str,
        claim_token: str,
        result: Any = None,
        *,
        next: p.NextClaimParams | None = None,
    ) -> p.FinishResult:
        """Complete the run; with ``next``, claim the next one in the same
        call (``result.next``: the claim, or None)."""
        params = p.AgentCompleteParams(
            run_id=run_id, claim_token=claim_token, result=result, next=next
        )
        timeout = long_poll_timeout(self.timeout, next.wait_ms if next else 0)
        return await self.call("agent.complete", params, p.FinishResult, timeout=timeout)

    async def fail(
        self,
        run_id: str,
        claim_token: str,
        error: str,
        retry: bool = True,
        *,
        next: p.NextClaimParams | None = None,
    ) -> p.FinishResult:
        params = p.AgentFailParams(
            run_id=run_id, claim_token=claim_token, error=error, retry=retry, next=next
        )
        timeout = long_poll_timeout(self.timeout, next.wait_ms if next else 0)
        return await self.call("agent.fail", params, p.FinishResult, timeout=timeout)

    async def release(
        self,
        run_id: str,
        claim_token: str,
        reason: str | None = None,
        *,
        next: p.NextClaimParams | None = None,
    ) -> p.FinishResult:
        params = p.AgentReleaseParams(
            run_id=run_id, claim_token=claim_token, reason=reason, next=next
        )
        timeout = long_poll_timeout(self.timeout, next.wait_ms if next else 0)
        return await self.call("agent.release", params, p.FinishResult, timeout=timeout)

    # -- observability: dashboard, inbox, triage --------------------------------------

    async def observe_dashboard(self, **filters: Any) -> p.DashboardResult:
        return await self.call("observe.dashboard", p.DashboardParams(**filters), p.DashboardResult)

    async def observe_inbox(self, **filters: Any) -> p.InboxResult:
        return await self.call("observe.inbox", p.InboxParams(**filters), p.InboxResult)

    async def tasks_triage(self, action: str, id: str) -> p.TriageResult:
        """``tasks.triage.<action>`` (read, dismiss, archive or unarchive) on a
        task, for the calling actor."""
        return await self.call(f"tasks.triage.{action}", p.IdParams(id=id), p.TriageResult)

    # -- end of generated methods --

    # -- events and leased work (async by nature, so written here) -----------------

    async def next_event(self, timeout: float | None = None) -> p.StreamEvent:
        """The next ``stream.event`` notification (buffered ones first).

        Raises TimeoutError when none arrives within ``timeout`` seconds, the
        daemon's error (an ``AghError``) when a subscription ended on one, and
        DaemonUnreachable when the connection (and its subscriptions) ended.
        """
        with anyio.fail_after(timeout):
            while not self.notifications:
                conn = self._conn
                if conn is None:
                    raise RuntimeError(
                        "use the client inside `async with AsyncClient(...) as client:`"
                    )
                if conn.lost is not None:
                    raise conn.lost()
                await self._arrived.wait()
        event = msgspec.convert(self.notifications.pop(0), p.StreamEvent)
        if event.type == "error":
            raise AghError.from_wire(event.error)
        return event

    @contextlib.asynccontextmanager
    async def claim(
        self,
        *,
        channel: str | None = None,
        workspace: str | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
        **filters: Any,
    ) -> AsyncIterator[AsyncWork | None]:
        """Claim the next run and hold it for an ``async with`` block; yield
        None when nothing was claimable within ``wait_ms``.

        The rules are ``agh.work``'s: a task heartbeats meanwhile; a normal
        exit completes the run with ``work.result``; an exception fails it
        with the exception's text and goes on. KeyboardInterrupt, SystemExit
        and cancellation (an enclosing timeout or cancel scope; Ctrl-C, which
        under asyncio cancels the main task) release the run, so another
        agent may take it at once; that release is shielded from the
        cancellation. A lost lease sets ``work.lost`` and the exit raises
        LeaseLost. The heartbeat runs on the event loop: blocking it (CPU
        work, ``time.sleep``) starves the lease, so hand such work to
        ``anyio.to_thread.run_sync``.

        Raises what ``agent.claim_next`` raises (e.g. Conflict when the
        session already holds its limit of claims).
        """
        got = (
            await self.claim_next(
                network_channel=channel,
                workspace=workspace,
                lease_ms=lease_ms,
                wait_ms=wait_ms or 0,
                **filters,
            )
        ).claim
        if got is None:
            yield None
            return
        async with self._hold(got, lease_ms) as work:
            yield work

    async def claims(
        self,
        *,
        channel: str | None = None,
        workspace: str | None = None,
        lease_ms: int | None = None,
        wait_ms: int = 30_000,
        **filters: Any,
    ) -> AsyncGenerator[contextlib.AbstractAsyncContextManager[AsyncWork], None]:
        """Run after run for an ``async for`` loop, each item an ``async
        with`` block that holds its run as ``claim()``'s does; each finish
        claims the next run in the same call (one round trip per cycle).
        Never yields None: an empty queue is long-polled ``wait_ms`` at a
        time. A run claimed ahead but not worked on is released when the
        loop ends: at once under ``contextlib.aclosing(client.claims())``,
        else when the generator is collected or the client closes.
        """
        fields: dict[str, Any] = {
            "network_channel": channel,
            "workspace": workspace,
            "lease_ms": lease_ms,
            **filters,
        }
        chained = p.NextClaimParams(**fields)  # no wait: see agh.work.claims
        ahead: list[p.Claim] = []
        self._ahead.append(ahead)
        try:
            while True:
                got = (
                    ahead.pop()
                    if ahead
                    else (await self.claim_next(wait_ms=wait_ms, **fields)).claim
                )
                if got is None:
                    continue
                block = _Block(self._hold(got, lease_ms, chained, ahead.append))
                yield block
                if not block.entered:
                    await self._give_back(got, "the claim loop skipped it")
        finally:
            self._ahead.remove(ahead)
            await self._release_ahead([ahead])

    async def _release_ahead(self, loops: list[list[p.Claim]] | None = None) -> None:
        """Give back what ``claims()`` loops (by default: all still open)
        claimed ahead and never worked on."""
        for ahead in self._ahead if loops is None else loops:
            while ahead:
                await self._give_back(ahead.pop(), "the claim loop ended")

    async def _give_back(self, got: p.Claim, reason: str) -> None:
        with anyio.CancelScope(shield=True), contextlib.suppress(AghError):
            await self.release(got.run.id, got.claim_token, reason)

    @contextlib.asynccontextmanager
    async def _hold(
        self,
        got: p.Claim,
        lease_ms: int | None,
        chained: p.NextClaimParams | None = None,
        handoff: Callable[[p.Claim], None] | None = None,
    ) -> AsyncIterator[AsyncWork]:
        """Hold ``got`` for the block (the rules of ``claim()``); with
        ``chained``, a complete or fail also claims the next run and hands
        it to ``handoff``."""
        assert self._tg is not None  # a claim came back, so we are open
        work = AsyncWork(self, got)
        beat = _Heartbeat(work, lease_ms)
        self._tg.start_soon(beat.run)
        try:
            yield work
        except (KeyboardInterrupt, SystemExit, anyio.get_cancelled_exc_class()):
            await beat.stop()
            await self._give_back(got, "interrupted")
            raise
        except BaseException as exc:
            await beat.stop()
            _raise_if_lost(work)
            error = f"{type(exc).__name__}: {exc}"
            pass_on_next(
                await self.fail(work.run.id, work.claim_token, error, next=chained), handoff
            )
            raise
        await beat.stop()
        _raise_if_lost(work)
        done = await self.complete(work.run.id, work.claim_token, work.result, next=chained)
        pass_on_next(done, handoff)


class _Block:
    """One item of ``AsyncClient.claims()``: its block, entered at most once."""

    def __init__(self, cm: contextlib.AbstractAsyncContextManager[AsyncWork]) -> None:
        self.entered = False
        self._cm = cm

    async def __aenter__(self) -> AsyncWork:
        if self.entered:
            raise RuntimeError("a claims() item is one async with block; it was entered already")
        self.entered = True
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc)


def _closed() -> AghError:
    return DaemonUnreachable(
        "the AsyncClient was closed (its `async with` block ended) while this call "
        "waited for aghd's reply",
        {"cause": "closed"},
    )


def _decode(reply: p.Reply, result_type: type[R]) -> R:
    """A reply's result as ``result_type``, or the error it carries, raised."""
    if reply.error is not msgspec.UNSET:
        raise AghError.from_wire(reply.error)
    if isinstance(reply.result, msgspec.UnsetType):
        raise ProtocolError("daemon reply has neither result nor error")
    return msgspec.json.decode(reply.result, type=result_type)


class AsyncWork(Held["AsyncClient"]):
    """A claimed run while the ``async with client.claim()`` block holds it:
    ``agh.work.Work`` with awaitable methods."""

    async def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """Append a line to the run's log (``agent.log``)."""
        line = {"level": level, "message": message, **fields}
        await self.client.agent_log(self.run.id, self.claim_token, [line])

    async def ask(self, question: str) -> p.Message:
        """Ask the task's people a question (the task shows "awaiting input";
        the answer arrives in ``messages()``)."""
        sent = await self.client.agent_send(self.run.id, self.claim_token, question, "question")
        return sent.message

    async def messages(self, after: int = 0) -> list[p.Message]:
        """Input sent to this run with ``tasks.send`` (``agh send``)."""
        got = await self.client.agent_messages(self.run.id, self.claim_token, after=after)
        return got.messages


class _Heartbeat:
    """Extends the lease, on the client's own connection (calls may overlap),
    until stopped or the lease is lost."""

    def __init__(self, work: AsyncWork, lease_ms: int | None) -> None:
        self.work = work
        self.lease_ms = lease_ms
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()
        self._until: str | None = work.claim.lease.lease_until

    async def run(self) -> None:
        work = self.work
        try:
            with self._scope:
                while True:
                    await anyio.sleep(beat_interval(self._until))
                    try:
                        beat = await work.client.heartbeat(
                            work.run.id, work.claim_token, self.lease_ms
                        )
                        self._until = beat.lease.lease_until
                    except LeaseLost as exc:
                        work.lost = exc
                        return
                    except DaemonUnreachable:
                        # The daemon may be restarting: the next call
                        # reconnects; try again soon while the lease lasts.
                        self._until = None
                    except AghError as exc:  # forbidden, not found: nothing to keep alive
                        work.lost = exc
                        return
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop beating and wait until no heartbeat is in flight, so none is
        sent after the run is finished."""
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._stopped.wait()


def _raise_if_lost(work: AsyncWork) -> None:
    if work.lost is not None:
        raise work.lost
