"""``agent.claim_next``, ``agent.heartbeat``, ``agent.complete``,
``agent.fail`` and ``agent.release``: params and results."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET, UnsetType

from agh.protocol.base import LeaseMs, NonEmpty, Params, Shape, WaitMs
from agh.protocol.enums import OwnerKind, Scope
from agh.protocol.shapes import Claim, Lease


class NextClaimParams(Params, kw_only=True):
    """What to claim: ``agent.claim_next``'s params, and the ``next`` of a
    finish (which claims for the finished claim's own session, and is made
    idempotent by the finish itself)."""

    network_channel: str | None = None
    workspace: str | None = None
    scope: Scope | None = None
    owner_kind: OwnerKind | None = None
    owner_ref: str | None = None
    lease_ms: LeaseMs | None = None
    wait_ms: WaitMs = 0


class ClaimNextParams(NextClaimParams, kw_only=True):
    session_id: str | None = None
    idempotency_key: NonEmpty | None = None


class HeartbeatParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    lease_ms: LeaseMs | None = None


class AgentCompleteParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    result: Any = None
    next: NextClaimParams | None = None


class AgentFailParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    error: NonEmpty
    retry: bool = True
    next: NextClaimParams | None = None


class AgentReleaseParams(Params, kw_only=True):
    run_id: NonEmpty
    claim_token: NonEmpty
    reason: str | None = None
    next: NextClaimParams | None = None


class ClaimNextResult(Shape, kw_only=True):
    claim: Claim | None = None


class LeaseResult(Shape, kw_only=True):
    lease: Lease


class FinishResult(Shape, kw_only=True):
    """``agent.complete``, ``agent.fail`` and ``agent.release``: the finished
    run's lease, and — only when the call asked for one with ``next`` — the
    next claim (null when nothing was claimable within its ``wait_ms``).
    The one shape whose field may be absent: a finish without ``next``
    replies exactly as before."""

    lease: Lease
    next: Claim | UnsetType | None = UNSET
