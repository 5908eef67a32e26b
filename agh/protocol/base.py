"""What every wire type builds on: the strict ``Params`` and the complete
``Shape`` base classes, and the bounded values several params use. Every
integer a client sends has an upper bound: SQLite stores 64-bit integers,
so anything larger must fail decoding (-32602 naming the field), not deep
in the store (a test walks every params struct to keep this true)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

# Bounded values used by several params. Every integer a client sends has an
# upper bound: SQLite stores 64-bit integers, so anything larger must fail
# decoding (-32602 naming the field), not deep in the store (a test walks
# every params struct to keep this true).
INT64_MAX = 2**63 - 1


Int64 = Annotated[int, Meta(ge=-(2**63), le=INT64_MAX)]


Limit = Annotated[int, Meta(ge=1, le=1000)]


LeaseMs = Annotated[int, Meta(ge=1000, le=86_400_000)]


WaitMs = Annotated[int, Meta(ge=0, le=60_000)]


NonEmpty = Annotated[str, Meta(min_length=1, max_length=4096)]


Title = Annotated[str, Meta(min_length=1, max_length=1000)]


MaxAttempts = Annotated[int, Meta(ge=1, le=1000)]


class Params(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Base of every params struct: strict, keyword-only."""


class Shape(Struct, kw_only=True):
    """Base of every result shape: all fields always present."""


class EmptyParams(Params, kw_only=True):
    pass


class IdParams(Params, kw_only=True):
    id: NonEmpty


class EmptyResult(Shape, kw_only=True):
    pass


SeqNo = Annotated[int, Meta(ge=0, le=INT64_MAX)]
