"""``agent.claim_next``, ``agent.heartbeat``, ``agent.complete``,
``agent.fail`` and ``agent.release``: params and results."""

from __future__ import annotations

from typing import Any

from agh.protocol.base import LeaseMs, NonEmpty, Params, Shape, WaitMs
from agh.protocol.enums import OwnerKind, Scope
from agh.protocol.shapes import Claim, Lease


class ClaimNextParams(Params, kw_only=True):
    session_id: str | None = None
    network_channel: str | None = None
    workspace: str | None = None
    scope: Scope | None = None
    owner_kind: OwnerKind | None = None
    owner_ref: str | None = None
    lease_ms: LeaseMs | None = None
    wait_ms: WaitMs = 0
    idempotency_key: NonEmpty | None = None


class HeartbeatParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    lease_ms: LeaseMs | None = None


class AgentCompleteParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    result: Any = None


class AgentFailParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    error: NonEmpty
    retry: bool = True


class AgentReleaseParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    reason: str | None = None


class ClaimNextResult(Shape, kw_only=True):
    claim: Claim | None = None


class LeaseResult(Shape, kw_only=True):
    lease: Lease
