"""The one error hierarchy shared by daemon and client.

Every error that crosses the socket is an ``AghError`` subclass with a fixed
JSON-RPC ``code`` and ``data.kind``. The daemon raises them; ``to_wire`` turns
them into the JSON-RPC error object; the client's ``from_wire`` turns that
object back into the same class, so callers on both sides catch the same
types. This module imports only the standard library: the client must stay
light.
"""

from __future__ import annotations

from typing import Any


class AghError(Exception):
    """Base of every agh error. ``details`` is a JSON-able dict for ``error.data``."""

    code: int = -32603
    kind: str = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_wire(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member for this exception."""
        return {
            "code": self.code,
            "message": self.message,
            "data": {"kind": self.kind, "details": self.details},
        }

    @staticmethod
    def from_wire(error: Any) -> AghError:
        """Rebuild the typed exception from a JSON-RPC ``error`` member.

        Unknown codes become a plain ``AghError`` carrying the code, so a newer
        daemon never crashes an older client.
        """
        if not isinstance(error, dict):
            return ProtocolError(f"malformed error object from daemon: {error!r}")
        code = error.get("code")
        message = str(error.get("message", ""))
        data = error.get("data")
        details = data.get("details") if isinstance(data, dict) else None
        cls = _BY_CODE.get(code) if isinstance(code, int) else None
        if cls is None:
            exc = AghError(message, details if isinstance(details, dict) else None)
            if isinstance(code, int):
                exc.code = code
            if isinstance(data, dict) and isinstance(data.get("kind"), str):
                exc.kind = data["kind"]
            return exc
        return cls(message, details if isinstance(details, dict) else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.details!r})"


# -- JSON-RPC 2.0 standard errors ------------------------------------------


class ParseError(AghError):
    code = -32700
    kind = "parse_error"


class InvalidRequest(AghError):
    code = -32600
    kind = "invalid_request"


class MethodNotFound(AghError):
    code = -32601
    kind = "method_not_found"


class InvalidParams(AghError):
    code = -32602
    kind = "invalid_params"


class InternalError(AghError):
    code = -32603
    kind = "internal"

    @classmethod
    def from_exception(cls, exc: BaseException) -> InternalError:
        """Wrap an unexpected exception (a bug) for the wire."""
        return cls(
            f"internal error in aghd: {type(exc).__name__}: {exc}; this is a bug, please report it",
            {"exception": type(exc).__name__},
        )


# -- application errors (PROTOCOL.md §2) ------------------------------------


class NotFound(AghError):
    code = -32004
    kind = "not_found"


class Forbidden(AghError):
    code = -32003
    kind = "forbidden"


class Conflict(AghError):
    code = -32009
    kind = "conflict"


class LeaseLost(AghError):
    code = -32010
    kind = "lease_lost"


class Busy(AghError):
    code = -32029
    kind = "busy"


# -- client-side only (never on the wire) ----------------------------------


class ProtocolError(AghError):
    """The daemon sent something that is not valid JSON-RPC."""

    kind = "protocol"


class DaemonUnreachable(AghError):
    """No daemon answers on the socket; the CLI exits with a distinct code."""

    kind = "unreachable"


class ConfigError(AghError):
    """A configuration file that cannot be used: ``details`` name the file
    and, where one is at fault, the key and its line."""

    kind = "config"


WIRE_ERRORS: tuple[type[AghError], ...] = (
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InternalError,
    NotFound,
    Forbidden,
    Conflict,
    LeaseLost,
    Busy,
)

_BY_CODE: dict[int, type[AghError]] = {cls.code: cls for cls in WIRE_ERRORS}
