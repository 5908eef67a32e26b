"""``runs.*`` (an operator's actions on one run): params and results."""

from __future__ import annotations

from typing import Any

from agh.protocol.base import LeaseMs, NonEmpty, Params, Shape
from agh.protocol.shapes import Lease, Run, RunDetail


class RunsClaimParams(Params, kw_only=True):
    id: NonEmpty
    idempotency_key: NonEmpty | None = None
    session_id: str | None = None
    lease_ms: LeaseMs | None = None


class RunsStartParams(Params, kw_only=True):
    id: NonEmpty
    idempotency_key: NonEmpty | None = None


class RunsAttachSessionParams(Params, kw_only=True):
    id: NonEmpty
    session_id: NonEmpty


class RunsCompleteParams(Params, kw_only=True):
    id: NonEmpty
    result: Any = None


class RunsFailParams(Params, kw_only=True):
    id: NonEmpty
    error: str | None = None


class RunsCancelParams(Params, kw_only=True):
    id: NonEmpty
    reason: str | None = None


class RunResult(Shape, kw_only=True):
    run: Run


class RunDetailResult(Shape, kw_only=True):
    run: RunDetail


class RunClaimResult(Shape, kw_only=True):
    run: Run
    claim_token: str
    lease: Lease
