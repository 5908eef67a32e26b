"""The Unix-socket JSON-RPC 2.0 server: framing, envelopes, dispatch.

Owns: accepting connections, the peer-uid check, newline framing with a
maximum line size, JSON-RPC requests/notifications/batches/pipelining, and
turning every failure into the right error reply. It is given a dispatch
callable (``aghd.rpc.Dispatch``: method name and raw params in, result out)
and a callback for each connection that closes. Must not: touch SQL, know
what a method does (handlers do), or see the daemon that built it.

Every request runs in its own task so replies to pipelined requests go out
as each finishes; a per-connection limit on requests in flight makes a
client that never reads its replies stop being read (backpressure) rather
than grow the daemon's memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pwd
import re
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import msgspec
from msgspec import UnsetType

from agh.errors import (
    AghError,
    Busy,
    InternalError,
    InvalidRequest,
    ParseError,
)
from agh.protocol import Request, Response, any_decoder, encoder, request_decoder
from aghd.committer import read_gate
from aghd.rpc import ConnectionState

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from aghd.config import Config
    from aghd.rpc import Dispatch

log = logging.getLogger("aghd.server")

_PEERCRED = struct.Struct("3i")
# A batch runs as one unit (its reply is one line): keep both bounded.
MAX_BATCH = 1000
_NEWLINE = b"\n"


# msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError)

# JSON nested deeper than this is refused before decoding. msgspec recurses
# on the C stack and gives up (RecursionError) near Python's recursion limit,
# which depends on how deep the caller already is; a value accepted here must
# also encode and decode again wherever the daemon later reads it.
MAX_DEPTH = 128
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")
_TOP_ID = re.compile(rb'[{,]\s*"id"\s*:\s*(-?\d+|"[^"\\]*(?:\\.[^"\\]*)*")')


def _error_bytes(req_id: Any, exc: AghError) -> bytes:
    return encoder.encode(Response(id=req_id, error=exc.to_wire())) + _NEWLINE


def too_deep(line: bytes) -> bool:
    """Whether the JSON on ``line`` nests more than MAX_DEPTH arrays/objects.

    Brackets inside strings do not count. Cheap for ordinary requests (two
    counts); a line with many brackets costs one pass over them.
    """
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", line).translate(None, _NOT_BRACKETS):
        if byte in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _salvage_deep_id(line: bytes) -> Any:
    """The top-level id of a request too deep to decode, found as text."""
    for match in _TOP_ID.finditer(line):
        prefix = _JSON_STRING.sub(b"", line[: match.start() + 1])
        if prefix.count(b"{") + prefix.count(b"[") - prefix.count(b"}") - prefix.count(b"]") == 1:
            try:
                rid = any_decoder.decode(match.group(1))
            except _UNDECODABLE:
                return None
            return rid if isinstance(rid, (int, str)) else None
    return None


def _salvage_id(raw: bytes) -> Any:
    """The id of a request that failed validation, if it has a usable one."""
    try:
        obj = any_decoder.decode(raw)
    except (*_UNDECODABLE, RecursionError):
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
            return rid
    return None


class _Connection(asyncio.Protocol):
    """One client connection: framing, backpressure, one task per request.

    A Protocol, not an anyio stream: anyio's per-receive and per-task
    machinery cost ~70% of the daemon's CPU at 16 agents (measured with
    py-spy, docs/PERFORMANCE.md); the rest of the daemon stays on anyio.

    Memory per connection is bounded three ways: requests in flight (count
    and bytes), unsent replies (reading stops above the write buffer's
    high-water mark, and reads wait to start: the connection is the
    committer's ``read_gate``), and time (a connection whose replies stay
    unsent for ``write_stall_timeout_s`` is cut off).
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.state: ConnectionState | None = None
        self.buffer = bytearray()
        # Request tasks in flight -> the size of their request line.
        self.tasks: dict[asyncio.Task[None], int] = {}
        self.inflight_bytes = 0
        self.reading = True
        self.writable = True
        self.lost = False
        self._can_send = asyncio.Event()
        self._can_send.set()
        # Since when replies wait unsent above the high-water mark.
        self.paused_since: float | None = None
        # Looked up once: asyncio.get_running_loop() costs a getpid() system
        # call each time (its fork check), 4% of the daemon at 16 agents.
        self.loop = asyncio.get_running_loop()
        self.last_active = self.loop.time()
        # The latest session.hello in flight: later requests wait for it.
        self.hello: asyncio.Task[None] | None = None
        self.stopped = False  # no more requests will be read

    # -- asyncio callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = tr = cast("asyncio.Transport", transport)
        peer = self.server.peer(tr.get_extra_info("socket"))
        if peer is None:
            tr.abort()
            return
        if not self.server.admit(self):
            return
        self.state = ConnectionState(*peer)
        self.state.write = self._write
        self.state.backlog = tr.get_write_buffer_size

    def data_received(self, data: bytes) -> None:
        if self.stopped or self.state is None:
            return
        self.last_active = self.loop.time()
        self.buffer += data
        self._drain_lines()

    def _admits_more(self) -> bool:
        """Room for one more request in flight (always for the first one)."""
        config = self.server.config
        return not self.tasks or (
            len(self.tasks) < config.max_inflight_per_connection
            and self.inflight_bytes < config.max_inflight_bytes_per_connection
        )

    def _drain_lines(self) -> None:
        """Start requests for complete lines, up to the in-flight limits; the
        rest wait in the buffer (and reading pauses) until requests finish."""
        buf = self.buffer
        max_line = self.server.config.max_line_bytes
        start = 0
        # Not while replies wait unsent: lines already buffered would start
        # (and their replies pile up) although reading the socket stopped.
        while self.writable and self._admits_more() and not self.stopped:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end - start > max_line:
                return self._too_long(max_line)
            line = bytes(buf[start:end])
            start = end + 1
            if line.strip():
                self._spawn(line)
        if start:
            del buf[:start]
        if len(buf) > max_line and buf.find(b"\n") < 0:
            return self._too_long(max_line)
        self._update_reading()

    # -- read_gate (aghd.committer) -----------------------------------------

    def is_open(self) -> bool:
        return self.writable  # False too once the connection is lost

    async def wait_open(self) -> None:
        await self._can_send.wait()
        if self.lost:
            raise Busy("the client closed its connection", {"hint": "nothing to do"})

    def idle(self) -> bool:
        """Nothing in flight and nothing streaming: safe to close."""
        return not self.tasks and (self.state is None or not self.state.subscriptions)

    def eof_received(self) -> bool:
        # Half-closed: the client sends no more, but replies still go out.
        self.stop_reading()
        self._close_when_idle()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_reading()
        self.writable = False
        self.lost = True
        self._can_send.set()  # gated reads wake up and give up
        self.server.connections.discard(self)
        if self.state is not None:
            state = self.state
            task = self.loop.create_task(self.server.on_close(state))
            self.server.background.add(task)
            task.add_done_callback(self.server.background.discard)

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests,
        # and let no read of its start until it does.
        self.writable = False
        self._can_send.clear()
        self.paused_since = self.loop.time()
        self._update_reading()

    def resume_writing(self) -> None:
        self.writable = True
        self._can_send.set()
        self.paused_since = None
        if self.buffer and not self.stopped:
            self._drain_lines()
        else:
            self._update_reading()

    # -- ours -----------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def refuse_buffered(self) -> None:
        """Shutdown: answer complete lines not yet started with ``busy``."""
        lines = bytes(self.buffer).split(b"\n")[:-1]
        self.buffer.clear()
        exc = Busy("aghd is shutting down; retry once it is back", {"hint": "retry later"})
        for line in lines:
            if not line.strip() or _is_notification(line):
                continue  # a notification is never answered, not even with busy
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(_error_bytes(_salvage_id(line), exc))

    def stop_reading(self) -> None:
        """No more requests from this connection (EOF, error or shutdown)."""
        if not self.stopped:
            self.stopped = True
            if self.state is not None:
                self.state.mark_closed()
            self._update_reading()

    def _spawn(self, line: bytes) -> None:
        assert self.state is not None
        self.server.begin()
        task = self.loop.create_task(self._handle(line, self.state, self.hello))
        self.tasks[task] = len(line)
        self.inflight_bytes += len(line)
        task.add_done_callback(self._done)
        if b'"session.hello"' in line:
            # Requests pipelined behind a hello must run as its session.
            self.hello = task

    async def _handle(
        self, line: bytes, state: ConnectionState, hello: asyncio.Task[None] | None
    ) -> None:
        read_gate.set(self)
        if hello is not None and not hello.done():
            await asyncio.wait([hello])
        after_reply: list[Callable[[], None]] = []
        try:
            try:
                reply = await self.server.process(line, state, after_reply)
            except Exception as exc:
                # process() answers every failure it knows; anything else is
                # a bug, and the client still gets a reply, never silence.
                log.exception("request failed outside any method")
                reply = _error_bytes(_salvage_id(line), InternalError.from_exception(exc))
            transport = self.transport
            if reply is not None and transport is not None and not transport.is_closing():
                transport.write(reply)
        finally:
            # Also when the request was cancelled: a subscription made by it
            # then starts, finds its connection gone and ends.
            for callback in after_reply:
                callback()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight_bytes -= self.tasks.pop(task, 0)
        self.last_active = self.loop.time()
        self.server.end()
        if not task.cancelled() and task.exception() is not None:
            log.error("request task failed", exc_info=task.exception())
        if self.buffer and not self.stopped:
            self._drain_lines()
        else:
            self._update_reading()
        if self.stopped:
            self._close_when_idle()

    def _update_reading(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        want = not self.stopped and self.writable and self._admits_more()
        if want and not self.reading:
            self.transport.resume_reading()
        elif not want and self.reading:
            self.transport.pause_reading()
        self.reading = want

    def _too_long(self, max_line: int) -> None:
        self.buffer.clear()
        exc = InvalidRequest(
            f"request line longer than {max_line} bytes; closing the connection",
            {"max_line_bytes": max_line, "hint": "send one JSON value per line"},
        )
        if self.transport is not None:
            self.transport.write(_error_bytes(None, exc))
        self.stop_reading()
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if not self.tasks and self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Server:
    def __init__(
        self,
        config: Config,
        dispatch: Dispatch,
        on_close: Callable[[ConnectionState], Coroutine[Any, Any, None]],
        max_connections: int,
    ) -> None:
        self.config = config
        self.dispatch = dispatch
        # Run (in its own task) once per connection that closes.
        self.on_close = on_close
        self.max_connections = max_connections
        self.inflight = 0
        self.connections: set[_Connection] = set()
        self.background: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.AbstractServer | None = None

    # -- lifecycle ----------------------------------------------------------

    async def serve(self, listener: anyio.abc.SocketListener) -> None:
        """Serve the socket anyio bound (mode 0600, behind our lock) until cancelled."""
        sock: socket.socket = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        loop = asyncio.get_running_loop()
        # A deep accept queue: a burst of clients connecting at once waits
        # there instead of failing connect() with EAGAIN.
        # Python 3.13 would unlink the socket file on close: the file is
        # aghd.app's to remove (ours) or to leave (systemd's, inherited).
        keep: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
        self._server = await loop.create_unix_server(
            lambda: _Connection(self), sock=sock, backlog=socket.SOMAXCONN, **keep
        )
        try:
            while True:
                await anyio.sleep(self._sweep_interval())
                self.sweep(loop.time())
        finally:
            self._server.close()
            # close() (not abort) so replies already written still reach
            # clients that read them; a client that never reads is cut off
            # after a short grace.
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                # Shutdown only, for at most 2 s: a poll is simpler than an
                # event set by the last connection to go.
                while self.connections:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()

    # -- connection limits --------------------------------------------------

    def admit(self, conn: _Connection) -> bool:
        """Take a new connection, or answer it ``busy`` and close it.

        At the limit the connection idle the longest (nothing in flight,
        nothing streaming) is closed to make room, so idle clients cannot
        lock out working ones; with none idle the newcomer is refused.
        """
        if len(self.connections) >= self.max_connections:
            idle = [c for c in self.connections if c.idle()]
            if not idle:
                log.warning("refused a connection: %d open, none idle", len(self.connections))
                refusal = Busy(
                    f"aghd has {len(self.connections)} connections open, its limit, and none "
                    "is idle; retry shortly, or raise it with `aghd --set max_connections=N`",
                    {"max_connections": self.max_connections, "hint": "retry later"},
                )
                assert conn.transport is not None
                conn.transport.write(_error_bytes(None, refusal))
                conn.transport.close()
                return False
            oldest = min(idle, key=lambda c: c.last_active)
            log.info("connection limit reached: closing the longest-idle connection")
            self._close(oldest)
        self.connections.add(conn)
        return True

    def _sweep_interval(self) -> float:
        shortest = min(self.config.idle_timeout_s, self.config.write_stall_timeout_s)
        return min(max(shortest / 4, 0.05), 30.0)

    def sweep(self, now: float) -> None:
        """Close connections idle past ``idle_timeout_s``; cut off those whose
        replies have sat unsent past ``write_stall_timeout_s`` (their buffered
        output is dropped: that is the memory being freed), and those of a
        uid no longer in ``allowed_uids`` (a reload took it out: revoking
        means now, not at its next connection)."""
        for conn in list(self.connections):
            uid = conn.state.peer_uid if conn.state is not None else None
            if uid is not None and not self.allowed(uid):
                log.warning("closing a connection of uid %d: no longer in allowed_uids", uid)
                self._close(conn, drop_output=True)
            elif conn.paused_since is not None and (
                now - conn.paused_since > self.config.write_stall_timeout_s
            ):
                log.warning(
                    "closing a connection that read none of its replies for %.0f s",
                    now - conn.paused_since,
                )
                self._close(conn, drop_output=True)
            elif conn.idle() and now - conn.last_active > self.config.idle_timeout_s:
                log.info("closing a connection idle for %.0f s", now - conn.last_active)
                self._close(conn)

    def _close(self, conn: _Connection, *, drop_output: bool = False) -> None:
        """Stop serving ``conn``: close it after its unsent replies, or at
        once, dropping them (``drop_output``)."""
        self.connections.discard(conn)
        conn.stop_reading()
        if conn.transport is not None:
            if drop_output:
                conn.transport.abort()
            else:
                conn.transport.close()

    def stop_accepting(self) -> None:
        """Close the listener and stop reading new requests on every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.stop_reading()
            conn.refuse_buffered()
            conn._close_when_idle()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def peer(self, sock: socket.socket) -> tuple[int, str] | None:
        """(uid, user name) of the peer, or None if it may not connect."""
        _pid, uid, _gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if not self.allowed(uid):
            log.warning("refused connection from uid %d (not in allowed_uids)", uid)
            return None
        return uid, _user_name(uid)

    def allowed(self, uid: int) -> bool:
        """Whether ``uid`` may be served: ours, or one of ``allowed_uids``
        (read now: a reload may change them)."""
        return uid == os.getuid() or uid in self.config.allowed_uids

    def begin(self) -> None:
        if self.inflight == 0:
            self._idle.clear()
        self.inflight += 1

    def end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def process(
        self, line: bytes, state: ConnectionState, after_reply: list[Callable[[], None]]
    ) -> bytes | None:
        """One line in, the reply line out (None: nothing to send). The
        caller writes the reply, then runs what the calls put in
        ``after_reply``."""
        if too_deep(line):
            deep = InvalidRequest(
                f"JSON nested more than {MAX_DEPTH} levels deep",
                {"max_depth": MAX_DEPTH, "hint": "flatten the request's values"},
            )
            return _error_bytes(_salvage_deep_id(line), deep)
        if line.lstrip()[:1] == b"[":
            return await self._batch(line, state, after_reply)
        return await self._single(line, state, after_reply)

    # -- JSON-RPC -----------------------------------------------------------

    async def _single(
        self, raw: bytes, state: ConnectionState, after_reply: list[Callable[[], None]]
    ) -> bytes | None:
        try:
            req = request_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return _error_bytes(_salvage_id(raw), _invalid_request(exc))
        except _UNDECODABLE as exc:
            return _error_bytes(None, _parse_error(exc))
        return await self._call(req, state, after_reply)

    async def _batch(
        self, raw: bytes, state: ConnectionState, after_reply: list[Callable[[], None]]
    ) -> bytes | None:
        try:
            items = msgspec.json.decode(raw, type=list[msgspec.Raw])
        except _UNDECODABLE as exc:
            return _error_bytes(None, _parse_error(exc))
        if not items:
            empty = InvalidRequest("empty batch", {"hint": "send at least one request"})
            return _error_bytes(None, empty)
        if len(items) > MAX_BATCH:
            big = InvalidRequest(
                f"batch of {len(items)} requests; at most {MAX_BATCH} per batch",
                {"max_batch": MAX_BATCH, "hint": "split the batch, or pipeline single requests"},
            )
            return _error_bytes(None, big)
        replies: list[bytes | None] = [None] * len(items)

        async def one(i: int, item: msgspec.Raw) -> None:
            try:
                req = request_decoder.decode(item)
            except msgspec.ValidationError as exc:
                replies[i] = _error_bytes(_salvage_id(item), _invalid_request(exc))
                return
            replies[i] = await self._call(req, state, after_reply)

        async with anyio.create_task_group() as tg:
            for i, item in enumerate(items):
                tg.start_soon(one, i, item)
        present = [r[:-1] for r in replies if r is not None]
        if not present:
            return None
        return b"[" + b",".join(present) + b"]\n"

    async def _call(
        self, req: Request, state: ConnectionState, after_reply: list[Callable[[], None]]
    ) -> bytes | None:
        if req.jsonrpc != "2.0":
            # Not a valid request, so not a notification either: always answered.
            bad = InvalidRequest(
                'jsonrpc must be "2.0"', {"field": "$.jsonrpc", "hint": 'send "jsonrpc":"2.0"'}
            )
            return _error_bytes(None if isinstance(req.id, UnsetType) else req.id, bad)
        notification = isinstance(req.id, UnsetType)
        rid = None if isinstance(req.id, UnsetType) else req.id
        try:
            result = await self.dispatch(req.method, req.params, state, after_reply)
            if notification:
                return None
            return encoder.encode(Response(id=rid, result=result)) + _NEWLINE
        except AghError as exc:
            return None if notification else _error_bytes(rid, exc)
        except Exception as exc:
            log.exception("method %s failed", req.method)
            err = InternalError.from_exception(exc)
            return None if notification else _error_bytes(rid, err)


def _is_notification(raw: bytes) -> bool:
    try:
        obj = any_decoder.decode(raw)
    except _UNDECODABLE:
        return False
    return isinstance(obj, dict) and "id" not in obj


@functools.lru_cache(maxsize=64)
def _user_name(uid: int) -> str:
    # Cached: getpwuid may ask NSS (LDAP, sssd) and must not block the loop
    # on every connection.
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _parse_error(exc: Exception) -> ParseError:
    return ParseError(f"parse error: {exc}", {"hint": "send one valid JSON value per line"})


def _invalid_request(exc: msgspec.ValidationError) -> InvalidRequest:
    return InvalidRequest(
        f"invalid JSON-RPC request: {exc}",
        {"reason": str(exc), "hint": 'send {"jsonrpc":"2.0","method":...,"params":{...},"id":...}'},
    )
