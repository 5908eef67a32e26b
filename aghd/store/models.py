"""The store's data classes and status sets.

Owns: the shapes its layers hand each other and the handlers (a task to
create, a started task, filters, a claim, a tree node, the retry backoff)
and the status groups every layer tests against (CLOSED, WAITING, ACTIVE).
Must not: read or write the database, or import another store module:
every layer builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agh.protocol import ACTIVE_RUN_STATUSES

if TYPE_CHECKING:
    import sqlite3

# A task in one of these states is finished (its dependents stop waiting).
CLOSED = ("completed", "failed", "canceled")
# A task in one of these states has no open run and has not closed: it is
# the only kind ``progress.refresh`` re-examines.
WAITING = ("pending", "blocked")
# A run in one of these states is held by a claim (it has a lease).
ACTIVE = ACTIVE_RUN_STATUSES

# What a claim reply shows of the task (views.task_summary): returning only
# these from the claim's UPDATE saves building a ~40-column row per claim.
TASK_SUMMARY_COLUMNS = (
    "id, identifier, owner_kind, owner_ref, priority, scope, status, title, workspace_id"
)


# -- tasks ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to create; defaults are those of ``tasks.create``."""

    title: str
    owner_kind: str
    owner_ref: str | None
    origin_kind: str
    origin_ref: str | None = None
    description: str | None = None
    scope: str | None = None
    workspace: str | None = None
    priority: str = "medium"
    network_channel: str | None = None
    max_attempts: int = 1
    metadata: Any = None
    draft: bool = False
    approval_policy: str = "none"
    parent_task_id: str | None = None
    idempotency_key: str | None = None
    depends_on: tuple[str, ...] = ()
    # Workflow tasks (see store/workflows.py): the container kind, the
    # workflow and step they belong to, and the step's definition (JSON).
    kind: str = "task"
    workflow_id: str | None = None
    step_id: str | None = None
    step_spec: str | None = None


@dataclass(slots=True)
class Started:
    task: sqlite3.Row
    run: sqlite3.Row | None


@dataclass(frozen=True, slots=True)
class TaskFilters:
    scope: str | None = None
    workspace: str | None = None
    status: str | None = None
    priority: str | None = None
    include_drafts: bool = False
    approval_state: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None
    parent_task_id: str | None = None
    network_channel: str | None = None
    query: str | None = None


@dataclass(slots=True)
class ListItemParts:
    task: sqlite3.Row
    active_run: sqlite3.Row | None
    child_count: int
    dependencies: list[sqlite3.Row]


@dataclass(slots=True)
class DetailParts:
    item: ListItemParts
    runs: list[sqlite3.Row]
    events: list[sqlite3.Row]
    children: list[ListItemParts]


@dataclass(slots=True)
class TreeNode:
    task: sqlite3.Row
    depth: int
    active_run: sqlite3.Row | None
    child_count: int


# -- the graph --------------------------------------------------------------


@dataclass(slots=True)
class Blocking:
    """Why a task cannot run now (``reason`` None: it can), and whether a
    skipped dependency means it must be skipped too."""

    reason: str | None
    skip: bool = False


# -- runs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimFilters:
    network_channel: str | None = None
    # A workspace path, key, name or id; one that does not exist matches nothing.
    workspace: str | None = None
    scope: str | None = None
    owner_kind: str | None = None
    owner_ref: str | None = None


@dataclass(frozen=True, slots=True)
class NextClaim:
    """The claim a finish makes for the same session (PROTOCOL §6, one round
    trip per cycle): ``agent.claim_next``'s filters and lease, a fresh token."""

    filters: ClaimFilters
    lease_ms: int
    token_hash: str
    max_claims_per_session: int


@dataclass(slots=True)
class Claimed:
    run: sqlite3.Row
    # The task's TASK_SUMMARY_COLUMNS (what the claim reply shows).
    task: sqlite3.Row
    claim_id: int


@dataclass(slots=True)
class Backoff:
    base_ms: int
    cap_ms: int

    def delay(self, attempt: int) -> int:
        return int(min(self.cap_ms, self.base_ms * (2 ** max(0, attempt - 1))))
