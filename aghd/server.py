"""The Unix-socket JSON-RPC 2.0 server: framing, envelopes, dispatch.

Owns: accepting connections, the peer-uid check, newline framing with a
maximum line size, JSON-RPC requests/notifications/batches/pipelining, and
turning every failure into the right error reply. Must not: touch SQL or
know what a method does (handlers do).

Every request runs in its own task so replies to pipelined requests go out
as each finishes; a per-connection limit on requests in flight makes a
client that never reads its replies stop being read (backpressure) rather
than grow the daemon's memory.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import struct
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from agh.errors import AghError, InternalError, InvalidRequest, MethodNotFound, ParseError
from agh.protocol import UNSET, Request, Response, any_decoder, encoder, request_decoder
from aghd.rpc import REGISTRY, ConnectionState, Context, decode_params

if TYPE_CHECKING:
    from aghd.app import Daemon

log = logging.getLogger("aghd.server")

_PEERCRED = struct.Struct("3i")
_NEWLINE = b"\n"


def _error_bytes(req_id: Any, exc: AghError) -> bytes:
    return encoder.encode(Response(id=req_id, error=exc.to_wire())) + _NEWLINE


def _salvage_id(raw: bytes) -> Any:
    """The id of a request that failed validation, if it has a usable one."""
    try:
        obj = any_decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
            return rid
    return None


class Server:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config
        self.inflight = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._accepting: anyio.CancelScope | None = None
        self._readers: set[anyio.CancelScope] = set()

    # -- lifecycle ----------------------------------------------------------

    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as self._accepting:
                async with listener:
                    await listener.serve(self._connection, task_group=tg)

    def stop_accepting(self) -> None:
        """Close the listener and stop reading new requests on every connection."""
        if self._accepting is not None:
            self._accepting.cancel()
        for scope in list(self._readers):
            scope.cancel()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # -- one connection -----------------------------------------------------

    def _peer(self, stream: anyio.abc.SocketStream) -> tuple[int, str] | None:
        sock: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        _pid, uid, _gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid != os.getuid() and uid not in self.config.allowed_uids:
            log.warning("refused connection from uid %d (not in allowed_uids)", uid)
            return None
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return uid, user

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        peer = self._peer(stream)
        if peer is None:
            await stream.aclose()
            return
        state = ConnectionState(*peer)
        lock = anyio.Lock()
        limiter = anyio.Semaphore(self.config.max_inflight_per_connection)

        async def send(data: bytes) -> None:
            async with lock:
                await stream.send(data)

        state.send = send
        reader = anyio.CancelScope()
        self._readers.add(reader)
        try:
            async with anyio.create_task_group() as requests:
                with reader:
                    await self._read_loop(stream, state, send, limiter, requests)
                self._readers.discard(reader)
                # No more requests will come: long-polls on this connection end.
                state.mark_closed()
        finally:
            self._readers.discard(reader)
            state.mark_closed()
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                await self.daemon.connection_gone(state)

    async def _read_loop(
        self,
        stream: anyio.abc.SocketStream,
        state: ConnectionState,
        send: Any,
        limiter: anyio.Semaphore,
        requests: anyio.abc.TaskGroup,
    ) -> None:
        buffered = BufferedByteReceiveStream(stream)
        max_line = self.config.max_line_bytes
        while True:
            try:
                line = await buffered.receive_until(_NEWLINE, max_line)
            except anyio.DelimiterNotFound:
                exc = InvalidRequest(
                    f"request line longer than {max_line} bytes; closing the connection",
                    {"max_line_bytes": max_line, "hint": "send one JSON value per line"},
                )
                try:
                    await send(_error_bytes(None, exc))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                return
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                ConnectionError,
            ):
                return
            if not line.strip():
                continue
            await limiter.acquire()
            self._begin()
            requests.start_soon(self._handle_line, line, state, send, limiter)

    def _begin(self) -> None:
        if self.inflight == 0:
            self._idle = anyio.Event()
        self.inflight += 1

    def _end(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    # -- JSON-RPC -----------------------------------------------------------

    async def _handle_line(
        self, line: bytes, state: ConnectionState, send: Any, limiter: anyio.Semaphore
    ) -> None:
        try:
            if line.lstrip()[:1] == b"[":
                reply = await self._batch(line, state)
            else:
                reply = await self._single(line, state)
            if reply is not None:
                try:
                    await send(reply)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                    pass  # the client left; its writes are committed all the same
        finally:
            limiter.release()
            self._end()

    async def _single(self, raw: bytes, state: ConnectionState) -> bytes | None:
        try:
            req = request_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            return _error_bytes(_salvage_id(raw), _invalid_request(exc))
        except msgspec.DecodeError as exc:
            return _error_bytes(None, ParseError(f"parse error: {exc}", {"hint": "send valid JSON"}))
        return await self._call(req, state)

    async def _batch(self, raw: bytes, state: ConnectionState) -> bytes | None:
        try:
            items = msgspec.json.decode(raw, type=list[msgspec.Raw])
        except msgspec.DecodeError as exc:
            return _error_bytes(None, ParseError(f"parse error: {exc}", {"hint": "send valid JSON"}))
        if not items:
            return _error_bytes(None, InvalidRequest("empty batch", {"hint": "send at least one request"}))
        replies: list[bytes | None] = [None] * len(items)

        async def one(i: int, item: msgspec.Raw) -> None:
            try:
                req = request_decoder.decode(item)
            except msgspec.ValidationError as exc:
                replies[i] = _error_bytes(_salvage_id(item), _invalid_request(exc))
                return
            replies[i] = await self._call(req, state)

        async with anyio.create_task_group() as tg:
            for i, item in enumerate(items):
                tg.start_soon(one, i, item)
        present = [r[:-1] for r in replies if r is not None]
        if not present:
            return None
        return b"[" + b",".join(present) + b"]\n"

    async def _call(self, req: Request, state: ConnectionState) -> bytes | None:
        notification = req.id is UNSET
        rid = None if notification else req.id
        try:
            if req.jsonrpc != "2.0":
                raise InvalidRequest(
                    'jsonrpc must be "2.0"', {"field": "$.jsonrpc", "hint": 'send "jsonrpc":"2.0"'}
                )
            m = REGISTRY.get(req.method)
            if m is None:
                raise MethodNotFound(
                    f"method {req.method!r} not found",
                    {"method": req.method, "hint": "see `man agh-protocol` for the method list"},
                )
            params = decode_params(m, req.params)
            result = await m.handler(Context(self.daemon, state), params)
        except AghError as exc:
            return None if notification else _error_bytes(rid, exc)
        except Exception as exc:
            log.exception("method %s failed", req.method)
            err = InternalError(
                f"internal error in aghd: {type(exc).__name__}: {exc}; this is a bug, please report it",
                {"exception": type(exc).__name__},
            )
            return None if notification else _error_bytes(rid, err)
        if notification:
            return None
        return encoder.encode(Response(id=rid, result=result)) + _NEWLINE


def _invalid_request(exc: msgspec.ValidationError) -> InvalidRequest:
    return InvalidRequest(
        f"invalid JSON-RPC request: {exc}",
        {"reason": str(exc), "hint": 'send {"jsonrpc":"2.0","method":...,"params":{...},"id":...}'},
    )
