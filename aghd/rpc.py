"""The method registry, the per-call context handed to handlers, and the
dispatch the server calls.

Handlers register with ``@method("tasks.get", IdParams)``. For each request
the server calls ``Dispatcher(name, raw_params, conn, after_reply)``, which
looks the method up, decodes its params with the registered struct
(strict), and calls ``handler(ctx, params)``; the server encodes the result
and owns the JSON-RPC envelope. The server knows nothing of handlers or
services, and handlers nothing of the server.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

from agh.errors import AghError, InvalidParams, MethodNotFound
from agh.protocol import Params
from aghd.logs import redact
from aghd.store.db import Caller

if TYPE_CHECKING:
    from aghd.config import Config
    from aghd.services import Services, SessionRegistry, Store
    from aghd.streams import Hub

P = TypeVar("P", bound=Params)
Handler = Callable[["Context", Any], Awaitable[Any]]


class ConnectionState:
    """What a connection has told us about itself (hello), and its peer."""

    __slots__ = (
        "backlog",
        "caller",
        "closed",
        "peer_uid",
        "session_id",
        "subscriptions",
        "user",
        "write",
    )

    def __init__(self, peer_uid: int, user: str) -> None:
        self.peer_uid = peer_uid
        self.user = user
        self.caller = Caller("human", user, "uds")
        self.session_id: str | None = None
        # Set when the peer will send no more requests (EOF or shutdown).
        self.closed = anyio.Event()
        # Set by the server: write a line to the peer outside a reply (stream
        # notifications), and how many bytes wait unsent in its buffer.
        self.write: Callable[[bytes], None] | None = None
        self.backlog: Callable[[], int] | None = None
        # Ids of this connection's live subscriptions (kept by the stream hub).
        self.subscriptions: set[str] = set()

    def mark_closed(self) -> None:
        self.closed.set()


@dataclass(slots=True)
class Context:
    """One call: the daemon's services, the calling connection, and what to
    run once the reply is written."""

    services: Services
    conn: ConnectionState
    # Called once the reply line carrying this call's result (its batch's,
    # for a batch) has been written: a subscription starts streaming then,
    # so no notification can reach the client before the subscription id.
    after_reply: list[Callable[[], None]] = field(default_factory=list)

    @property
    def caller(self) -> Caller:
        return self.conn.caller

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def sessions(self) -> SessionRegistry:
        return self.services.sessions

    @property
    def streams(self) -> Hub:
        return self.services.streams


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    decoder: msgspec.json.Decoder[Any]


REGISTRY: dict[str, Method] = {}


H = TypeVar("H", bound=Handler)


def method(name: str, params_type: type[P]) -> Callable[[H], H]:
    """Register ``handler`` as the implementation of JSON-RPC method ``name``;
    the handler keeps its own type, so a handler calling another stays typed."""

    def register(handler: H) -> H:
        if name in REGISTRY:
            raise RuntimeError(f"method {name} registered twice")
        REGISTRY[name] = Method(name, handler, msgspec.json.Decoder(params_type))
        return handler

    return register


log = logging.getLogger("aghd.rpc")

_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def decode_params(m: Method, raw: bytes) -> Any:
    """Decode params strictly; a bad value names its field path under ``$.params``."""
    try:
        return m.decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        path = "$.params" + (match.group(1) if match else "")
        unknown = _UNKNOWN.search(text)
        if unknown:  # msgspec reports the object's path; name the field itself
            path += "." + unknown.group(1)
        message = _PATH.sub("", text)
        raise InvalidParams(
            f"invalid params for {m.name}: {message} (at {path})",
            {"field": path, "reason": message, "hint": f"see `man agh-protocol` for {m.name}"},
        ) from None
    except msgspec.DecodeError as exc:  # pragma: no cover - the envelope was valid JSON
        raise InvalidParams(f"invalid params for {m.name}: {exc}", {"field": "$.params"}) from None


class Dispatcher:
    """The server's one entry into the methods: name and raw params in, the
    result struct out (or an AghError raised)."""

    __slots__ = ("services",)

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(
        self,
        name: str,
        raw_params: bytes,
        conn: ConnectionState,
        after_reply: list[Callable[[], None]],
    ) -> Any:
        m = REGISTRY.get(name)
        if m is None:
            raise MethodNotFound(
                f"method {name!r} not found",
                {"method": name, "hint": "see `man agh-protocol` for the method list"},
            )
        params = decode_params(m, raw_params)
        if not log.isEnabledFor(logging.DEBUG):
            return await m.handler(Context(self.services, conn, after_reply), params)
        # At DEBUG, every request with its params and outcome (aghd/logs.py
        # redacts the claim tokens among them).
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await m.handler(Context(self.services, conn, after_reply), params)
        except AghError as exc:
            outcome = f"error {exc.kind}: {exc.message}"
            raise
        except BaseException as exc:  # a bug, or the request cancelled
            outcome = f"{type(exc).__name__}"
            raise
        finally:
            log.debug(
                "%s by %s (session %s) in %.1f ms: %s; params %s",
                name,
                conn.user,
                conn.session_id,
                (time.perf_counter() - started) * 1000,
                outcome,
                # Redacted before it is cut: no token's first characters.
                redact(bytes(raw_params).decode("utf-8", "replace"))[:300],
            )


# What the server calls for each request (a Dispatcher, or anything alike).
Dispatch = Callable[[str, bytes, ConnectionState, list[Callable[[], None]]], Awaitable[Any]]
