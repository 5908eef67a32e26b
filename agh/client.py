"""A small synchronous client: stdlib socket + msgspec, one typed method per RPC.

Errors the daemon sends come back as the same ``agh.errors`` classes it
raised; a missing, unreachable or unresponsive daemon is
``DaemonUnreachable`` with a message naming the cause and the next step.

    from agh.client import Client
    with Client(agent_name="coder-1") as c:
        claim = c.claim_next(wait_ms=30_000).claim
        if claim:
            c.complete(claim.run.id, claim.claim_token, result={"ok": True})
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from agh import protocol as p
from agh.errors import AghError, ProtocolError
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

if TYPE_CHECKING:
    from collections.abc import Generator

    from agh.work import Work

R = TypeVar("R")


_encoder = msgspec.json.Encoder()


class Client:
    """One connection to aghd. Not thread-safe: use one per thread."""

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
        """Connect; if ``agent_name``, ``session_id`` or ``origin_kind`` is
        given, send ``session.hello`` first. Raises DaemonUnreachable."""
        self.socket_path = socket_path or client_socket_path()
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._buffer = b""
        self.notifications: list[Any] = []
        self.session: p.Session | None = None
        self._sock = self._connect()
        self._hello: dict[str, Any] | None = None
        fields = hello_fields(
            agent_name=agent_name,
            session_id=session_id,
            channel=channel,
            workspace=workspace,
            origin_kind=origin_kind,
        )
        if fields is not None:
            try:
                self.session = self.hello(**fields).session
            except BaseException:
                self._sock.close()
                raise

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            self._connect_retrying(sock)
            check_daemon_uid(sock, self.socket_path)
        except CONNECT_ERRORS as exc:
            sock.close()
            raise connect_error(self.socket_path, exc, self.timeout) from None
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_retrying(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + CONNECT_RETRY_S
        while True:
            try:
                sock.connect(self.socket_path)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self._sock.close()

    def shutdown_write(self) -> None:
        """From another thread, end a call that is waiting (a long poll):
        aghd then answers what it was asked at once and closes, and that
        reply still arrives (a claim it may just have made included, so no
        run is left claimed unseen). The client is done afterwards."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------

    def call(
        self, method: str, params: Any, result_type: type[R], *, timeout: float | None = None
    ) -> R:
        """Send one request and wait for its reply; raise its error if any."""
        rid = next(self._ids)
        payload = params if isinstance(params, msgspec.Raw) else params or {}
        data = _encoder.encode({"jsonrpc": "2.0", "id": rid, "method": method, "params": payload})
        wait = timeout if timeout is not None else self.timeout
        self._sock.settimeout(wait)
        try:
            self._send(data + b"\n", wait)
            while True:
                reply = p.reply_decoder.decode(self._read_line())
                if reply.method is not msgspec.UNSET:
                    self.notifications.append(reply.params)
                    continue
                if reply.id != rid:
                    continue  # a stale reply to an earlier, abandoned request
                break
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise connection_lost(self.socket_path, f"connection lost: {exc}") from None
        except TimeoutError:
            raise no_answer(self.socket_path, wait) from None
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"daemon sent an invalid reply: {exc}") from None
        finally:
            self._sock.settimeout(self.timeout)
        if reply.error is not msgspec.UNSET:
            raise AghError.from_wire(reply.error)
        if isinstance(reply.result, msgspec.UnsetType):
            raise ProtocolError("daemon reply has neither result nor error")
        return msgspec.json.decode(reply.result, type=result_type)

    def _read_line(self) -> bytes:
        while True:
            idx = self._buffer.find(b"\n")
            if idx >= 0:
                line, self._buffer = self._buffer[:idx], self._buffer[idx + 1 :]
                return line
            chunk = self._sock.recv(65536)
            if not chunk:
                raise connection_lost(self.socket_path, "the daemon closed the connection")
            self._buffer += chunk

    # -- sessions and server ----------------------------------------------------

    def hello(self, **fields: Any) -> p.HelloResult:
        result = self.call("session.hello", p.HelloParams(**fields), p.HelloResult)
        # Kept to bind a new connection to the same session after aghd
        # closed this one for being idle.
        self._hello = {**fields, "session_id": result.session.session_id}
        self.session = result.session
        return result

    def _send(self, data: bytes, wait: float | None) -> None:
        """Send one request line. aghd closes connections idle past its
        timeout; a send that finds ours closed is sent again on a new
        connection (as the same session). That is safe: a send that fails
        never delivered its newline, so aghd never ran the request."""
        try:
            self._sock.sendall(data)
            return
        except (BrokenPipeError, ConnectionResetError):
            if self._buffer:
                raise  # replies were still coming: a real loss, not an idle close
        self._sock.close()
        self._sock = self._connect()
        if self._hello is not None:
            self.hello(**self._hello)
        self._sock.settimeout(wait)
        self._sock.sendall(data)

    def sessions_list(self, **fields: Any) -> p.SessionsListResult:
        return self.call("sessions.list", p.SessionsListParams(**fields), p.SessionsListResult)

    def server_info(self) -> p.ServerInfoResult:
        return self.call("server.info", p.EmptyParams(), p.ServerInfoResult)

    def server_backup(self, path: str, *, force: bool = False) -> p.ServerBackupResult:
        """Have aghd copy its database to ``path`` (absolute, as aghd sees
        it), online; ``force`` replaces an existing file. Waits up to an
        hour (or the client's longer timeout): a copy of a big hub takes
        longer than the usual reply."""
        timeout = None if self.timeout is None else max(self.timeout, 3600.0)
        return self.call(
            "server.backup",
            p.ServerBackupParams(path=path, force=force),
            p.ServerBackupResult,
            timeout=timeout,
        )

    def server_config(self) -> p.ServerConfigResult:
        """The daemon's effective settings and where each came from."""
        return self.call("server.config", p.EmptyParams(), p.ServerConfigResult)

    # -- tasks --------------------------------------------------------------------

    def tasks_create(self, title: str, **fields: Any) -> p.TaskRunResult:
        return self.call(
            "tasks.create", p.TasksCreateParams(title=title, **fields), p.TaskRunResult
        )

    def tasks_get(self, id: str) -> p.TaskDetailResult:
        return self.call("tasks.get", p.IdParams(id=id), p.TaskDetailResult)

    def tasks_list(self, **filters: Any) -> p.TasksListResult:
        return self.call("tasks.list", p.TasksListParams(**filters), p.TasksListResult)

    def tasks_update(self, id: str, **changes: Any) -> p.TaskResult:
        return self.call("tasks.update", p.TasksUpdateParams(id=id, **changes), p.TaskResult)

    def tasks_delete(self, id: str) -> p.EmptyResult:
        return self.call("tasks.delete", p.IdParams(id=id), p.EmptyResult)

    def tasks_start(self, id: str, **fields: Any) -> p.TaskRunResult:
        return self.call("tasks.start", p.TasksStartParams(id=id, **fields), p.TaskRunResult)

    def tasks_publish(self, id: str) -> p.TaskRunResult:
        return self.call("tasks.publish", p.IdParams(id=id), p.TaskRunResult)

    def tasks_runs_enqueue(self, id: str, **fields: Any) -> p.TaskRunResult:
        return self.call("tasks.runs.enqueue", p.TasksStartParams(id=id, **fields), p.TaskRunResult)

    def tasks_runs_list(self, id: str, **filters: Any) -> p.RunsListResult:
        return self.call(
            "tasks.runs.list", p.TasksRunsListParams(id=id, **filters), p.RunsListResult
        )

    # -- task graph -------------------------------------------------------------------

    def tasks_children_create(self, id: str, title: str, **fields: Any) -> p.TaskRunResult:
        params = p.TasksChildrenCreateParams(id=id, title=title, **fields)
        return self.call("tasks.children.create", params, p.TaskRunResult)

    def tasks_approve(self, id: str, comment: str | None = None) -> p.TaskRunResult:
        params = p.TasksApproveParams(id=id, comment=comment)
        return self.call("tasks.approve", params, p.TaskRunResult)

    def tasks_reject(self, id: str, reason: str | None = None) -> p.TaskResult:
        return self.call("tasks.reject", p.TasksRejectParams(id=id, reason=reason), p.TaskResult)

    def tasks_cancel(self, id: str, reason: str | None = None) -> p.TaskResult:
        return self.call("tasks.cancel", p.TasksCancelParams(id=id, reason=reason), p.TaskResult)

    def tasks_dependencies_add(self, id: str, depends_on_task_id: str) -> p.TaskDetailResult:
        params = p.DependencyAddParams(id=id, depends_on_task_id=depends_on_task_id)
        return self.call("tasks.dependencies.add", params, p.TaskDetailResult)

    def tasks_dependencies_remove(self, id: str, depends_on_id: str) -> p.TaskDetailResult:
        params = p.DependencyRemoveParams(id=id, depends_on_id=depends_on_id)
        return self.call("tasks.dependencies.remove", params, p.TaskDetailResult)

    def tasks_tree(self, id: str) -> p.TaskTreeResult:
        return self.call("tasks.tree", p.IdParams(id=id), p.TaskTreeResult)

    def workflows_compose(self, yaml: str, **fields: Any) -> p.ComposeResult:
        params = p.WorkflowsComposeParams(yaml=yaml, **fields)
        return self.call("workflows.compose", params, p.ComposeResult)

    # -- timeline, streams, logs, messages ------------------------------------------

    def tasks_timeline(self, id: str, **fields: Any) -> p.TimelineResult:
        return self.call("tasks.timeline", p.TimelineParams(id=id, **fields), p.TimelineResult)

    def tasks_stream(self, id: str, after_sequence: int | None = None) -> p.SubscribeResult:
        params = p.TaskStreamParams(id=id, after_sequence=after_sequence)
        return self.call("tasks.stream", params, p.SubscribeResult)

    def events_subscribe(self, **filters: Any) -> p.SubscribeResult:
        params = p.EventsSubscribeParams(**filters)
        return self.call("events.subscribe", params, p.SubscribeResult)

    def subscriptions_cancel(self, subscription: str) -> p.EmptyResult:
        params = p.SubscriptionCancelParams(subscription=subscription)
        return self.call("subscriptions.cancel", params, p.EmptyResult)

    def next_event(self, timeout: float | None = None) -> p.StreamEvent:
        """The next ``stream.event`` notification (buffered ones first).

        Raises TimeoutError when none arrives within ``timeout`` seconds, and
        the daemon's error (an ``AghError``) when a subscription ended on one.
        """
        while not self.notifications:
            self._sock.settimeout(timeout)
            try:
                reply = p.reply_decoder.decode(self._read_line())
            finally:
                self._sock.settimeout(self.timeout)
            if reply.method == "stream.event":
                self.notifications.append(reply.params)
        event = msgspec.convert(self.notifications.pop(0), p.StreamEvent)
        if event.type == "error":
            raise AghError.from_wire(event.error)
        return event

    def agent_log(self, run_id: str, claim_token: str, lines: list[Any]) -> p.AgentLogResult:
        params = msgspec.convert(
            {"run_id": run_id, "claim_token": claim_token, "lines": lines}, p.AgentLogParams
        )
        return self.call("agent.log", params, p.AgentLogResult)

    def runs_logs(self, id: str, **filters: Any) -> p.RunsLogsResult:
        return self.call("runs.logs", p.RunsLogsParams(id=id, **filters), p.RunsLogsResult)

    def tasks_send(self, id: str, message: str) -> p.MessageResult:
        return self.call("tasks.send", p.TasksSendParams(id=id, message=message), p.MessageResult)

    def agent_send(
        self, run_id: str, claim_token: str, message: str, kind: str = "status"
    ) -> p.MessageResult:
        params = p.AgentSendParams(
            run_id=run_id,
            claim_token=claim_token,
            message=message,
            kind=kind,  # type: ignore[arg-type]
        )
        return self.call("agent.send", params, p.MessageResult)

    def agent_messages(self, run_id: str, claim_token: str, after: int = 0) -> p.MessagesResult:
        params = p.AgentMessagesParams(run_id=run_id, claim_token=claim_token, after=after)
        return self.call("agent.messages", params, p.MessagesResult)

    # -- runs (operator) ------------------------------------------------------------

    def runs_get(self, id: str) -> p.RunDetailResult:
        return self.call("runs.get", p.IdParams(id=id), p.RunDetailResult)

    def runs_claim(self, id: str, **fields: Any) -> p.RunClaimResult:
        return self.call("runs.claim", p.RunsClaimParams(id=id, **fields), p.RunClaimResult)

    def runs_start(self, id: str, **fields: Any) -> p.RunResult:
        return self.call("runs.start", p.RunsStartParams(id=id, **fields), p.RunResult)

    def runs_attach_session(self, id: str, session_id: str) -> p.RunResult:
        params = p.RunsAttachSessionParams(id=id, session_id=session_id)
        return self.call("runs.attach_session", params, p.RunResult)

    def runs_complete(self, id: str, result: Any = None) -> p.RunResult:
        return self.call("runs.complete", p.RunsCompleteParams(id=id, result=result), p.RunResult)

    def runs_fail(self, id: str, error: str | None = None) -> p.RunResult:
        return self.call("runs.fail", p.RunsFailParams(id=id, error=error), p.RunResult)

    def runs_cancel(self, id: str, reason: str | None = None) -> p.RunResult:
        return self.call("runs.cancel", p.RunsCancelParams(id=id, reason=reason), p.RunResult)

    # -- agent ------------------------------------------------------------------------

    def claim_next(self, **fields: Any) -> p.ClaimNextResult:
        params = p.ClaimNextParams(**fields)
        timeout = long_poll_timeout(self.timeout, params.wait_ms)
        return self.call("agent.claim_next", params, p.ClaimNextResult, timeout=timeout)

    def claim(
        self,
        *,
        channel: str | None = None,
        workspace: str | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
        **filters: Any,
    ) -> contextlib.AbstractContextManager[Work | None]:
        """Claim the next run and hold it for a ``with`` block: heartbeats in
        the background, completes on a normal exit (with ``work.result``),
        fails on an exception, releases on KeyboardInterrupt; ``None`` when
        nothing was claimable within ``wait_ms``. See ``agh.work``."""
        from agh.work import claim

        return claim(
            self,
            channel=channel,
            workspace=workspace,
            lease_ms=lease_ms,
            wait_ms=wait_ms,
            **filters,
        )

    def claims(
        self,
        *,
        channel: str | None = None,
        workspace: str | None = None,
        lease_ms: int | None = None,
        wait_ms: int = 30_000,
        **filters: Any,
    ) -> Generator[contextlib.AbstractContextManager[Work], None, None]:
        """Run after run for a ``for`` loop, each item a ``with`` block like
        ``claim()``'s; each finish claims the next run in the same call (one
        round trip per cycle). See ``agh.work.claims``."""
        from agh.work import claims

        return claims(
            self,
            channel=channel,
            workspace=workspace,
            lease_ms=lease_ms,
            wait_ms=wait_ms,
            **filters,
        )

    def heartbeat(
        self, run_id: str, claim_token: str, lease_ms: int | None = None
    ) -> p.LeaseResult:
        params = p.HeartbeatParams(run_id=run_id, claim_token=claim_token, lease_ms=lease_ms)
        return self.call("agent.heartbeat", params, p.LeaseResult)

    def complete(
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
        return self.call("agent.complete", params, p.FinishResult, timeout=timeout)

    def fail(
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
        return self.call("agent.fail", params, p.FinishResult, timeout=timeout)

    def release(
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
        return self.call("agent.release", params, p.FinishResult, timeout=timeout)

    # -- observability: dashboard, inbox, triage --------------------------------------

    def observe_dashboard(self, **filters: Any) -> p.DashboardResult:
        return self.call("observe.dashboard", p.DashboardParams(**filters), p.DashboardResult)

    def observe_inbox(self, **filters: Any) -> p.InboxResult:
        return self.call("observe.inbox", p.InboxParams(**filters), p.InboxResult)

    def tasks_triage(self, action: str, id: str) -> p.TriageResult:
        """``tasks.triage.<action>`` (read, dismiss, archive or unarchive) on a
        task, for the calling actor."""
        return self.call(f"tasks.triage.{action}", p.IdParams(id=id), p.TriageResult)
