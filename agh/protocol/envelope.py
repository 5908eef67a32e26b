"""The JSON-RPC 2.0 envelope: requests, responses, what a client reads,
and the shared encoder and decoders."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

# JSON-RPC ids: strings or numbers (a fractional one is discouraged but legal).
RequestId = int | float | str | None


class Request(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One JSON-RPC 2.0 request; ``id`` UNSET means a notification."""

    jsonrpc: str
    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")
    id: RequestId | UnsetType = UNSET


class Response(Struct):
    """Reply envelope; exactly one of result/error is set (UNSET is never encoded)."""

    jsonrpc: str = "2.0"
    id: RequestId = None
    result: Any = UNSET
    error: Any = UNSET


class Reply(Struct):
    """What a client reads: a response (result/error) or a notification
    (method/params, e.g. stream events); ``result`` stays raw so the caller
    decodes it into the method's result type."""

    jsonrpc: str = "2.0"
    id: RequestId = None
    result: msgspec.Raw | UnsetType = UNSET
    error: Any = UNSET
    method: str | UnsetType = UNSET
    params: Any = UNSET


encoder = msgspec.json.Encoder()


request_decoder = msgspec.json.Decoder(Request)


any_decoder = msgspec.json.Decoder()


reply_decoder = msgspec.json.Decoder(Reply)
